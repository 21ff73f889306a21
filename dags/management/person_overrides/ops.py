"""The core ops of `squash_person_overrides`: snapshot and plan, squash `events`, delete the squashed
overrides, drop the run's snapshot and dictionary; and the failure hook that drops them after a failed step.

Each op sits in the pool of what it changes: the mutations of `events` in `data_deletion` (a deletion and a
squash never mutate the same rows at once), the pre-aggregates' in `web_analytics`, each export's in its own
(see `follow_through`). Every step that mutates makes sure the snapshot and its dictionary are there (a
re-execution after a failed step builds them again from the same config and proves them equal on every host).
"""

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from dagster import (
    Config,
    Failure,
    HookContext,
    In,
    MetadataValue,
    OpExecutionContext,
    Out,
    Output,
    failure_hook,
    op,
)
from pydantic import Field

from dags.common import ClickHouseCluster, ClickHouseResource, SettingError, env_positive_seconds
from dags.exports.resource import ExportDestination
from dags.management.deletion.ops import (
    DELETION_POOL,
    DRY_RUN_SUMMARY,
    OWNER,
    log_to,
    mark_dry_run,
    retried_when_transient,
)
from dags.management.deletion.plan import exported_files, pre_aggregated_days
from dags.management.person_overrides.cleanup import clean_up_run, drop_lookup, drop_unless_in_use
from dags.management.person_overrides.dictionary import create_dictionaries
from dags.management.person_overrides.follow_through import planned_batch_places, squashed_copies
from dags.management.person_overrides.plan import SquashPlan, SquashRun, plan_squash
from dags.management.person_overrides.snapshot import UINT64_MAX, SquashNames, create_snapshots
from dags.management.person_overrides.squash import (
    SQUASH_MARKER_PREFIX,
    delete_squashed_overrides,
    events_hosts,
    events_table,
    lookup_hosts,
    overrides_hosts,
    squash_partitions,
    wait_for_earlier_squashes,
)

OP_TAGS = OWNER.tags()
TIMEOUT_VARIABLE = "PERSON_OVERRIDES_MUTATION_TIMEOUT_SECONDS"
DEFAULT_AGE = timedelta(days=2)  # overrides younger than this are left for a later squash


def mutation_timeout() -> float:
    """`PERSON_OVERRIDES_MUTATION_TIMEOUT_SECONDS` as the step starts; a bad value fails it, not retried."""
    try:
        return env_positive_seconds(TIMEOUT_VARIABLE, 3600.0)
    except SettingError as error:
        raise Failure(description=str(error), allow_retries=False) from None


def names_of(context: OpExecutionContext | HookContext) -> SquashNames:
    """The run's tables: named after the root run, so a re-execution reuses what the killed run built."""
    run = context.instance.get_run_by_id(context.run_id)
    return SquashNames((run.root_run_id if run else None) or context.run_id)


class SquashConfig(Config):
    timestamp: str | None = Field(
        default=None,
        description="Squash only the overrides written before this time (ISO 8601, UTC unless it says "
        "otherwise, e.g. `2024-03-10T00:00:00`). Default: two days before the run starts.",
    )
    limit: int | None = Field(default=None, description="Squash at most this many overrides (the first by key).")
    dry_run: bool = Field(
        default=False,
        description="Report the rows per team and day, partitions and days it would change; change nothing.",
    )


