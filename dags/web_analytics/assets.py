"""The web analytics pre-aggregate assets and their job: hourly stats and bounces per team, read by the
web analytics dashboards.

Dashboards must not scan raw `events` on every query, so two daily partitioned tables hold aggregate
*states* (`uniqState`, `sumState`) per team, hour and dimension values; a dashboard merges them for
any date range and filter. Each run recomputes its partition window idempotently (`refresh.py`). At most
one run that touches these tables runs at a time (the `web_analytics` pool, limited in `dagster.yaml`).
"""

import time
from collections.abc import Iterator
from typing import Any

from dagster import (
    AssetCheckEvaluation,
    AssetExecutionContext,
    AssetKey,
    BackfillPolicy,
    DailyPartitionsDefinition,
    MaterializeResult,
    Output,
    asset,
    define_asset_job,
)

from dags.common import CLICKHOUSE_RETRY_POLICY, EVENTS_KEY, ClickHouseResource, JobOwners
from dags.web_analytics.checks import (
    check_events_left_out_by_day,
    check_specs,
    check_totals_by_day,
    partition_check_events,
)
from dags.web_analytics.config import WebPreaggregatedConfig, config_error, validate_config
from dags.web_analytics.refresh import MAX_RUNTIME_SECONDS, drop_stale_staging_tables, refresh_window
from dags.web_analytics.schema import BOUNCES_TABLE, STATS_TABLE
from dags.web_analytics.settings import load_web_analytics_settings
from dags.web_analytics.sql import BOUNCES, STATS, PreAggregate, table_figures

# The concurrency pool of every asset that rewrites these tables. `dagster.yaml` limits pools to one run
# at a time (run granularity), which holds for job runs, asset backfills (`__ASSET_JOB`) and schedules alike.
WEB_ANALYTICS_POOL = "web_analytics"
JOB_NAME = "web_analytics_daily_job"
WEB_ANALYTICS_OP_NAMES = (STATS_TABLE, BOUNCES_TABLE)  # each asset is named after its table

SETTINGS = load_web_analytics_settings()
WEB_ANALYTICS_DAILY_PARTITIONS = DailyPartitionsDefinition(start_date=SETTINGS.start_date, end_offset=1, timezone="UTC")
BACKFILL_POLICY = BackfillPolicy.multi_run(max_partitions_per_run=SETTINGS.max_partitions_per_run)


def configs_in_run(context: AssetExecutionContext, config: WebPreaggregatedConfig) -> list[WebPreaggregatedConfig]:
    """This asset's config and that of every other web analytics asset the run materializes.

    Dagster's config schema cannot say "non-negative" or "at least one", so the launchpad accepts
    `team_ids: [-1]`; checking every asset's config in the first step to run means a run never rewrites
    one table and then fails on the other's config.
    """
    ops = context.run.run_config.get("ops") or {}
    others = [
        WebPreaggregatedConfig(**((ops[name] or {}).get("config") or {}))
        for name in WEB_ANALYTICS_OP_NAMES
        if name != context.op_def.name and name in ops
    ]
    return [config, *others]


def shares_of(rows_by_day: dict[str, int]) -> dict[str, float]:
    """Each day's part of a statement run once for the window: its part of the rows (even when none)."""
    total = sum(rows_by_day.values())
    return {day: (rows / total if total else 1 / len(rows_by_day)) for day, rows in rows_by_day.items()}


