"""Run health in ClickHouse: every run's start, success, failure and cancellation in `dagster_run_status`,
so run health can be queried next to the data it produced."""

from collections.abc import Sequence
from datetime import UTC, datetime

from dagster import (
    DagsterRunStatus,
    DefaultSensorStatus,
    RunStatusSensorContext,
    SensorDefinition,
    run_status_sensor,
)

from dags.common import ClickHouseResource
from dags.operations.owners import location_of, run_owner

# One row per run and status; re-recording the same transition (a sensor tick retried) collapses on merge.
CREATE_RUN_STATUS_TABLE = """
CREATE TABLE IF NOT EXISTS dagster_run_status
(
    run_id String,
    job LowCardinality(String),
    location LowCardinality(String),
    owner LowCardinality(String),
    status LowCardinality(String),
    time DateTime64(3, 'UTC'),
    recorded_at DateTime64(3, 'UTC') DEFAULT now64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(recorded_at)
PARTITION BY toYYYYMM(time)
ORDER BY (job, run_id, status)
"""

INSERT_RUN_STATUS = """
INSERT INTO dagster_run_status (run_id, job, location, owner, status, time)
SELECT {run_id:String}, {job:String}, {location:String}, {owner:String}, {status:String},
       fromUnixTimestamp64Milli({time_ms:Int64}, 'UTC')
"""

RECORDED_STATUSES: Sequence[DagsterRunStatus] = (
    DagsterRunStatus.STARTED,
    DagsterRunStatus.SUCCESS,
    DagsterRunStatus.FAILURE,
    DagsterRunStatus.CANCELED,
)


def record_run_status(
    context: RunStatusSensorContext, clickhouse: ClickHouseResource, status: DagsterRunStatus
) -> None:
    """Write the run's transition to `dagster_run_status`; ClickHouse is open only for this write."""
    run = context.dagster_run
    record = context.instance.get_run_record_by_id(run.run_id)
    when = None
    if record is not None:
        when = record.start_time if status == DagsterRunStatus.STARTED else record.end_time
    row = {
        "run_id": run.run_id,
        "job": run.job_name,
        "location": location_of(run),
        "owner": run_owner(run),
        "status": status.value,
        "time_ms": int((when or datetime.now(UTC).timestamp()) * 1000),
    }
    with clickhouse.get_client() as client:
        client.command(CREATE_RUN_STATUS_TABLE)
        client.command(INSERT_RUN_STATUS, row)
    context.log.info(f"Recorded {status.value} of run {run.run_id} ({run.job_name})")


def _run_status_sensor(status: DagsterRunStatus) -> SensorDefinition:
    @run_status_sensor(
        run_status=status,
        name=f"run_status_{status.value.lower()}",
        description=f"Records every run that reaches {status.value} in the ClickHouse table dagster_run_status.",
        monitor_all_code_locations=True,
        default_status=DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=30,
    )
    def record(context: RunStatusSensorContext, clickhouse: ClickHouseResource) -> None:
        record_run_status(context, clickhouse, status)

    return record


run_status_sensors: list[SensorDefinition] = [_run_status_sensor(status) for status in RECORDED_STATUSES]
