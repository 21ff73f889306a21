"""The `clickhouse_backups` pool: backups and restores never run at the same time.

Every backup and restore op is in this pool; `dagster.yaml` gives pools a default limit of 1 with run
granularity, so a second backup or restore run stays QUEUED until the first ends.
"""

from dagster import DefaultSensorStatus, SensorEvaluationContext, SkipReason, sensor

from dags.common import JobOwners, ensure_pool_limits

BACKUP_POOL = "clickhouse_backups"


@sensor(
    minimum_interval_seconds=60,
    default_status=DefaultSensorStatus.RUNNING,
    tags=JobOwners.TEAM_PLATFORM.tags(),
    description=f"Makes sure the {BACKUP_POOL} pool has its limit before any backup or restore is queued.",
)
def clickhouse_backups_pool_limit_sensor(context: SensorEvaluationContext) -> SkipReason:
    """Write the pool's limit to the instance if it has none yet (see `ensure_pool_limits`)."""
    return ensure_pool_limits(context.instance, [BACKUP_POOL])