def cutoff(config: SquashConfig) -> int:
    """The config's `timestamp` as unix time (now minus two days when unset); a bad value fails the step."""
    if config.timestamp is None:
        return int((datetime.now(UTC) - DEFAULT_AGE).timestamp())
    try:
        moment = datetime.fromisoformat(config.timestamp.strip())
    except ValueError:
        raise Failure(
            f"timestamp must look like 2024-03-10T00:00:00, got {config.timestamp!r}", allow_retries=False
        ) from None
    return int((moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp())


def checked_limit(config: SquashConfig) -> int | None:
    if config.limit is not None and not 1 <= config.limit <= UINT64_MAX:
        raise Failure(f"limit must be a whole number from 1 to {UINT64_MAX}, got {config.limit}", allow_retries=False)
    return config.limit


def prepare_lookup(cluster: ClickHouseCluster, names: SquashNames, before: int, limit: int | None) -> int:
    """The snapshot and its dictionary on every host that mutates, built unless there, proven equal; their rows."""
    hosts = lookup_hosts(cluster)
    rows = create_snapshots(cluster, hosts, names, before, limit)
    create_dictionaries(cluster, hosts, names)
    return rows


def rows_table(plan: SquashPlan) -> MetadataValue:
    lines = ["| team | day | rows |", "|---|---|---|"]
    lines += [f"| {row['team_id']} | {row['day']} | {row['rows']:,} |" for row in plan.rows_by_team_and_day()]
    return MetadataValue.md("\n".join(lines))


@op(
    out={"report": Out(dict), "squash": Out(SquashRun, is_required=False)},
    pool=DELETION_POOL,
    tags=OP_TAGS,
    description="Wait for earlier squashes, snapshot the overrides, load the dictionary, plan the rows to change.",
)
def plan_person_overrides_squash(
    context: OpExecutionContext,
    config: SquashConfig,
    clickhouse: ClickHouseResource,
    export_destination: ExportDestination,
) -> Iterator[Output]:
    if config.dry_run:
        mark_dry_run(context)
    timeout, before, limit = mutation_timeout(), cutoff(config), checked_limit(config)
    names = names_of(context)
    log = log_to(context)
    with retried_when_transient():
        cluster = clickhouse.get_cluster(context)
        waited = wait_for_earlier_squashes(cluster, events_hosts(cluster), SQUASH_MARKER_PREFIX, timeout, log)
        snapshot_rows = prepare_lookup(cluster, names, before, limit)
        plan = plan_squash(cluster, events_table(cluster), names)
        with clickhouse.get_client(context) as client:
            pre_aggregate_days = pre_aggregated_days(client, plan.changed_days)
    with retried_when_transient(exports=True):
        destination = export_destination.open()
        files = exported_files(destination, plan.event_days, pre_aggregate_days).files
    squash = SquashRun(
        names.run_id, before, limit, tuple(plan.partitions), tuple(plan.teams), tuple(plan.event_days),
        tuple(pre_aggregate_days), plan.total_rows, tuple(run.run_id for run in plan.left_over_runs),
    )  # fmt: skip
    with retried_when_transient(exports=True):
        places = planned_batch_places(squashed_copies(plan.teams), squash) if plan.teams else []
    summary = (
        f"{'Would change' if config.dry_run else 'Changing'} person_id of {plan.total_rows:,} events rows of "
        f"{len(plan.teams)} team(s) in {len(plan.partitions)} partition(s) from {snapshot_rows:,} override(s) "
        f"written before {datetime.fromtimestamp(before, UTC).isoformat()}; recompute "
        f"{len(pre_aggregate_days)} day(s), rewrite {len(files)} file(s) and {len(places)} batch export place(s)"
    )
    if config.dry_run:
        summary = f"{DRY_RUN_SUMMARY} {summary}"
    context.log.info(summary)
    metadata: dict[str, Any] = {
        "summary": summary,
        "dry_run": config.dry_run,
        "snapshot": names.snapshot,
        "overrides_in_snapshot": snapshot_rows,
        "earlier_squash_mutations_waited_for": waited,
        # A killed run's days: its mutations ran, what is built on them was not redone; this run redoes them.
        "left_over_runs_finished": MetadataValue.json([run.run_id for run in plan.left_over_runs]),
        "rows_to_change": plan.total_rows,
        "rows_by_team_and_day": rows_table(plan),
        "partitions_to_mutate": MetadataValue.json(plan.partitions),
        "days_to_recompute": MetadataValue.json([day.isoformat() for day in pre_aggregate_days]),
        "files_to_rewrite": MetadataValue.json([destination.url_of(file.path) for file in files]),
        "batch_exports_to_rewrite": MetadataValue.json(places),
    }
    yield Output({"rows_to_change": plan.total_rows, "dry_run": config.dry_run}, "report", metadata=metadata)
    if config.dry_run:
        with retried_when_transient():
            drop_lookup(cluster, lookup_hosts(cluster), names)
        return
    yield Output(squash, output_name="squash")


@op(
    ins={"squash": In(SquashRun)},
    out=Out(SquashRun),
    pool=DELETION_POOL,
    tags=OP_TAGS,
    description="Rewrite events.person_id from the overrides, one monthly partition at a time, on every copy.",
)
def squash_events(context: OpExecutionContext, clickhouse: ClickHouseResource, squash: SquashRun) -> Output:
    timeout = mutation_timeout()
    with retried_when_transient():
        cluster = clickhouse.get_cluster(context)
        prepare_lookup(cluster, squash.names, squash.before, squash.limit)
        squash_partitions(cluster, events_hosts(cluster), squash.names, squash.partitions, timeout, log_to(context))
    return Output(
        squash,
        metadata={"rows_updated": squash.rows, "partitions_mutated": MetadataValue.json(list(squash.partitions))},
    )


@op(
    ins={"squash": In(SquashRun)},
    out=Out(SquashRun),
    pool=DELETION_POOL,
    tags=OP_TAGS,
    description="Delete exactly the squashed overrides (a newer version written meanwhile stays), on every host.",
)
def delete_squashed_person_overrides(
    context: OpExecutionContext, clickhouse: ClickHouseResource, squash: SquashRun
) -> Output:
    timeout = mutation_timeout()
    with retried_when_transient():
        cluster = clickhouse.get_cluster(context)
        overrides = prepare_lookup(cluster, squash.names, squash.before, squash.limit)
        delete_squashed_overrides(cluster, overrides_hosts(cluster), squash.names, timeout, log_to(context))
    return Output(squash, metadata={"overrides_squashed": overrides})


@op(
    ins={
        "squash": In(SquashRun),
        "events_files": In(list),
        "stats_files": In(list),
        "bounces_files": In(list),
        "batch_places": In(list),
        "days_recomputed": In(list),
    },
    pool=DELETION_POOL,
    tags=OP_TAGS,
    description="Drop the run's snapshot and dictionary; report what the squash changed.",
)
def finish_person_overrides_squash(
    context: OpExecutionContext,
    clickhouse: ClickHouseResource,
    squash: SquashRun,
    events_files: list[str],
    stats_files: list[str],
    bounces_files: list[str],
    batch_places: list[str],
    days_recomputed: list[str],
) -> Output:
    with retried_when_transient():
        cluster = clickhouse.get_cluster(context)
        drop_lookup(cluster, lookup_hosts(cluster), squash.names)
        for left_over in squash.left_over_runs:  # their days are redone now: nothing reads their tables any more
            drop_lookup(cluster, lookup_hosts(cluster), SquashNames(left_over))
    files = [*events_files, *stats_files, *bounces_files]
    context.log.info(
        f"Squashed: {squash.rows:,} events rows updated, {len(days_recomputed)} day(s) recomputed, "
        f"{len(files)} file(s) and {len(batch_places)} batch export place(s) rewritten"
    )
    return Output(
        squash.rows,
        metadata={
            "rows_updated": squash.rows,
            "days_recomputed": MetadataValue.json(days_recomputed),
            "files_rewritten": MetadataValue.json(files),
            "batch_exports_rewritten": MetadataValue.json(batch_places),
        },
    )


@failure_hook(required_resource_keys={"clickhouse"})
def drop_squash_tables_on_failure(context: HookContext) -> None:
    """After a failed step: drop the run's snapshot and dictionary, unless a mutation still reads them."""
    names = names_of(context)
    try:
        cluster = context.resources.clickhouse.get_cluster(None)
        if drop_unless_in_use(cluster, names, context.log.warning):
            context.log.info(f"Dropped {names.snapshot} and {names.dictionary} after the failed step")
    except Exception as error:  # the step's own failure is what the run reports
        context.log.warning(
            f"Could not drop {names.snapshot} and {names.dictionary} ({error}): run "
            "squash_person_overrides_cleanup with this run's id"
        )


class CleanupConfig(Config):
    run_id: str = Field(description="The id of the squash run (its first run, when it was re-executed) to clean up.")


@op(pool=DELETION_POOL, tags=OP_TAGS, description="Drop what a killed squash run left, on every host.")
def drop_squash_tables(context: OpExecutionContext, config: CleanupConfig, clickhouse: ClickHouseResource) -> Output:
    names = SquashNames(config.run_id.strip())
    with retried_when_transient():
        cluster = clickhouse.get_cluster(context)
        found = clean_up_run(cluster, names, mutation_timeout(), log_to(context))
    dropped = {str(host): tables for host, tables in found.items()}
    context.log.info(f"Dropped what run {config.run_id} left: {dropped}")
    return Output(len(dropped), metadata={"dropped": MetadataValue.json(dropped)})
