"""Backups on a cluster (`CLICKHOUSE_CLUSTER`): one backup per shard, in a folder named by the shard.

Each shard's first host backs up what it holds itself: its `sharded_events` (the rows `events` reads from
that shard) and the project's other tables it has (`exchange_rate` on every host; the pre-aggregates and
the request table on the host `CLICKHOUSE_URL` names). `shard-1/2026-11-26T031500Z-full/`,
`shard-2/2026-11-26T031500Z-full/`: each shard folder is a location of its own, so listing, incrementals
on a base, retention and restore work per shard exactly as on one host. The `Distributed` `events` holds
no rows and is not backed up; a restore into a new database creates it over the restored shards.
"""

from __future__ import annotations

from collections.abc import Sequence

from dags.common import ClickHouseCluster, Host
from dags.events import SHARDED_EVENTS, distributed_events_statement
from dags.management.backups.storage import BackupStorage


def shard_storage(storage: BackupStorage, shard: int) -> BackupStorage:
    """The location of one shard's backups: `<CLICKHOUSE_BACKUP_URL>/shard-<n>`."""
    fields = {name: getattr(storage, name) for name in type(storage).model_fields}
    return type(storage)(**{**fields, "url": f"{(storage.url or '').rstrip('/')}/shard-{shard}"})


def shard_tables(tables: Sequence[str]) -> list[str]:
    """The tables to back up on each shard's host: `events` is the shard's `sharded_events`."""
    return list(dict.fromkeys(SHARDED_EVENTS if table == "events" else table for table in tables))


def backup_hosts(cluster: ClickHouseCluster) -> dict[int, Host]:
    """The host each shard's backup is taken on and restored to: the shard's first replica."""
    return {shard: hosts[0] for shard, hosts in sorted(cluster.shards.items())}


def distributed_events_over(cluster: ClickHouseCluster, database: str) -> str:
    """The `CREATE TABLE` of `events` in `database`, Distributed over that database's shards."""
    return distributed_events_statement(cluster.name or "", database)
