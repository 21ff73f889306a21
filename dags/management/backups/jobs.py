"""The backup and restore jobs, their ops and schedules: weekly full backups, daily incrementals.

Every op is in the `clickhouse_backups` pool: with the instance's pool limit of 1, a backup and a restore
never run at once. Only transient ClickHouse errors are retried, inside the resource.
"""

from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from dagster import Config, Failure, OpExecutionContext, Output, ScheduleDefinition, job, op
from pydantic import Field

from dags.common import ClickHouseClient, ClickHouseError, ClickHouseResource, JobOwners
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
from dags.management.backups.shards import backup_hosts, shard_storage, shard_tables
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


def _take_on(
    client: ClickHouseClient,
    storage: BackupStorage,
    config: BackupConfig,
    tables: Sequence[str],
    now: datetime,
    log: Callable[[str], None],
) -> BackupResult:
    """One host's backup of those of `tables` it has, into `storage`."""
    storage.check_access()  # a missing bucket or refused keys fail here, before anything is written
    base = choose_base(config.kind, storage.list_backups(), now)
    if config.kind == "incremental" and base is None:
        log("No finished full backup yet: taking a full backup instead of an incremental")
    database = client.database
    found = existing_tables(client, database, tables)
    skipped = sorted(set(tables) - set(found))
    if skipped:
        log(f"Not in database {database!r}, skipped: {', '.join(skipped)}")
    if not found:
        raise ValueError(f"None of the tables {', '.join(tables)} exist in database {database!r}")
    return take_backup(client, storage, database, found, now, base, log, None, config.poll_interval_seconds)


def _on_shard(context: OpExecutionContext, shard: int) -> Callable[[str], None]:
    return lambda message: context.log.info(f"shard {shard}: {message}")


@op(pool=BACKUP_POOL, tags=OP_TAGS)
def take_clickhouse_backup(
    context: OpExecutionContext, config: BackupConfig, clickhouse: ClickHouseResource, backup_storage: BackupStorage
) -> Output[BackupResult]:
    """Back up the project's tables to CLICKHOUSE_BACKUP_URL, incrementally on the latest full when asked; on a
    cluster, each shard's tables into the shard's own folder."""
    try:
        if config.kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {config.kind!r}")
        now = datetime.now(UTC)
        cluster = clickhouse.get_cluster(context)
        if not cluster.is_cluster:
            with clickhouse.get_client(context) as client:
                result = _take_on(client, backup_storage, config, config.tables, now, context.log.info)
        else:
            shards = {}
            for shard, host in backup_hosts(cluster).items():
                with cluster.client(host) as client:
                    shards[shard] = _take_on(
                        client, shard_storage(backup_storage, shard), config, shard_tables(config.tables), now,
                        _on_shard(context, shard),
                    )  # fmt: skip
            result = BackupResult.of_shards(shards, backup_storage.display(f"shard-*/{shards[min(shards)].name}"))
    except _EXPECTED_ERRORS as error:
        raise _fail(backup_storage, error) from None
    rows = result.table_rows()
    metadata = {
        "backup": result.url,
        "kind": result.kind,
        "base_backup": result.base_name or "",
        "tables": sorted(rows),
        "rows": sum(rows.values()),
        **{f"rows_{table}": count for table, count in rows.items()},
        "bytes": result.bytes,
        "bytes_with_base": result.bytes_with_base,
        "files": result.files,
        "duration_seconds": result.duration_seconds,
    }
    if result.shards:
        metadata["shards"] = len(result.shards)
    return Output(result, metadata=metadata)


@op(pool=BACKUP_POOL, tags=OP_TAGS)
def verify_clickhouse_backup(
    context: OpExecutionContext,
    config: VerifyConfig,
    backup: BackupResult,
    clickhouse: ClickHouseResource,
    backup_storage: BackupStorage,
) -> Output[BackupResult]:
    """Prove the backup: restore it into a scratch database and compare every table with the source (on a
    cluster, each shard's backup on the shard's host)."""
    scratch = f"backup_verify_{context.run_id[:8]}"
    poll = config.poll_interval_seconds
    restored: dict[str, dict[str, int]] = {}
    try:
        if not backup.shards:
            with clickhouse.get_client(context) as client:
                restored = verify_backup(client, backup_storage, backup, scratch, context.log.info, None, poll)
        else:
            cluster = clickhouse.get_cluster(context)
            hosts = backup_hosts(cluster)
            for shard, shard_backup in sorted(backup.shards.items()):
                with cluster.client(hosts[shard]) as client:
                    storage = shard_storage(backup_storage, shard)
                    verified = verify_backup(
                        client, storage, shard_backup, scratch, _on_shard(context, shard), None, poll
                    )
                restored.update({f"shard_{shard}_{table}": value for table, value in verified.items()})
    except _EXPECTED_ERRORS as error:
        raise _fail(backup_storage, error) from None
    metadata = {"backup": backup.url, "verified_tables": sorted(restored)}
    metadata.update({f"restored_rows_{table}": value["rows"] for table, value in restored.items()})
    return Output(backup, metadata=metadata)


def _apply_retention(storage: BackupStorage, now: datetime, log: Callable[[str], None]) -> tuple[list, list, int]:
    retention_days = storage.retention()
    delete, keep = plan_retention(
        storage.list_backups(), lambda name: storage.contents(name).base_name, now, retention_days
    )
    for name in delete:
        count = storage.delete(name)
        log(f"Deleted backup {storage.display(name)} ({count} objects)")
    return delete, keep, retention_days


@op(pool=BACKUP_POOL, tags=OP_TAGS)
def apply_backup_retention(
    context: OpExecutionContext, backup: BackupResult, backup_storage: BackupStorage
) -> Output[list[str]]:
    """Delete backups older than CLICKHOUSE_BACKUP_RETENTION_DAYS, keeping the bases of kept incrementals (on a
    cluster, in each shard's folder)."""
    now = datetime.now(UTC)
    try:
        if not backup.shards:
            delete, keep, retention_days = _apply_retention(backup_storage, now, context.log.info)
        else:
            delete, keep = [], []
            for shard in sorted(backup.shards):
                storage = shard_storage(backup_storage, shard)
                deleted, kept, retention_days = _apply_retention(storage, now, _on_shard(context, shard))
                delete += [f"shard-{shard}/{name}" for name in deleted]
                keep += [f"shard-{shard}/{name}" for name in kept]
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
