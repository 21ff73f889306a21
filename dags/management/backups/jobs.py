"""The backup and restore jobs, their ops and schedules: weekly full backups, daily incrementals.

Every op is in the ``clickhouse_backups`` pool: with the instance's pool limit of 1, a backup and a restore
never run at once. Only transient ClickHouse errors are retried, inside the resource.
"""

from datetime import UTC, datetime

from dagster import Config, Failure, OpExecutionContext, Output, ScheduleDefinition, job, op
from pydantic import Field

from dags.common import ClickHouseError, ClickHouseResource, JobOwners
from dags.management.backups.backup import (
    DEFAULT_TABLES,
    KINDS,
    BackupResult,
    choose_base,
    existing_tables,
    take_backup,
)
from dags.management.backups.follow import BackupOperationError
from dags.management.backups.pool import BACKUP_POOL, clickhouse_backups_pool_limit_sensor
from dags.management.backups.restore import restore_clickhouse_backup
from dags.management.backups.retention import plan_retention
from dags.management.backups.storage import BackupStorage, BackupStorageError
from dags.management.backups.verify import BackupVerificationError, verify_backup

BACKUP_MAX_RUNTIME_SECONDS = 6 * 3600
RESTORE_MAX_RUNTIME_SECONDS = 6 * 3600
OP_TAGS = JobOwners.TEAM_PLATFORM.tags()
_EXPECTED_ERRORS = (BackupStorageError, BackupOperationError, BackupVerificationError, ClickHouseError, ValueError)


class BackupConfig(Config):
    kind: str = Field(
        default="auto",
        description="full, incremental (on the latest full; a full when there is none) or auto (incremental "
        "on a full younger than a week, else full).",
    )
    tables: list[str] = Field(
        default_factory=lambda: list(DEFAULT_TABLES), description="Tables to back up; those missing are skipped."
    )
    poll_interval_seconds: float = Field(default=1.0, description="How often to read the backup's progress.")


class VerifyConfig(Config):
    poll_interval_seconds: float = Field(default=1.0, description="How often to read the restore's progress.")


def _fail(storage: BackupStorage, error: Exception) -> Failure:
    """A step failure with the cause's message, secrets removed; not retried (retrying cannot help)."""
    return Failure(description=storage.scrub(str(error)), allow_retries=False)


@op(pool=BACKUP_POOL, tags=OP_TAGS)
def take_clickhouse_backup(
    context: OpExecutionContext, config: BackupConfig, clickhouse: ClickHouseResource, backup_storage: BackupStorage
) -> Output[BackupResult]:
    """Back up the project's tables to CLICKHOUSE_BACKUP_URL, incrementally on the latest full when asked."""
    try:
        if config.kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {config.kind!r}")
        backup_storage.check_access()  # a missing bucket or refused keys fail here, before anything is written
        now = datetime.now(UTC)
        base = choose_base(config.kind, backup_storage.list_backups(), now)
        if config.kind == "incremental" and base is None:
            context.log.info("No finished full backup yet: taking a full backup instead of an incremental")
        with clickhouse.get_client(context) as client:
            database = client.database
            tables = existing_tables(client, database, config.tables)
            skipped = sorted(set(config.tables) - set(tables))
            if skipped:
                context.log.info(f"Not in database {database!r}, skipped: {', '.join(skipped)}")
            if not tables:
                raise ValueError(f"None of the tables {', '.join(config.tables)} exist in database {database!r}")
            result = take_backup(
                client, backup_storage, database, tables, now, base, context.log.info,
                clickhouse.cluster, config.poll_interval_seconds,
            )  # fmt: skip
    except _EXPECTED_ERRORS as error:
        raise _fail(backup_storage, error) from None
    metadata = {
        "backup": result.url,
        "kind": result.kind,
        "base_backup": result.base_name or "",
        "tables": sorted(result.tables),
        "rows": sum(value.rows for value in result.tables.values()),
        **{f"rows_{table}": value.rows for table, value in result.tables.items()},
        "bytes": result.bytes,
        "bytes_with_base": result.bytes_with_base,
        "files": result.files,
        "duration_seconds": result.duration_seconds,
    }
    return Output(result, metadata=metadata)


