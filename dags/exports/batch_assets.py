"""Batch exports as Dagster definitions: each entry of `BATCH_EXPORTS_FILE` becomes one partitioned asset
(`batch_exports/<name>`, hourly or daily from its `start`), one job and one schedule, built on the same
export machinery as `events_export`. Adding an export is adding an entry; no Python.

A file that does not load becomes one stand-in job, `batch_exports_failed_to_load`, whose run fails naming
its problems: one team's entry never takes the deployment's own exports down with it.
"""

import os
from dataclasses import dataclass, field
from pathlib import Path

from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    BackfillPolicy,
    DailyPartitionsDefinition,
    DefaultScheduleStatus,
    Failure,
    HourlyPartitionsDefinition,
    JobDefinition,
    MaterializeResult,
    TimeWindowPartitionsDefinition,
    asset,
    build_schedule_from_partitioned_job,
    define_asset_job,
    get_dagster_logger,
    job,
    op,
)
from dagster._core.definitions.partitions.partitioned_schedule import UnresolvedPartitionedAssetScheduleDefinition
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

from dags.common import ALERT_CHANNEL_TAG, EXTERNAL_API_RETRY_POLICY, ClickHouseResource, JobOwners
from dags.exports.datasets import DATASETS
from dags.exports.declarations import BatchExport, BatchExportsFileError, load_batch_exports
from dags.exports.destination_check import build_destination_check_job
from dags.exports.destinations.postgres import parse_postgres_url
from dags.exports.resource import ExportDestination, parse_destination_url
from dags.exports.runs import run_export
from dags.exports.settings import ExportSettings, load_export_settings

# An hour's export must finish well before the next hour's starts; a day's has the daily exports' budget.
MAX_RUNTIME_SECONDS = {"hour": 3600, "day": 4 * 3600}
# Schedules run a few minutes after each interval closes, when late events of it have arrived.
SCHEDULE_MINUTE = {"hour": 10, "day": 15}
STAND_IN_JOB = "batch_exports_failed_to_load"
CHECK_RUNTIME = 300  # a destination check writes one small probe: minutes mean something hangs


@dataclass
class BatchExportDefinitions:
    """What the batch exports file declares, as definitions for the data exports location."""

    assets: list[AssetsDefinition] = field(default_factory=list)
    jobs: list[UnresolvedAssetJobDefinition | JobDefinition] = field(default_factory=list)
    schedules: list[UnresolvedPartitionedAssetScheduleDefinition] = field(default_factory=list)
    problem: str | None = None  # why the file did not load; its exports are then left out


def batch_export_key(name: str) -> AssetKey:
    return AssetKey(["batch_exports", name])


def batch_export_partitions(export: BatchExport) -> TimeWindowPartitionsDefinition:
    if export.hourly:
        return HourlyPartitionsDefinition(start_date=f"{export.start.isoformat()}-00:00", timezone="UTC")
    return DailyPartitionsDefinition(start_date=export.start.isoformat(), timezone="UTC")


def shown_destination(export: BatchExport) -> str:
    """The export's destination as the UI, logs and metadata show it: never with credentials."""
    scheme = parse_destination_url(export.destination)[0]
    return parse_postgres_url(export.destination).display if scheme == "postgresql" else export.destination


def export_destination_of(export: BatchExport) -> ExportDestination:
    return ExportDestination(url=export.destination, credentials_env=export.credentials_env)


def add_alert_channel_to_run(context: AssetExecutionContext, channel: str) -> None:
    """Tag the run with the export's alert channel when it lacks it: a run launched from the asset's page is an
    implicit asset job's, without the export job's tags, and the failure alert reads the run's tags."""
    tags = context.instance.get_run_by_id(context.run.run_id).tags  # fresh: another export's step may have added one
    channels = {name for name in tags.get(ALERT_CHANNEL_TAG, "").split(",") if name}
    if channel not in channels:
        context.instance.add_run_tags(context.run.run_id, {ALERT_CHANNEL_TAG: ",".join(sorted(channels | {channel}))})


