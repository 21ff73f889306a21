"""The ops of `data_deletion_job`: plan, delete, recompute, rewrite, verify.

Each op records every request's stage in `data_deletion_requests` when it has finished its part, and
takes only the requests that have not passed its stage yet: a run killed anywhere is finished by the next
one, which skips what was done; a resumed request whose rows are in `events` again (a late event) is
planned again first (`replan`), so the steps run once more for the days that hold them. Each op sits in
the pool of what it rewrites, so with run granularity (`dagster.yaml`) a deletion run waits for
pre-aggregate and export runs, and for other deletion runs.
"""

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import date
from pathlib import Path

from dagster import (
    Config,
    Failure,
    In,
    MetadataValue,
    OpDefinition,
    OpExecutionContext,
    Out,
    Output,
    RetryRequested,
    op,
)
from pydantic import Field

from dags.common import ClickHouseResource, JobOwners, SettingError, env_positive_seconds, env_text, is_transient
from dags.exports.datasets import EVENTS_DATASET, WEB_BOUNCES_DATASET, WEB_STATS_DATASET, ExportDataset
from dags.exports.publish import worth_retrying
from dags.exports.resource import ExportDestination
from dags.management.deletion import requests as store
from dags.management.deletion.changes import deletion, record_recomputed_days, record_rewritten_files
from dags.management.deletion.copies import batch_copies, planned_places
from dags.management.deletion.copy_verify import verify_copy
from dags.management.deletion.events import delete_events
from dags.management.deletion.plan import (
    EXPORTED_DATASETS,
    FileToRewrite,
    exported_files,
    plan_request,
    pre_aggregated_days,
    team_has_events,
)
from dags.management.deletion.properties import remove_properties
from dags.management.deletion.recompute import recompute_days, unique_persons_of_days
from dags.management.deletion.replan import replan_leftovers, still_in_events
from dags.management.deletion.rewrite import rewrite_files
from dags.management.deletion.settings import DeletionSettings, load_deletion_settings
from dags.management.deletion.verify import (
    deleted_rows_in_file,
    failed_pre_aggregate_checks,
    rows_left_in_events,
    rows_missing_from_file,
)

OWNER = JobOwners.TEAM_PLATFORM

# The pools of everything a deletion rewrites: its own (one deletion at a time), the web analytics
# pre-aggregates' and each export dataset's (the same names as those teams' assets use).
DELETION_POOL = "data_deletion"
WEB_ANALYTICS_POOL = "web_analytics"
EXPORT_POOLS = {dataset.name: f"exports_{dataset.name}" for dataset in EXPORTED_DATASETS}
POOLS = (DELETION_POOL, WEB_ANALYTICS_POOL, *EXPORT_POOLS.values())

# Test hook: pause the run after the named op (writing the marker file first), so a test can kill it there.
TEST_HOOK_PAUSE_AFTER = "DATA_DELETION_TEST_HOOK_PAUSE_AFTER"
TEST_HOOK_MARKER = "DATA_DELETION_TEST_HOOK_MARKER"
TEST_HOOK_PAUSE_SECONDS = "DATA_DELETION_TEST_HOOK_PAUSE_SECONDS"


def pause_for_tests(step: str, context: OpExecutionContext) -> None:
    """Test hook only: pause after `step` when `DATA_DELETION_TEST_HOOK_PAUSE_AFTER` names it."""
    if env_text(TEST_HOOK_PAUSE_AFTER) != step:
        return
    marker = env_text(TEST_HOOK_MARKER)
    if marker:
        Path(marker).write_text(step)
    seconds = env_positive_seconds(TEST_HOOK_PAUSE_SECONDS, 600.0)
    context.log.warning(f"Test hook: pausing {seconds:.0f}s after {step}")
    time.sleep(seconds)


