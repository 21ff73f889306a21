"""When `data_deletion_job` runs: weekly, and as soon as a request has waited too long; and the sensor that
gives the pools a deletion run holds their limits."""

from typing import Any

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

from dags.common import UNFINISHED_RUN_STATUSES, ClickHouseBusyError, ClickHouseResource, ensure_pool_limits
from dags.management.deletion import requests as store
from dags.management.deletion.jobs import JOB_NAME, data_deletion_job
from dags.management.deletion.ops import OWNER, POOLS
from dags.management.deletion.settings import DEFAULT_MAX_WAIT_HOURS, load_deletion_settings

# --- When it runs ----------------------------------------------------------------------------------------------

SENSOR_LOCK_TIMEOUT_SECONDS = 20.0
NEVER_REQUESTED = f"There is no {store.TABLE} table yet: no request was ever made."


def request_figures(clickhouse: ClickHouseResource, query: str, parameters: dict[str, Any]) -> dict[str, Any] | None:
    """The one row `query` reads from the requests table; None when there is no table (nothing ever requested).

    A tick must not wait long for an embedded engine a run holds: ClickHouseBusyError then, for the tick to
    decide what waiting means for it.
    """
    quick = clickhouse.model_copy(update={"lock_timeout_seconds": SENSOR_LOCK_TIMEOUT_SECONDS})
    with quick.get_client() as client:
        if not client.command("EXISTS TABLE {table:Identifier}", {"table": store.TABLE}):
            return None
        return client.query_rows(query, parameters)[0]


@schedule(
    job=data_deletion_job,
    cron_schedule="0 3 * * 0",
    execution_timezone="UTC",
    default_status=DefaultScheduleStatus.RUNNING,
    description="Every Sunday at 03:00 UTC, carry out every open data deletion request; skips the week when no "
    "request is open.",
)
def data_deletion_weekly_schedule(
    context: ScheduleEvaluationContext, clickhouse: ClickHouseResource
) -> RunRequest | SkipReason:
    """A run with nothing to delete would still execute its nine steps (nine Dagster+ credits) to change nothing."""
    try:
        figures = request_figures(clickhouse, store.OPEN_REQUEST_COUNT, {"stages": list(store.OPEN_STAGES)})
    except ClickHouseBusyError:
        # The embedded engine is held by a run: run anyway, the deletion waits for the engine in its own run.
        return RunRequest(tags={"data_deletion/trigger": "weekly_schedule"})
    if figures is None:
        return SkipReason(NEVER_REQUESTED)
    if not figures["requests"]:
        return SkipReason(f"No open request in {store.TABLE}: nothing to delete this week.")
    return RunRequest(tags={"data_deletion/trigger": "weekly_schedule"})


@sensor(
    job=data_deletion_job,
    minimum_interval_seconds=900,
    default_status=DefaultSensorStatus.RUNNING,
    tags=OWNER.tags(),
    description=f"Runs {JOB_NAME} when a request has waited longer than DATA_DELETION_MAX_WAIT_HOURS "
    f"({DEFAULT_MAX_WAIT_HOURS} h unless set).",
)
def data_deletion_overdue_sensor(
    context: SensorEvaluationContext, clickhouse: ClickHouseResource
) -> RunRequest | SkipReason:
    """ClickHouse is open only for one small query, and not at all while a deletion run is queued or running.

    The settings are read at each tick: a bad `DATA_DELETION_*` value fails the tick naming the variable.
    """
    max_wait_hours = load_deletion_settings().max_wait_hours
    busy = context.instance.get_runs(RunsFilter(job_name=JOB_NAME, statuses=UNFINISHED_RUN_STATUSES), limit=1)
    if busy:
        return SkipReason(f"{JOB_NAME} run {busy[0].run_id} is queued or running.")
    parameters = {"stages": list(store.OPEN_STAGES), "hours": max_wait_hours}
    try:
        overdue = request_figures(clickhouse, store.OVERDUE_REQUESTS, parameters)
    except ClickHouseBusyError:  # the next tick looks again
        return SkipReason("The embedded ClickHouse is busy with a run; looking again at the next tick.")
    if overdue is None:
        return SkipReason(NEVER_REQUESTED)
    if not overdue["requests"]:
        return SkipReason(f"No request has waited longer than {max_wait_hours} h.")
    return RunRequest(
        run_key=f"overdue-{overdue['oldest'].isoformat()}-{overdue['requests']}",
        tags={"data_deletion/trigger": "overdue_sensor"},
    )


@sensor(
    minimum_interval_seconds=60,
    default_status=DefaultSensorStatus.RUNNING,
    tags=OWNER.tags(),
    description="Makes sure the pools a deletion run holds have their limit before any run is queued.",
)
def data_deletion_pool_limit_sensor(context: SensorEvaluationContext) -> SkipReason:
    """Write the pools' limits to the instance if they have none yet (see `ensure_pool_limits`)."""
    return ensure_pool_limits(context.instance, POOLS)


DELETION_SCHEDULES = [data_deletion_weekly_schedule]
DELETION_SENSORS = [data_deletion_overdue_sensor, data_deletion_pool_limit_sensor]