def build_batch_export_asset(export: BatchExport, max_days_per_run: int) -> AssetsDefinition:
    """One export's asset: each partition is one interval of the team's selected rows in its destination."""
    dataset = DATASETS[export.dataset]
    destination = export_destination_of(export)
    scheme = parse_destination_url(export.destination)[0]
    shown = shown_destination(export)
    per_run = max_days_per_run * 24 if export.hourly else max_days_per_run  # the same span of time per run

    @asset(
        key=batch_export_key(export.name),
        partitions_def=batch_export_partitions(export),
        backfill_policy=BackfillPolicy.multi_run(max_partitions_per_run=per_run),
        deps=[AssetKey(dataset.source_table)],
        kinds={"clickhouse", "postgres" if scheme == "postgresql" else "parquet"},
        tags={**JobOwners.TEAM_DATA_EXPORTS.tags(), **export.alert_tags},
        owners=JobOwners.TEAM_DATA_EXPORTS.asset_owners(),
        retry_policy=EXTERNAL_API_RETRY_POLICY,
        # Its own pool: two runs of one export never write the same interval at once.
        pool=f"batch_export_{export.name}",
        group_name="batch_exports",
        description=(
            f"Team {export.team_id}'s {export.dataset}, every {export.interval}, to {shown}: "
            "a batch export declared in the batch exports file. Partitions: one per "
            f"{export.interval} (UTC) from its start, {export.start} (the entry's start in BATCH_EXPORTS_FILE), "
            f"through the last complete {export.interval}."
        ),
        metadata={
            "destination": shown,
            "interval": export.interval,
            "dataset": export.dataset,
            "team_id": export.team_id,
            "events": list(export.events) or "all",
            "exclude_events": list(export.exclude_events) or "none",
            "columns": list(export.columns) or "all",
            "credentials_env": dict(export.credentials_env),  # variable names only
            "alert_channel": export.alert_channel or "the owner's channel",
        },
    )
    def batch_export(context: AssetExecutionContext, clickhouse: ClickHouseResource) -> MaterializeResult:
        if export.alert_channel:
            add_alert_channel_to_run(context, export.alert_channel.lstrip("#"))
        return run_export(
            context, clickhouse, destination, dataset, export.selection, hourly=export.hourly, name=export.name
        )

    return batch_export


def build_batch_exports(settings: ExportSettings | None = None) -> BatchExportDefinitions:
    """The assets, jobs and schedules of every export in `BATCH_EXPORTS_FILE` (validated whole)."""
    settings = settings or load_export_settings()
    definitions = BatchExportDefinitions()
    required = bool(os.environ.get("BATCH_EXPORTS_FILE", "").strip())
    deployment = {"the deployment's local export folder": settings.local_destination_url}
    if settings.destination_url:
        deployment["EXPORT_DESTINATION_URL"] = settings.destination_url
    exports = load_batch_exports(
        settings.batch_exports_file, settings.dagster_home, required=required, deployment_destinations=deployment
    )
    # Declaring an export is asking for it: on a server it runs until someone stops it in the UI. On the embedded
    # engine (a laptop, the demo) no events arrive, so each tick would only write an empty file: stopped there.
    status = DefaultScheduleStatus.STOPPED if settings.embedded_clickhouse else DefaultScheduleStatus.RUNNING
    when = "Off on the embedded engine until turned on" if settings.embedded_clickhouse else "On once declared"
    for export in exports:
        export_asset = build_batch_export_asset(export, settings.max_partitions_per_run)
        job = define_asset_job(
            name=f"batch_export_{export.name}_job",
            selection=[export_asset],
            tags={
                **JobOwners.TEAM_DATA_EXPORTS.tags(),
                **export.alert_tags,
                "dagster/max_runtime": str(MAX_RUNTIME_SECONDS[export.interval]),
            },
        )
        check_job = build_destination_check_job(
            export,
            export_destination_of(export),
            shown_destination(export),
            {**JobOwners.TEAM_DATA_EXPORTS.tags(), **export.alert_tags, "dagster/max_runtime": str(CHECK_RUNTIME)},
        )
        schedule = build_schedule_from_partitioned_job(
            job,
            name=f"batch_export_{export.name}_schedule",
            minute_of_hour=SCHEDULE_MINUTE[export.interval],
            hour_of_day=None if export.hourly else 0,
            default_status=status,
            description=f"The batch export {export.name!r} declared in {settings.batch_exports_file.name}: each "
            f"{'hour' if export.hourly else 'day'} just ended, to its destination. {when}.",
        )
        definitions.assets.append(export_asset)
        definitions.jobs.extend([job, check_job])
        definitions.schedules.append(schedule)
    return definitions


def batch_exports_stand_in(batch_exports_file: Path, problem: str) -> JobDefinition:
    """The job in place of a file's batch exports that did not load: its run fails naming the problems."""
    message = f"The batch exports of {batch_exports_file} did not load, so their jobs are missing: {problem}"
    tags = JobOwners.TEAM_DATA_EXPORTS.tags()

    @op(name="batch_exports_load_failure", description=message, tags=tags)
    def report_load_failure() -> None:
        raise Failure(description=message, allow_retries=False)

    @job(name=STAND_IN_JOB, description=message, tags=tags)
    def stand_in() -> None:
        report_load_failure()

    return stand_in


def build_batch_exports_or_stand_in(settings: ExportSettings | None = None) -> BatchExportDefinitions:
    """`build_batch_exports`, or when the file does not load, only its stand-in job (and a warning).

    The deployment's own export settings are read first, outside: a bad one still fails the whole location.
    """
    settings = settings or load_export_settings()
    try:
        return build_batch_exports(settings)
    except Exception as error:  # whatever in the file breaks the build: it must not take the location down
        problem = str(error) if isinstance(error, BatchExportsFileError) else f"{type(error).__name__}: {error}"
        get_dagster_logger("dags.exports").warning(f"Leaving out the batch exports: {problem}")
        stand_in = batch_exports_stand_in(settings.batch_exports_file, problem)
        return BatchExportDefinitions(jobs=[stand_in], problem=problem)