@contextmanager
def retried_when_transient(exports: bool = False) -> Iterator[None]:
    """Retry the step with backoff after a transient error (network, overload, a busy engine); fail otherwise."""
    try:
        yield
    except (Failure, RetryRequested):
        raise
    except Exception as error:
        transient = worth_retrying(error) if exports else is_transient(error.__cause__ or error)
        if transient:
            raise RetryRequested(max_retries=3, seconds_to_wait=10) from error
        raise


def deletion_settings() -> DeletionSettings:
    """The `DATA_DELETION_*` settings as the step starts: a bad value fails the step naming the variable and
    its range, before anything is read or changed (read here, not at import, so that it cannot keep the data
    platform location, and with it the backup jobs, from loading)."""
    try:
        return load_deletion_settings()
    except SettingError as error:
        raise Failure(description=str(error), allow_retries=False) from None


def log_to(context: OpExecutionContext) -> Callable[[str], None]:
    """Progress lines for the run's log."""
    return context.log.info


def rows_by_team_and_day(requests: list[store.DeletionRequest]) -> MetadataValue:
    lines = ["| request | team | key type | day | rows |", "|---|---|---|---|---|"]
    for request in requests:
        for day, rows in zip(request.event_days, request.event_rows, strict=True):
            lines.append(f"| {request.request_id} | {request.team_id} | {request.key_type} | {day} | {rows:,} |")
    return MetadataValue.md("\n".join(lines))


def days_of(requests: list[store.DeletionRequest], attribute: str) -> list[date]:
    return sorted({day for request in requests for day in getattr(request, attribute)})


# --- The ops of data_deletion_job ----------------------------------------------------------------------------


class DeletionRunConfig(Config):
    dry_run: bool = Field(
        default=False,
        description="Report what would be deleted (rows per team and day, days to recompute, files to "
        "rewrite) and change nothing: no row, no file, no request status.",
    )


OP_TAGS = OWNER.tags()

# Every dry run carries this tag (the dry run job has it, a real job's run gets it from its first step), so the
# Runs list tells a dry run from a deletion at a glance and can filter on it.
DRY_RUN_TAG = "dry_run"
DRY_RUN_SUMMARY = "Dry run: nothing was changed."


def mark_dry_run(context: OpExecutionContext) -> None:
    """Tag the run as a dry run, when its job did not already (`data_deletion_job` with `dry_run: true`)."""
    if context.run.tags.get(DRY_RUN_TAG) != "true":
        context.instance.add_run_tags(context.run.run_id, {DRY_RUN_TAG: "true"})


