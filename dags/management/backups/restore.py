"""Restoring a backup: into a new database by default, over existing tables only with `replace: true`,
and then every table or none."""

from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from dagster import Config, Failure, OpExecutionContext, Output, op
from pydantic import Field

from dags.common import ClickHouseClient, ClickHouseCluster, ClickHouseError, ClickHouseResource, JobOwners
from dags.events import SHARDED_EVENTS
from dags.management.backups.backup import TableFingerprint, fingerprint
from dags.management.backups.follow import BackupOperationError, follow_operation, started_id
from dags.management.backups.pool import BACKUP_POOL
from dags.management.backups.shards import distributed_events_over, shard_storage, shard_tables
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
    """Restore `tables` of backup `name` into `target_database`; returns what the restored tables hold.

    Existing tables are refused unless `replace`. Every table is first restored beside its live name
    (which proves the backup reads back before anything changes), then all are swapped in, or none
    (see `swap`); last, the dictionaries that read them are reloaded.
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


def what_to_restore(storage: BackupStorage, backup_name: str, wanted: Sequence[str]) -> tuple[str, str, list[str]]:
    """The backup (`latest`: the newest finished), its source database and the tables to restore from it."""
    storage.check_access()
    complete = [backup.name for backup in storage.list_backups() if backup.complete]
    name = complete[-1] if backup_name == "latest" and complete else backup_name
    if name not in complete:
        raise RestoreRefused(f"No finished backup {name!r} in {storage.display()}")
    in_backup = {table: database for database, table in storage.contents(name).tables}
    tables = list(wanted) or sorted(in_backup)
    unknown = sorted(set(tables) - set(in_backup))
    if unknown:
        raise RestoreRefused(f"Backup {name} has no table {', '.join(unknown)}; it has {', '.join(sorted(in_backup))}")
    sources = {in_backup[table] for table in tables}
    if len(sources) != 1:
        raise RestoreRefused(f"Tables {', '.join(tables)} come from several databases; restore them one at a time")
    return name, sources.pop(), tables


def restore_shards(
    context: OpExecutionContext,
    cluster: ClickHouseCluster,
    storage: BackupStorage,
    config: RestoreConfig,
    target: str,
) -> tuple[str, dict[str, TableFingerprint]]:
    """Put each shard's backup back on the shard's hosts (each host holding its own copy of `sharded_events`);
    a restore into a new database gets an `events` Distributed over the restored shards."""
    storages = {shard: shard_storage(storage, shard) for shard in cluster.shards}
    for shard_store in storages.values():
        shard_store.check_access()
    finished = [{backup.name for backup in s.list_backups() if backup.complete} for s in storages.values()]
    on_every_shard = sorted(set.intersection(*finished))
    name = on_every_shard[-1] if config.backup_name == "latest" and on_every_shard else config.backup_name
    if name not in on_every_shard:
        raise RestoreRefused(f"No backup {name!r} finished on every shard in {storage.display()}/shard-<n>")
    wanted = shard_tables(config.tables)
    in_any = {table for s in storages.values() for _, table in s.contents(name).tables}
    unknown = sorted(set(wanted) - in_any)
    if unknown:
        raise RestoreRefused(f"Backup {name} has no table {', '.join(unknown)} on any shard; it has {sorted(in_any)}")
    holding = cluster.hosts_with_own_copy(SHARDED_EVENTS)
    restored: dict[str, TableFingerprint] = {}
    for shard, shard_store in sorted(storages.items()):
        in_backup = {table for _, table in shard_store.contents(name).tables}
        tables = [table for table in wanted if table in in_backup] if wanted else sorted(in_backup)
        _, source, tables = what_to_restore(shard_store, name, tables)
        for host in [host for host in holding if host.shard == shard]:
            say = lambda message, log=context.log.info, where=host: log(f"{where}: {message}")  # noqa: E731
            warn = lambda message, log=context.log.warning, where=host: log(f"{where}: {message}")  # noqa: E731
            with cluster.client(host) as client:
                done = restore_tables(
                    client, shard_store, name, source, tables, target, config.replace, say, warn, None,
                    config.poll_interval_seconds,
                )  # fmt: skip
            restored.update({f"shard_{shard}_{table}": value for table, value in done.items()})
    if any(key.endswith(f"_{SHARDED_EVENTS}") for key in restored):
        cluster.map_hosts(holding, lambda client: client.command(distributed_events_over(cluster, target)), "events")
    return name, restored


@op(pool=BACKUP_POOL, tags=JobOwners.TEAM_PLATFORM.tags())
def restore_clickhouse_backup(
    context: OpExecutionContext, config: RestoreConfig, clickhouse: ClickHouseResource, backup_storage: BackupStorage
) -> Output[dict]:
    """Restore tables of a backup, by default every table into a new database `restored_<time>`; on a cluster,
    each shard's backup on its own hosts."""
    target = config.target_database or f"restored_{datetime.now(UTC).strftime('%Y%m%d%H%M%S')}"
    try:
        cluster = clickhouse.get_cluster(context)
        if cluster.is_cluster:
            name, restored = restore_shards(context, cluster, backup_storage, config, target)
        else:
            name, source, tables = what_to_restore(backup_storage, config.backup_name, config.tables)
            with clickhouse.get_client(context) as client:
                restored = restore_tables(
                    client, backup_storage, name, source, tables, target, config.replace, context.log.info,
                    context.log.warning, None, config.poll_interval_seconds,
                )  # fmt: skip
    except (RestoreRefused, SwapError, BackupOperationError, BackupStorageError, ClickHouseError) as error:
        raise Failure(description=backup_storage.scrub(str(error)), allow_retries=False) from None
    metadata = {
        "backup": backup_storage.display(name),
        "target_database": target,
        "tables": sorted(restored),
        **{f"rows_{table}": value.rows for table, value in restored.items()},
    }
    return Output({"backup": name, "target_database": target}, metadata=metadata)
