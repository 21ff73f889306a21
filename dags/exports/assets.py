"""The daily export assets, their jobs and schedules: events and the web analytics pre-aggregates, each day
one Parquet file in the customer's destination."""

from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    BackfillPolicy,
    DailyPartitionsDefinition,
    MaterializeResult,
    asset,
    build_schedule_from_partitioned_job,
    define_asset_job,
)

from dags.common import EVENTS_KEY, EXTERNAL_API_RETRY_POLICY, ClickHouseResource, JobOwners
from dags.exports.datasets import EVENTS_DATASET, WEB_BOUNCES_DATASET, WEB_STATS_DATASET
from dags.exports.resource import ExportDestination
from dags.exports.runs import run_export
from dags.exports.settings import load_export_settings

# A day's export runs at most this long before Dagster's run monitoring stops it (seconds, per run).
EXPORT_MAX_RUNTIME_SECONDS = 4 * 3600

SETTINGS = load_export_settings()

# Each export asset has a pool of its own: with a limit of 1, two runs never write the same day at once
# (a second run's clean-up would abort the first one's upload). Different datasets export in parallel.
EXPORT_DAILY_PARTITIONS = DailyPartitionsDefinition(start_date=SETTINGS.start_date)
EXPORT_BACKFILL_POLICY = BackfillPolicy.multi_run(max_partitions_per_run=SETTINGS.max_partitions_per_run)


@asset(
    deps=[EVENTS_KEY],
    partitions_def=EXPORT_DAILY_PARTITIONS,
    backfill_policy=EXPORT_BACKFILL_POLICY,
    kinds={"clickhouse", "parquet"},
    tags=JobOwners.TEAM_DATA_EXPORTS.tags(),
    owners=JobOwners.TEAM_DATA_EXPORTS.asset_owners(),
    retry_policy=EXTERNAL_API_RETRY_POLICY,
    pool="exports_events",
    group_name="exports",
)
def events_export(
    context: AssetExecutionContext, clickhouse: ClickHouseResource, export_destination: ExportDestination
) -> MaterializeResult:
    """Every event of the day, every column of `events`, as one Parquet file in the customer's destination
    (`events/date=YYYY-MM-DD/data.parquet`), so users own a full copy of their raw data. Partitions: one per
    day (`YYYY-MM-DD`, UTC) from EXPORT_START_DATE (default 2024-01-01) through yesterday."""
    return run_export(context, clickhouse, export_destination, EVENTS_DATASET)


EXPORT_RUN_TAGS = {**JobOwners.TEAM_DATA_EXPORTS.tags(), "dagster/max_runtime": str(EXPORT_MAX_RUNTIME_SECONDS)}

events_export_job = define_asset_job(
    name="events_export_job",
    selection=[events_export],
    tags=EXPORT_RUN_TAGS,
)

# Yesterday's events, early enough in the morning for late events to have arrived.
events_export_daily_schedule = build_schedule_from_partitioned_job(
    events_export_job,
    name="events_export_daily_schedule",
    hour_of_day=2,
    minute_of_hour=0,
    description="At 02:00 UTC, yesterday's events to the export destination. Off until turned on (exports go "
    "to a customer's destination only when someone means them to).",
)

# The pre-aggregates' days up to yesterday (their own partitions include today, which is still changing).
WEB_PRE_AGGREGATED_EXPORT_PARTITIONS = DailyPartitionsDefinition(
    start_date=SETTINGS.web_analytics_start_date, timezone="UTC"
)


@asset(
    deps=[AssetKey("web_pre_aggregated_stats")],
    partitions_def=WEB_PRE_AGGREGATED_EXPORT_PARTITIONS,
    backfill_policy=EXPORT_BACKFILL_POLICY,
    kinds={"clickhouse", "parquet"},
    tags=JobOwners.TEAM_DATA_EXPORTS.tags(),
    owners=JobOwners.TEAM_DATA_EXPORTS.asset_owners(),
    retry_policy=EXTERNAL_API_RETRY_POLICY,
    pool="exports_web_pre_aggregated_stats",
    group_name="exports",
)
def web_pre_aggregated_stats_export(
    context: AssetExecutionContext, clickhouse: ClickHouseResource, export_destination: ExportDestination
) -> MaterializeResult:
    """The day's web traffic per team, hour, pathname and visitor dimensions, with plain numbers
    (`persons`, `sessions`, `pageviews`), as Parquet in the customer's destination: their
    dashboards' numbers, in their own warehouse. Partitions: one per day (`YYYY-MM-DD`, UTC) from
    WEB_ANALYTICS_START_DATE (default 2024-01-01) through yesterday."""
    return run_export(context, clickhouse, export_destination, WEB_STATS_DATASET)


@asset(
    deps=[AssetKey("web_pre_aggregated_bounces")],
    partitions_def=WEB_PRE_AGGREGATED_EXPORT_PARTITIONS,
    backfill_policy=EXPORT_BACKFILL_POLICY,
    kinds={"clickhouse", "parquet"},
    tags=JobOwners.TEAM_DATA_EXPORTS.tags(),
    owners=JobOwners.TEAM_DATA_EXPORTS.asset_owners(),
    retry_policy=EXTERNAL_API_RETRY_POLICY,
    pool="exports_web_pre_aggregated_bounces",
    group_name="exports",
)
def web_pre_aggregated_bounces_export(
    context: AssetExecutionContext, clickhouse: ClickHouseResource, export_destination: ExportDestination
) -> MaterializeResult:
    """The day's sessions per team, hour, entry and end pathname and visitor dimensions, with plain
    numbers (`persons`, `sessions`, `pageviews`, `bounces`, `total_session_duration`,
    `total_session_count`), as Parquet in the customer's destination. Partitions: one per day
    (`YYYY-MM-DD`, UTC) from WEB_ANALYTICS_START_DATE (default 2024-01-01) through yesterday."""
    return run_export(context, clickhouse, export_destination, WEB_BOUNCES_DATASET)


web_pre_aggregated_exports_job = define_asset_job(
    name="web_pre_aggregated_exports_job",
    selection=[web_pre_aggregated_stats_export, web_pre_aggregated_bounces_export],
    tags=EXPORT_RUN_TAGS,
)

# Yesterday's pre-aggregates, after the web analytics job has recomputed them (00:15, at most 3 hours).
web_pre_aggregated_exports_daily_schedule = build_schedule_from_partitioned_job(
    web_pre_aggregated_exports_job,
    name="web_pre_aggregated_exports_daily_schedule",
    hour_of_day=4,
    minute_of_hour=0,
    description="At 04:00 UTC, yesterday's web analytics pre-aggregates to the export destination, after the "
    "00:15 recompute. Off until turned on.",
)

EXPORT_ASSETS: list[AssetsDefinition] = [
    events_export,
    web_pre_aggregated_stats_export,
    web_pre_aggregated_bounces_export,
]
EXPORT_JOBS = [events_export_job, web_pre_aggregated_exports_job]
EXPORT_SCHEDULES = [events_export_daily_schedule, web_pre_aggregated_exports_daily_schedule]