@op(pool=BACKUP_POOL, tags=OP_TAGS)
def verify_clickhouse_backup(
    context: OpExecutionContext,
    config: VerifyConfig,
    backup: BackupResult,
    clickhouse: ClickHouseResource,
    backup_storage: BackupStorage,
) -> Output[BackupResult]:
    """Prove the backup: restore it into a scratch database and compare every table with the source."""
    scratch = f"backup_verify_{context.run_id[:8]}"
    try:
        with clickhouse.get_client(context) as client:
            restored = verify_backup(
                client, backup_storage, backup, scratch, context.log.info, clickhouse.cluster,
                config.poll_interval_seconds,
            )  # fmt: skip
    except _EXPECTED_ERRORS as error:
        raise _fail(backup_storage, error) from None
    metadata = {"backup": backup.url, "verified_tables": sorted(restored)}
    metadata.update({f"restored_rows_{table}": value["rows"] for table, value in restored.items()})
    return Output(backup, metadata=metadata)


@op(pool=BACKUP_POOL, tags=OP_TAGS)
def apply_backup_retention(
    context: OpExecutionContext, backup: BackupResult, backup_storage: BackupStorage
) -> Output[list[str]]:
    """Delete backups older than CLICKHOUSE_BACKUP_RETENTION_DAYS, keeping the bases of kept incrementals."""
    try:
        retention_days = backup_storage.retention()
        backups = backup_storage.list_backups()
        delete, keep = plan_retention(
            backups, lambda name: backup_storage.contents(name).base_name, datetime.now(UTC), retention_days
        )
        for name in delete:
            count = backup_storage.delete(name)
            context.log.info(f"Deleted backup {backup_storage.display(name)} ({count} objects)")
    except _EXPECTED_ERRORS as error:
        raise _fail(backup_storage, error) from None
    return Output(delete, metadata={"deleted": delete, "kept": keep, "retention_days": retention_days})


@job(
    tags={**OP_TAGS, "dagster/max_runtime": str(BACKUP_MAX_RUNTIME_SECONDS)},
    description="Back up the project's ClickHouse tables to CLICKHOUSE_BACKUP_URL, prove the backup by "
    "restoring it into a scratch database, then delete backups past retention.",
)
def clickhouse_backup_job() -> None:
    apply_backup_retention(verify_clickhouse_backup(take_clickhouse_backup()))


@job(
    tags={**OP_TAGS, "dagster/max_runtime": str(RESTORE_MAX_RUNTIME_SECONDS)},
    description="Restore tables from a backup: into a new database unless replace: true is set.",
)
def clickhouse_restore_job() -> None:
    restore_clickhouse_backup()


def _backup_schedule(name: str, cron: str, kind: str, when: str) -> ScheduleDefinition:
    return ScheduleDefinition(
        description=f"{when} at 03:15 UTC, a {kind} backup of the ClickHouse tables, verified by restoring it. "
        "Off until turned on.",
        name=name,
        job=clickhouse_backup_job,
        cron_schedule=cron,
        execution_timezone="UTC",
        run_config={"ops": {"take_clickhouse_backup": {"config": {"kind": kind}}}},
        tags=OP_TAGS,
    )


# Full backups on Sundays, incrementals on the other days, at 03:15 UTC.
clickhouse_full_backup_schedule = _backup_schedule("clickhouse_full_backup_schedule", "15 3 * * 0", "full", "Sundays")
clickhouse_incremental_backup_schedule = _backup_schedule(
    "clickhouse_incremental_backup_schedule", "15 3 * * 1-6", "incremental", "Monday to Saturday"
)

BACKUP_JOBS = [clickhouse_backup_job, clickhouse_restore_job]
BACKUP_SCHEDULES = [clickhouse_full_backup_schedule, clickhouse_incremental_backup_schedule]
BACKUP_SENSORS = [clickhouse_backups_pool_limit_sensor]
