"""The ``clickhouse_backups`` pool: backups and restores never run at the same time.

Every backup and restore op is in this pool; ``dagster.yaml`` gives pools a default limit of 1 with run
granularity, so a second backup or restore run stays QUEUED until the first ends.
"""

from dagster import DefaultSensorStatus, SensorEvaluationContext, SkipReason, sensor

from dags.common import JobOwners

BACKUP_POOL = "clickhouse_backups"


@sensor(
    minimum_interval_seconds=60,
    default_status=DefaultSensorStatus.RUNNING,
    tags=JobOwners.TEAM_PLATFORM.tags(),
    description=f"Makes sure the {BACKUP_POOL} pool has its limit before any backup or restore is queued.",
)
def clickhouse_backups_pool_limit_sensor(context: SensorEvaluationContext) -> SkipReason:
    """Write the pool's limit to the instance if it has none yet.

    Dagster stores a pool's default limit only while deciding its first dequeue pass for that pool, and
    decides that pass as if the pool were unlimited: on a fresh instance the first queued backup and restore
    could start together. Writing the limit at daemon start closes that gap; a limit an operator set stays.
    """
    storage = context.instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return SkipReason("This instance's storage has no concurrency pools; backup runs are not limited.")
    limits = {pool.name: pool.limit for pool in storage.get_pool_limits()}
    if BACKUP_POOL in limits:
        return SkipReason(f"Pool {BACKUP_POOL!r} is limited to {limits[BACKUP_POOL]} run(s) at a time.")
    if context.instance.global_op_concurrency_default_limit:
        storage.initialize_concurrency_limit_to_default(BACKUP_POOL)
    else:
        storage.set_concurrency_slots(BACKUP_POOL, 1)
    limit = {pool.name: pool.limit for pool in storage.get_pool_limits()}.get(BACKUP_POOL)
    return SkipReason(f"Set the limit of pool {BACKUP_POOL!r} to {limit}.")
