"""When the pre-aggregates are recomputed (yesterday's day once complete, today's through the day), and the
sensor that gives their concurrency pool its limit."""

from datetime import UTC, date, datetime, time, timedelta

from dagster import (
    DefaultScheduleStatus,
    DefaultSensorStatus,
    RunRequest,
    RunsFilter,
    ScheduleEvaluationContext,
    SensorEvaluationContext,
    SkipReason,
    schedule,
    sensor,
)

from dags.common import UNFINISHED_RUN_STATUSES, JobOwners, ensure_pool_limits, load_settings
from dags.web_analytics.assets import (
    JOB_NAME,
    SETTINGS,
    WEB_ANALYTICS_ASSET_KEYS,
    WEB_ANALYTICS_POOL,
    web_analytics_daily_job,
)

# --- Schedules -----------------------------------------------------------------------------------------------


def active_web_analytics_runs(context: ScheduleEvaluationContext) -> list[str]:
    """Queued or running runs of the job, or of any backfill that rewrites these tables."""
    runs = context.instance.get_runs(RunsFilter(statuses=UNFINISHED_RUN_STATUSES))
    return [
        run.run_id
        for run in runs
        if run.job_name == JOB_NAME or WEB_ANALYTICS_ASSET_KEYS & set(run.asset_selection or ())
    ]


def partition_request(context: ScheduleEvaluationContext, day: date) -> RunRequest | SkipReason:
    busy = active_web_analytics_runs(context)
    if busy:
        return SkipReason(
            f"{JOB_NAME} already has a queued or running run ({', '.join(busy[:3])}); skipping this tick."
        )
    scheduled = context.scheduled_execution_time or datetime.now(UTC)
    return RunRequest(
        run_key=f"{day.isoformat()}@{scheduled.isoformat()}",
        partition_key=day.isoformat(),
    )


# On a ClickHouse server (production) both schedules run from the start. On the embedded engine (a laptop,
# the demo) there is no live traffic: they would recompute days without events every few minutes, and the
# latest materialization of each pre-aggregate would read "0 rows, day emptied" next to the demo's full days,
# which looks like data loss. There they start stopped; turn them on in the UI (Automation) to watch them.
DEFAULT_STATUS = (
    DefaultScheduleStatus.STOPPED if load_settings().uses_embedded_clickhouse else DefaultScheduleStatus.RUNNING
)


@schedule(
    job=web_analytics_daily_job,
    cron_schedule=SETTINGS.yesterday_cron,
    execution_timezone="UTC",
    default_status=DEFAULT_STATUS,
    description="Yesterday's partition once the day is complete, both pre-aggregates. On by default with a "
    "ClickHouse server, off on the embedded engine (no live traffic); skips its tick while another run "
    "rewrites these tables.",
)
def web_analytics_yesterday_schedule(context: ScheduleEvaluationContext) -> RunRequest | SkipReason:
    scheduled = context.scheduled_execution_time or datetime.now(UTC)
    return partition_request(context, scheduled.date() - timedelta(days=1))


@schedule(
    job=web_analytics_daily_job,
    cron_schedule=SETTINGS.today_cron,
    execution_timezone="UTC",
    default_status=DEFAULT_STATUS,
    description="Today's partition so far, refreshed through the day. On by default with a ClickHouse server, "
    "off on the embedded engine (no live traffic: today would only show as empty); skips its tick while "
    "another run rewrites these tables.",
)
def web_analytics_today_schedule(context: ScheduleEvaluationContext) -> RunRequest | SkipReason:
    scheduled = (context.scheduled_execution_time or datetime.now(UTC)).astimezone(UTC)
    if scheduled.time() == time(0, 0):
        # A run now would rewrite both tables for a day with no events yet (two materializations and six check
        # evaluations a day for nothing); the day that just ended is completed by the yesterday schedule.
        return SkipReason(f"Midnight UTC: {scheduled.date()} has no events yet; the next tick refreshes it.")
    return partition_request(context, scheduled.date())


WEB_ANALYTICS_SCHEDULES = [web_analytics_yesterday_schedule, web_analytics_today_schedule]


# --- The pool's limit -------------------------------------------------------------------------------------------


@sensor(
    minimum_interval_seconds=60,
    default_status=DefaultSensorStatus.RUNNING,
    tags=JobOwners.TEAM_WEB_ANALYTICS.tags(),
    description=f"Makes sure the {WEB_ANALYTICS_POOL} pool has its limit before any of its runs is queued.",
)
def web_analytics_pool_limit_sensor(context: SensorEvaluationContext) -> SkipReason:
    """Write the pool's limit to the instance if it has none yet (see `ensure_pool_limits`)."""
    return ensure_pool_limits(context.instance, [WEB_ANALYTICS_POOL])
