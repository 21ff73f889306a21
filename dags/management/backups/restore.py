"""Restoring a backup: into a new database by default, over existing tables only with ``replace: true``,
and then every table or none."""

from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from dagster import Config, Failure, OpExecutionContext, Output, op
from pydantic import Field

from dags.common import ClickHouseClient, ClickHouseError, ClickHouseResource, JobOwners
from dags.management.backups.backup import TableFingerprint, fingerprint
from dags.management.backups.follow import BackupOperationError, follow_operation, started_id
from dags.management.backups.pool import BACKUP_POOL
from dags.management.backups.sql import CREATE_DATABASE, TABLE_EXISTS, restore_statement
from dags.management.backups.storage import BackupStorage, BackupStorageError
from dags.management.backups.swap import (
    Swap,
    SwapError,
    drop_staged,
    reload_dependent_dictionaries,
    staged_name,
    swap_in,
)


class RestoreRefused(Exception):
    """The restore would overwrite tables, or names what is not there; nothing was changed."""


class RestoreConfig(Config):
    backup_name: str = Field(
        default="latest", description="The backup to restore, e.g. 2026-11-26T031500Z-full; 'latest' for the newest."
    )
    tables: list[str] = Field(default_factory=list, description="Tables to restore; empty for all in the backup.")
    target_database: str = Field(
        default="", description="Database to restore into; empty for a new database restored_<time>."
    )
    replace: bool = Field(
        default=False, description="Replace tables that exist in the target database (the live ones included)."
    )
    poll_interval_seconds: float = Field(default=1.0, description="How often to read the restore's progress.")


def restore_tables(
    client: ClickHouseClient,
    storage: BackupStorage,
    name: str,
    source_database: str,
    tables: Sequence[str],
    target_database: str,
    replace: bool,
    log: Callable[[str], None],
    warn: Callable[[str], None],
    cluster: str | None = None,
    poll_seconds: float = 1.0,
) -> dict[str, TableFingerprint]:
    """Restore ``tables`` of backup ``name`` into ``target_database``; returns what the restored tables hold.

    Existing tables are refused unless ``replace``. Every table is first restored beside its live name
    (which proves the backup reads back before anything changes), then all are swapped in, or none
    (see ``swap``); last, the dictionaries that read them are reloaded.
    """
    existing = [t for t in tables if client.command(TABLE_EXISTS, {"database": target_database, "table": t})]
    if existing and not replace:
        raise RestoreRefused(
            f"Refusing to restore over existing tables {target_database}.{', '.join(existing)}: "
            "set replace: true in the run config to replace them, or restore into another target_database."
        )
    engine, parameters = storage.engine(name)
    client.command(CREATE_DATABASE, {"database": target_database})
    if existing:
        warn(
            f"REPLACING {len(existing)} existing tables in database {target_database!r} "
            f"({', '.join(existing)}) with their contents from backup {name}: replace: true was set"
        )
    stamp = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    swaps = [Swap(target_database, t, staged_name(t, stamp), t in existing) for t in tables]
    keep: list[str] = []
    try:
        statement = restore_statement(
            source_database, tables, target_database, engine, cluster, {s.table: s.staged for s in swaps}
        )
        answer = client.command(statement, parameters)
        follow_operation(client, started_id(answer), f"Restore of {name} into {target_database}", log, poll_seconds)
        swap_in(client, swaps, log, cluster)
    except SwapError as error:
        keep = error.kept
        raise
    finally:  # the live tables' previous contents, or the restored copies of a restore that did not finish
        drop_staged(client, swaps, cluster, keep)
    reload_dependent_dictionaries(client, target_database, tables, log, cluster)
    return fingerprint(client, target_database, tables)


@op(pool=BACKUP_POOL, tags=JobOwners.TEAM_PLATFORM.tags())
def restore_clickhouse_backup(
    context: OpExecutionContext, config: RestoreConfig, clickhouse: ClickHouseResource, backup_storage: BackupStorage
) -> Output[dict]:
    """Restore tables of a backup, by default every table into a new database ``restored_<time>``."""
    try:
        backup_storage.check_access()
        complete = [backup.name for backup in backup_storage.list_backups() if backup.complete]
        name = complete[-1] if config.backup_name == "latest" and complete else config.backup_name
        if name not in complete:
            raise RestoreRefused(f"No finished backup {name!r} in {backup_storage.display()}")
        contents = backup_storage.contents(name)
        in_backup = {table: database for database, table in contents.tables}
        tables = config.tables or sorted(in_backup)
        unknown = sorted(set(tables) - set(in_backup))
        if unknown:
            raise RestoreRefused(
                f"Backup {name} has no table {', '.join(unknown)}; it has {', '.join(sorted(in_backup))}"
            )
        sources = {in_backup[table] for table in tables}
        if len(sources) != 1:
            raise RestoreRefused(f"Tables {', '.join(tables)} come from several databases; restore them one at a time")
        target = config.target_database or f"restored_{datetime.now(UTC).strftime('%Y%m%d%H%M%S')}"
        with clickhouse.get_client(context) as client:
            restored = restore_tables(
                client,
                backup_storage,
                name,
                sources.pop(),
                tables,
                target,
                config.replace,
                context.log.info,
                context.log.warning,
                clickhouse.cluster,
                config.poll_interval_seconds,
            )
    except (RestoreRefused, SwapError, BackupOperationError, BackupStorageError, ClickHouseError) as error:
        raise Failure(description=backup_storage.scrub(str(error)), allow_retries=False) from None
    metadata = {
        "backup": backup_storage.display(name),
        "target_database": target,
        "tables": sorted(restored),
        **{f"rows_{table}": value.rows for table, value in restored.items()},
    }
    return Output({"backup": name, "target_database": target}, metadata=metadata)