@op(
    out={"report": Out(dict), "request_ids": Out(list, is_required=False)},
    pool=DELETION_POOL,
    tags=OP_TAGS,
    description="Take every open request: reject malformed ones, record what the others delete, list files.",
)
def plan_deletions(
    context: OpExecutionContext,
    config: DeletionRunConfig,
    clickhouse: ClickHouseResource,
    export_destination: ExportDestination,
) -> Iterator[Output]:
    if config.dry_run:
        mark_dry_run(context)
    settings = deletion_settings()
    run_id = context.run.run_id
    accepted: list[store.DeletionRequest] = []
    rejected: list[store.DeletionRequest] = []
    with retried_when_transient(), clickhouse.get_client(context) as client:
        store.create_requests_table(client)
        has_events = bool(client.command("EXISTS TABLE events"))
        for request in store.open_requests(client, settings.max_requests_per_run):
            if request.status == store.PENDING:
                reason = store.rejection_reason(request, has_events and team_has_events(client, request.team_id))
                if reason:
                    request = replace(request, status=store.REJECTED, reason=reason, run_id=run_id)
                    if not config.dry_run:
                        store.write_status(client, request, status=store.REJECTED, reason=reason, run_id=run_id)
                    context.log.warning(f"Rejected {request.describe()}: {reason}")
                    rejected.append(request)
                    continue
                event_days, event_rows, changed_days = plan_request(client, request)
                planned = {
                    "status": store.PLANNED,
                    "event_days": event_days,
                    "event_rows": event_rows,
                    "pre_aggregate_days": pre_aggregated_days(client, changed_days),
                    "run_id": run_id,
                }
                if config.dry_run:
                    request = replace(request, **planned)
                else:
                    request = store.write_status(client, request, **planned)
            elif replanned := replan_leftovers(client, request):
                context.log.warning(
                    f"{request.describe()} ({request.status}) still has rows in events: planned again with "
                    f"{', '.join(str(day) for day in replanned['event_days'])}"
                )
                replanned["run_id"] = run_id
                if config.dry_run:
                    request = replace(request, **replanned)
                else:
                    request = store.write_status(client, request, **replanned)
            accepted.append(request)
    destination = export_destination.open()
    not_rewritten = [request for request in accepted if not request.reached(store.DONE)]
    files = exported_files(
        destination, days_of(not_rewritten, "event_days"), days_of(not_rewritten, "pre_aggregate_days")
    ).files
    teams = sorted({request.team_id for request in not_rewritten})
    batch_places = planned_places(batch_copies(teams), not_rewritten) if teams else []
    report = {
        "dry_run": config.dry_run,
        "requests": [request.audit() for request in accepted],
        "rejected": [request.audit() for request in rejected],
        "rows_to_delete": sum(
            request.planned_rows
            for request in accepted
            if not request.reached(store.EVENTS_DELETED) and not request.removes_properties
        ),
        # Rows of `properties` requests: they stay, only the keys leave their properties.
        "rows_to_rewrite": sum(
            request.planned_rows
            for request in accepted
            if not request.reached(store.EVENTS_DELETED) and request.removes_properties
        ),
        "days_to_recompute": [day.isoformat() for day in days_of(accepted, "pre_aggregate_days")],
        "files_to_rewrite": [destination.url_of(file.path) for file in files],
        "batch_exports_to_rewrite": batch_places,
    }
    if not accepted and not rejected:
        summary = "No pending deletion requests: nothing to do."
    else:
        summary = (
            f"{'Would delete' if config.dry_run else 'Deleting'} {report['rows_to_delete']:,} rows"
            + (
                f" and remove property keys from {report['rows_to_rewrite']:,} rows"
                if report["rows_to_rewrite"]
                else ""
            )
            + f" for {len(accepted)} request(s), recompute {len(report['days_to_recompute'])} day(s), rewrite "
            f"{len(files)} file(s) and {len(batch_places)} batch export place(s); {len(rejected)} request(s) "
            f"{'would be ' if config.dry_run else ''}rejected"
        )
    if config.dry_run:
        summary = f"{DRY_RUN_SUMMARY} {summary}"
    context.log.info(summary)
    yield Output(
        report,
        output_name="report",
        metadata={
            "summary": summary,
            "dry_run": config.dry_run,
            "requests": len(accepted),
            "rejected": MetadataValue.json(report["rejected"]),
            "rows_to_delete": report["rows_to_delete"],
            "rows_to_rewrite": report["rows_to_rewrite"],
            "rows_by_team_and_day": rows_by_team_and_day(accepted),
            "days_to_recompute": MetadataValue.json(report["days_to_recompute"]),
            "files_to_rewrite": MetadataValue.json(report["files_to_rewrite"]),
            "batch_exports_to_rewrite": MetadataValue.json(batch_places),
            "destination": destination.url,
        },
    )
    if accepted and not config.dry_run:
        yield Output([request.request_id for request in accepted], output_name="request_ids")


