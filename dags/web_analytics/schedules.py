"""When the pre-aggregates are recomputed (yesterday's day once complete, today's through the day), and the
sensor that gives their concurrency pool its limit."""

from datetime import UTC, date, datetime, time, timedelta

from dagster import (
    DagsterRunStatus,
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

from dags.common import JobOwners
from dags.web_analytics.assets import (
    JOB_NAME,
    SETTINGS,
    WEB_ANALYTICS_ASSET_KEYS,
    WEB_ANALYTICS_POOL,
    web_analytics_daily_job,
)

# --- Schedules -----------------------------------------------------------------------------------------------

ACTIVE_STATUSES = [
    DagsterRunStatus.QUEUED,
    DagsterRunStatus.NOT_STARTED,
    DagsterRunStatus.STARTING,
    DagsterRunStatus.STARTED,
    DagsterRunStatus.CANCELING,
]


def active_web_analytics_runs(context: ScheduleEvaluationContext) -> list[str]:
    """Queued or running runs of the job, or of any backfill that rewrites these tables."""
    runs = context.instance.get_runs(RunsFilter(statuses=ACTIVE_STATUSES))
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


@schedule(
    job=web_analytics_daily_job,
    cron_schedule=SETTINGS.yesterday_cron,
    execution_timezone="UTC",
    default_status=DefaultScheduleStatus.RUNNING,
    description="Yesterday's partition, once it is complete.",
)
def web_analytics_yesterday_schedule(context: ScheduleEvaluationContext) -> RunRequest | SkipReason:
    scheduled = context.scheduled_execution_time or datetime.now(UTC)
    return partition_request(context, scheduled.date() - timedelta(days=1))


@schedule(
    job=web_analytics_daily_job,
    cron_schedule=SETTINGS.today_cron,
    execution_timezone="UTC",
    default_status=DefaultScheduleStatus.RUNNING,
    description="Today's partition so far, refreshed through the day.",
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
    """Write the pool's limit to the instance if it has none yet.

    Dagster 1.13 stores a pool's default limit (dagster.yaml ``concurrency.pools.default_limit``) only while
    deciding its first dequeue pass for that pool, and decides that pass as if the pool were unlimited: on a
    fresh instance, the first queued web analytics runs would all start together. Writing the limit at
    daemon start closes that gap. A limit set in the UI or with ``dagster instance concurrency set`` stays.
    """
    storage = context.instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return SkipReason("This instance's storage has no concurrency pools; runs are limited by tags only.")
    limits = {pool.name: pool.limit for pool in storage.get_pool_limits()}
    if WEB_ANALYTICS_POOL in limits:
        return SkipReason(f"Pool {WEB_ANALYTICS_POOL!r} is limited to {limits[WEB_ANALYTICS_POOL]} run(s) at a time.")
    if context.instance.global_op_concurrency_default_limit:
        storage.initialize_concurrency_limit_to_default(WEB_ANALYTICS_POOL)
    else:
        storage.set_concurrency_slots(WEB_ANALYTICS_POOL, 1)
    limit = {pool.name: pool.limit for pool in storage.get_pool_limits()}.get(WEB_ANALYTICS_POOL)
    return SkipReason(f"Set the limit of pool {WEB_ANALYTICS_POOL!r} to {limit}.")