def materialize_window(
    context: AssetExecutionContext,
    config: WebPreaggregatedConfig,
    clickhouse: ClickHouseResource,
    pre_aggregate: PreAggregate,
) -> Iterator[MaterializeResult | Output | AssetCheckEvaluation]:
    """Recompute the run's days, then record each day as its own partition: its own figures, its own checks."""
    window = context.partition_time_window
    first_day, end_day = window.start.date(), window.end.date()
    team_ids = sorted(set(config.team_ids)) if config.team_ids else None
    with clickhouse.get_client(context) as client:
        for each_config in configs_in_run(context, config):
            validate_config(client, each_config)
        if not client.command("EXISTS TABLE events"):
            raise config_error(
                f"There is no events table in database {client.database!r}: load events first "
                "(locally: materialize demo_events, or run bin/demo)."
            )
        stale = drop_stale_staging_tables(client, pre_aggregate)
        refreshed = refresh_window(
            client,
            pre_aggregate,
            first_day=first_day,
            end_day=end_day,
            run_id=context.run.run_id,
            team_ids=team_ids,
            extra_settings=config.extra_clickhouse_settings,
        )
        started = time.monotonic()
        figures = table_figures(client, pre_aggregate.table, first_day, end_day)  # one scan for all below
        totals = check_totals_by_day(
            client, pre_aggregate, first_day=first_day, end_day=end_day, team_ids=team_ids, figures=figures
        )
        left_out = check_events_left_out_by_day(client, first_day=first_day, end_day=end_day, team_ids=team_ids)
        check_seconds = time.monotonic() - started
        table_rows, persons = figures.rows_by_day(), figures.persons_by_day()
    rows_by_day: dict[str, int] = refreshed["rows_by_day"]
    days = list(rows_by_day)
    context.log.info(
        f"{pre_aggregate.table}: {refreshed['rows_written']} rows for {days[0]}..{days[-1]} "
        f"in {refreshed['insert_seconds']}s, partitions swapped in {refreshed['replace_seconds']}s, "
        f"checked in {check_seconds:.3f}s"
    )
    # One INSERT and one set of check queries serve the whole window: each day carries its share of their
    # time, so a day's figures add up to the run's and never repeat them.
    shares = shares_of(rows_by_day)
    for day, rows in rows_by_day.items():
        # A day without events is marked as such, not as a "Row count 0" result: the asset's overview shows
        # the latest materialization, and after a backfill of old empty days that must not read as lost data.
        stored = table_rows.get(day, 0)
        size: dict[str, Any] = (
            {"dagster/row_count": stored}
            if stored
            else {"empty_day": f"No events to aggregate into {pre_aggregate.table} on {day}: empty, not failed"}
        )
        context.add_asset_metadata(
            {
                "rows_written": rows,
                "rows_by_day": {day: rows},
                **size,
                "unique_persons": persons.get(day, 0),  # the dashboards' figure, summed over teams
                "days_covered": [day],
                "days_emptied": [day] if day in refreshed["days_emptied"] else [],
                "insert_seconds": round(refreshed["insert_seconds"] * shares[day], 3),
                "replace_seconds": refreshed["replace_seconds_by_day"][day],
                "check_seconds": round(check_seconds * shares[day], 3),
                "pageviews_left_out_negative_team_id": int(left_out[day].metadata["negative_team_id"].value),
            },
            partition_key=day,
        )
    yield MaterializeResult(
        metadata={"table": pre_aggregate.table, "teams": team_ids or "all", "stale_staging_tables_dropped": stale}
    )
    yield from partition_check_events(context, {day: [*totals[day], left_out[day]] for day in days})


ASSET_OPTIONS: dict[str, Any] = {
    "partitions_def": WEB_ANALYTICS_DAILY_PARTITIONS,
    "backfill_policy": BACKFILL_POLICY,
    "kinds": {"clickhouse"},
    "tags": JobOwners.TEAM_WEB_ANALYTICS.tags(),
    "owners": JobOwners.TEAM_WEB_ANALYTICS.asset_owners(),
    "deps": [EVENTS_KEY],
    "retry_policy": CLICKHOUSE_RETRY_POLICY,
    "pool": WEB_ANALYTICS_POOL,
    "group_name": "web_analytics",
}


@asset(check_specs=check_specs(STATS_TABLE, WEB_ANALYTICS_DAILY_PARTITIONS), **ASSET_OPTIONS)
def web_pre_aggregated_stats(
    context: AssetExecutionContext, config: WebPreaggregatedConfig, clickhouse: ClickHouseResource
) -> Iterator[MaterializeResult | Output | AssetCheckEvaluation]:
    """Pageviews, unique sessions and unique persons per team, hour, pathname and visitor dimensions.

    The dashboards' traffic and paths panels read this instead of raw events. Partitions: one per day
    (`YYYY-MM-DD`, UTC) from WEB_ANALYTICS_START_DATE (default 2024-01-01) through today.
    A day without events is marked `empty_day` rather than given a row count of 0. "Latest materialization"
    is the day computed last (after a backfill of old days, an old day): each day's figures are in Partitions.
    """
    yield from materialize_window(context, config, clickhouse, STATS)


@asset(check_specs=check_specs(BOUNCES_TABLE, WEB_ANALYTICS_DAILY_PARTITIONS), **ASSET_OPTIONS)
def web_pre_aggregated_bounces(
    context: AssetExecutionContext, config: WebPreaggregatedConfig, clickhouse: ClickHouseResource
) -> Iterator[MaterializeResult | Output | AssetCheckEvaluation]:
    """Sessions per team, hour of their first event, entry and end pathname and visitor dimensions.

    With bounces (one pageview, no autocapture, under 10 seconds), total duration and session count,
    for the dashboards' bounce rate and session duration panels. Partitions: one per day (`YYYY-MM-DD`,
    UTC) from WEB_ANALYTICS_START_DATE (default 2024-01-01) through today.
    A day without events is marked `empty_day` rather than given a row count of 0. "Latest materialization"
    is the day computed last (after a backfill of old days, an old day): each day's figures are in Partitions.
    """
    yield from materialize_window(context, config, clickhouse, BOUNCES)


WEB_ANALYTICS_ASSETS = [web_pre_aggregated_stats, web_pre_aggregated_bounces]
WEB_ANALYTICS_ASSET_KEYS = frozenset(AssetKey(table) for table in (STATS_TABLE, BOUNCES_TABLE))

web_analytics_daily_job = define_asset_job(
    JOB_NAME,
    selection=WEB_ANALYTICS_ASSETS,
    tags={**JobOwners.TEAM_WEB_ANALYTICS.tags(), "dagster/max_runtime": str(MAX_RUNTIME_SECONDS)},
    description="Recompute the web analytics pre-aggregates for the selected days (one run at a time).",
)