@op(ins={"request_ids": In(list)}, pool=DELETION_POOL, tags=OP_TAGS, description="Delete the requests' rows.")
def delete_requested_events(
    context: OpExecutionContext, clickhouse: ClickHouseResource, request_ids: list[str]
) -> Output:
    settings = deletion_settings()
    with retried_when_transient():
        cluster = clickhouse.get_cluster(context)
    with retried_when_transient(), clickhouse.get_client(context) as client:
        todo = [r for r in store.requests_by_id(client, request_ids) if not r.reached(store.EVENTS_DELETED)]
        left = [still_in_events(client, request) for request in todo]
        timeout = settings.mutation_timeout_seconds
        deletes = delete_events(cluster, [r for r in left if not r.removes_properties], timeout, log_to(context))
        removals = remove_properties(cluster, [r for r in left if r.removes_properties], timeout, log_to(context))
        for request in todo:
            store.write_status(client, request, status=store.EVENTS_DELETED, run_id=context.run.run_id)
    pause_for_tests("delete_requested_events", context)
    return Output(
        request_ids,
        metadata={
            "requests": len(todo),
            "mutations": len(deletes) + len(removals),
            "rows_deleted": sum(request.planned_rows for request in todo if not request.removes_properties),
            "rows_rewritten": sum(request.planned_rows for request in todo if request.removes_properties),
            "rows_deleted_by_team_and_day": rows_by_team_and_day(todo),
        },
    )


@op(ins={"request_ids": In(list)}, pool=WEB_ANALYTICS_POOL, tags=OP_TAGS, description="Recompute changed days.")
def recompute_pre_aggregates(
    context: OpExecutionContext, clickhouse: ClickHouseResource, request_ids: list[str]
) -> Output:
    with retried_when_transient(), clickhouse.get_client(context) as client:
        todo = [
            request
            for request in store.requests_by_id(client, request_ids)
            if request.reached(store.EVENTS_DELETED) and not request.reached(store.PRE_AGGREGATES_RECOMPUTED)
        ]
        days = days_of(todo, "pre_aggregate_days")
        written = (
            recompute_days(client, days, [request.team_id for request in todo], context.run.run_id, log_to(context))
            if days
            else {}
        )
        persons = unique_persons_of_days(client, days) if days else {}
        for request in todo:
            store.write_status(
                client,
                request,
                status=store.PRE_AGGREGATES_RECOMPUTED,
                days_recomputed=request.pre_aggregate_days,
                run_id=context.run.run_id,
            )
    record_recomputed_days(context, written, deletion([request.request_id for request in todo]), persons)
    pause_for_tests("recompute_pre_aggregates", context)
    return Output(
        request_ids,
        metadata={
            "days_recomputed": MetadataValue.json([day.isoformat() for day in days]),
            "rows_written_by_table_and_day": MetadataValue.json(written),
        },
    )


def rewrite_op(dataset: ExportDataset) -> OpDefinition:
    """The op that rewrites one dataset's exported files, in that dataset's export pool."""

    @op(
        name=f"rewrite_{dataset.name}_exports",
        ins={"request_ids": In(list)},
        pool=EXPORT_POOLS[dataset.name],
        tags=OP_TAGS,
        description=f"Rewrite the exported {dataset.name} files of the changed days (only days already exported).",
    )
    def rewrite(
        context: OpExecutionContext,
        clickhouse: ClickHouseResource,
        export_destination: ExportDestination,
        request_ids: list[str],
    ) -> Output:
        with retried_when_transient(), clickhouse.get_client(context) as client:
            todo = [
                request
                for request in store.requests_by_id(client, request_ids)
                if request.reached(store.PRE_AGGREGATES_RECOMPUTED) and not request.reached(store.DONE)
            ]
        with retried_when_transient(exports=True):
            destination = export_destination.open()
            destination.check_access()
            files = exported_files(destination, days_of(todo, "event_days"), days_of(todo, "days_recomputed")).of(
                dataset
            )
            urls = rewrite_files(
                clickhouse, context, export_destination, destination, files, context.run.run_id, log_to(context)
            )
        record_rewritten_files(
            context,
            dataset,
            [(file.day, url) for file, url in zip(files, urls, strict=True)],
            deletion([request.request_id for request in todo]),
        )
        pause_for_tests(f"rewrite_{dataset.name}_exports", context)
        rewritten = [
            {"dataset": file.dataset.name, "day": file.day.isoformat(), "url": url}
            for file, url in zip(files, urls, strict=True)
        ]
        return Output(
            rewritten, metadata={"files_rewritten": MetadataValue.json(rewritten), "destination": destination.url}
        )

    return rewrite


