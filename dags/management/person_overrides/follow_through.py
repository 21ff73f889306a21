"""After the squash: what was computed or copied from the old ids, done again for the changed teams and days.

The web analytics pre-aggregates count persons (`uniq(person_id)`, a session's person): the days that held
changed rows (and their sessions' start days) are recomputed for the changed teams, through the deletion's
staging + `REPLACE PARTITION` path. The exports of those days that already exist are written again through
the exports' publish path, and so are the batch exports of those teams that hold `person_id` (and their
pre-aggregate copies). Each changed asset partition gets a materialization with `reason: person overrides
squash` and the run. Each op sits in the pool of what it rewrites.
"""

from collections.abc import Sequence

from dagster import In, MetadataValue, OpDefinition, OpExecutionContext, Out, Output, op

from dags.common import ClickHouseResource
from dags.exports.datasets import EVENTS_DATASET, WEB_BOUNCES_DATASET, WEB_STATS_DATASET, ExportDataset
from dags.exports.resource import ExportDestination
from dags.management.deletion.changes import (
    Cause,
    record_recomputed_days,
    record_rewritten_files,
    record_rewritten_intervals,
)
from dags.management.deletion.copies import BatchCopy, batch_copies, place_of
from dags.management.deletion.copy_rewrite import rewrite_copy
from dags.management.deletion.ops import (
    DELETION_POOL,
    EXPORT_POOLS,
    OWNER,
    WEB_ANALYTICS_POOL,
    log_to,
    retried_when_transient,
)
from dags.management.deletion.plan import exported_files
from dags.management.deletion.recompute import recompute_days, unique_persons_of_days
from dags.management.deletion.rewrite import rewrite_files
from dags.management.person_overrides.plan import SquashRun

OP_TAGS = OWNER.tags()
SQUASH = Cause(
    reason="person overrides squash",
    by="a person overrides squash",
    effect="merged persons' events now carry their new person_id",
    run_key="squash_run",
)


def squashed_copies(team_ids: Sequence[int]) -> list[BatchCopy]:
    """The batch exports of these teams a squash changes: events copies with `person_id`, and pre-aggregate
    copies (their person counts change); an events copy without `person_id` holds nothing that changed."""
    return [copy for copy in batch_copies(team_ids) if copy.holds_persons or copy.dataset.name != EVENTS_DATASET.name]


def planned_batch_places(copies: Sequence[BatchCopy], squash: SquashRun) -> list[str]:
    """Every interval of `copies` that the squash's days reach (only intervals already exported)."""
    places: list[str] = []
    for copy in copies:
        destination = copy.resource.open()
        for window in copy.intervals(destination, copy.days(squash.event_days, squash.pre_aggregate_days)):
            places.append(place_of(copy, destination, window))
    return places


@op(
    ins={"squash": In(SquashRun)},
    out={"squash": Out(SquashRun), "days_recomputed": Out(list)},
    pool=WEB_ANALYTICS_POOL,
    tags=OP_TAGS,
    description="Recompute both web analytics pre-aggregates for the changed teams and days (ever pre-aggregated).",
)
def recompute_squashed_days(context: OpExecutionContext, clickhouse: ClickHouseResource, squash: SquashRun):  # noqa: ANN201
    days = list(squash.pre_aggregate_days)
    written: dict = {}
    persons: dict = {}
    if days:
        with retried_when_transient(), clickhouse.get_client(context) as client:
            written = recompute_days(client, days, list(squash.teams), context.run.run_id, log_to(context))
            persons = unique_persons_of_days(client, days)
    record_recomputed_days(context, written, SQUASH, persons)
    yield Output(squash, "squash")
    yield Output(
        [day.isoformat() for day in days],
        "days_recomputed",
        metadata={
            "days_recomputed": MetadataValue.json([day.isoformat() for day in days]),
            "rows_written_by_table_and_day": MetadataValue.json(written),
        },
    )


def rewrite_op(dataset: ExportDataset) -> OpDefinition:
    """The op that rewrites one dataset's exported files of the changed days, in that dataset's export pool."""

    @op(
        name=f"rewrite_squashed_{dataset.name}_exports",
        ins={"squash": In(SquashRun), "days_recomputed": In(list)},
        pool=EXPORT_POOLS[dataset.name],
        tags=OP_TAGS,
        description=f"Rewrite the exported {dataset.name} files of the changed days (only days already exported).",
    )
    def rewrite(
        context: OpExecutionContext,
        clickhouse: ClickHouseResource,
        export_destination: ExportDestination,
        squash: SquashRun,
        days_recomputed: list[str],
    ) -> Output:
        with retried_when_transient(exports=True):
            destination = export_destination.open()
            files = exported_files(destination, squash.event_days, squash.pre_aggregate_days).of(dataset)
            urls = rewrite_files(
                clickhouse, context, export_destination, destination, files, context.run.run_id, log_to(context)
            )
        record_rewritten_files(
            context, dataset, [(file.day, url) for file, url in zip(files, urls, strict=True)], SQUASH
        )
        return Output(urls, metadata={"files_rewritten": MetadataValue.json(urls), "destination": destination.url})

    return rewrite


rewrite_squashed_events_exports = rewrite_op(EVENTS_DATASET)
rewrite_squashed_web_pre_aggregated_stats_exports = rewrite_op(WEB_STATS_DATASET)
rewrite_squashed_web_pre_aggregated_bounces_exports = rewrite_op(WEB_BOUNCES_DATASET)


@op(
    ins={"squash": In(SquashRun), "days_recomputed": In(list)},
    pool=DELETION_POOL,
    tags=OP_TAGS,
    description="Rewrite the changed days of the changed teams' batch exports that hold person_id (and their "
    "pre-aggregate copies); only intervals already exported.",
)
def rewrite_squashed_batch_exports(
    context: OpExecutionContext, clickhouse: ClickHouseResource, squash: SquashRun, days_recomputed: list[str]
) -> Output:
    written: dict[str, list[str]] = {}
    with retried_when_transient(exports=True):
        copies = squashed_copies(squash.teams)
        for copy in copies:
            days = copy.days(squash.event_days, squash.pre_aggregate_days)
            intervals = rewrite_copy(clickhouse, context, copy, days, context.run.run_id, log_to(context))
            record_rewritten_intervals(context, copy.name, copy.export.hourly, intervals, SQUASH)
            written[copy.name] = [place for _, place in intervals]
    return Output(
        [place for places in written.values() for place in places],
        metadata={"batch_exports": len(copies), "places_rewritten": MetadataValue.json(written)},
    )