rewrite_events_exports = rewrite_op(EVENTS_DATASET)
rewrite_web_pre_aggregated_stats_exports = rewrite_op(WEB_STATS_DATASET)
rewrite_web_pre_aggregated_bounces_exports = rewrite_op(WEB_BOUNCES_DATASET)


@op(
    ins={
        "request_ids": In(list),
        "events_files": In(list),
        "stats_files": In(list),
        "bounces_files": In(list),
        "batch_places": In(list),
    },
    pool=DELETION_POOL,
    tags=OP_TAGS,
    description="Prove each request carried out, then mark it done with what was removed.",
)
def verify_and_complete(
    context: OpExecutionContext,
    clickhouse: ClickHouseResource,
    export_destination: ExportDestination,
    request_ids: list[str],
    events_files: list[dict[str, str]],
    stats_files: list[dict[str, str]],
    bounces_files: list[dict[str, str]],
    batch_places: list[str],
) -> Output:
    datasets = {dataset.name: dataset for dataset in EXPORTED_DATASETS}
    rewritten = [
        (FileToRewrite(datasets[file["dataset"]], date.fromisoformat(file["day"])), file["url"])
        for file in [*events_files, *stats_files, *bounces_files]
    ]
    destination = export_destination.open()
    problems: dict[str, list[str]] = {}
    done: list[store.DeletionRequest] = []
    with retried_when_transient(), clickhouse.get_client(context) as client:
        for request in store.requests_by_id(client, request_ids):
            if request.reached(store.DONE):
                continue
            found: list[str] = []
            left = rows_left_in_events(client, request)
            if left:
                found.append(f"{left:,} matching rows still in events")
            found += failed_pre_aggregate_checks(client, request.days_recomputed, [request.team_id])
            # The plan's files, read back whatever the rewrite ops reported: a rewrite that wrote nothing
            # must not let the request pass.
            planned = exported_files(destination, request.event_days, request.days_recomputed).files
            urls = {(file.dataset.name, file.day): url for file, url in rewritten}
            mine = [(file, urls.get((file.dataset.name, file.day), destination.url_of(file.path))) for file in planned]
            for file, url in mine:
                still = deleted_rows_in_file(destination, file, request)
                if still:
                    found.append(f"{url} still holds {still:,} of the request's rows")
                if request.removes_properties and (miscount := rows_missing_from_file(client, destination, file)):
                    found.append(f"{url} {miscount}")
            # Every batch export of the team, read back from the copy itself.
            copied: list[str] = []
            for copy in batch_copies([request.team_id]):
                places, leftovers = verify_copy(client, copy, request)
                copied += places
                found += leftovers
            if found:
                problems[request.request_id] = found
                continue
            done.append(
                store.write_status(
                    client,
                    request,
                    status=store.DONE,
                    rows_deleted=request.planned_rows,
                    files_rewritten=[url for _, url in mine] + copied,
                    run_id=context.run.run_id,
                )
            )
        completed = store.requests_by_id(client, [request.request_id for request in done])
    audit = [request.audit() for request in completed]
    for request in completed:
        context.log.info(
            f"Done: {request.describe()}: {request.rows_deleted:,} rows deleted, "
            f"{len(request.days_recomputed)} day(s) recomputed, {len(request.files_rewritten)} file(s) rewritten"
        )
    if problems:
        raise Failure(
            description=f"{len(problems)} request(s) could not be verified and stay open for the next run: {problems}",
            metadata={"problems": MetadataValue.json(problems), "completed": MetadataValue.json(audit)},
            allow_retries=False,
        )
    return Output(
        len(completed),
        metadata={
            "requests_completed": len(completed),
            "rows_deleted": sum(request.rows_deleted for request in completed),
            "audit": MetadataValue.json(audit),
            "run_id": context.run.run_id,
        },
    )
