"""Taking a backup: which tables, full or incremental on which base, the source's fingerprint, then BACKUP."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from dags.common import ClickHouseClient
from dags.management.backups.follow import follow_operation, started_id
from dags.management.backups.sql import EXISTING_TABLES, TABLE_FINGERPRINT, backup_statement
from dags.management.backups.storage import BackupStorage, StoredBackup, backup_name

# The project's tables worth a backup; those missing in a deployment are skipped.
DEFAULT_TABLES = (
    "events",
    "exchange_rate",
    "web_pre_aggregated_stats",
    "web_pre_aggregated_bounces",
    "data_deletion_requests",
)
KINDS = ("auto", "full", "incremental")
# `auto` takes an incremental on the latest full while that full is younger than this.
FULL_BACKUP_MAX_AGE = timedelta(days=7)


@dataclass(frozen=True)
class TableFingerprint:
    """A table's row count and content checksum (`sum(cityHash64(*))`): what a restore must reproduce."""

    rows: int
    checksum: int


@dataclass
class BackupResult:
    """A finished backup and what its tables held when it was taken."""

    name: str
    kind: str  # "full" or "incr"
    base_name: str | None
    database: str
    url: str  # without credentials
    tables: dict[str, TableFingerprint] = field(default_factory=dict)
    bytes: int = 0  # what this backup adds to the bucket (an incremental: only what changed since its base)
    bytes_with_base: int = 0  # the data it restores, base included (system.backups.total_size)
    files: int = 0
    duration_seconds: float = 0.0
    # On a cluster: each shard's own backup, by shard number (this one then only sums them up).
    shards: dict[int, BackupResult] = field(default_factory=dict)

    @classmethod
    def of_shards(cls, shards: dict[int, BackupResult], url: str) -> BackupResult:
        """One backup of the whole cluster: every shard's, taken at the same time under the same name."""
        first = shards[min(shards)]
        kind = "full" if all(shard.kind == "full" for shard in shards.values()) else "incr"
        return cls(
            first.name, kind, first.base_name, first.database, url,
            bytes=sum(shard.bytes for shard in shards.values()),
            bytes_with_base=sum(shard.bytes_with_base for shard in shards.values()),
            files=sum(shard.files for shard in shards.values()),
            duration_seconds=round(sum(shard.duration_seconds for shard in shards.values()), 3),
            shards=dict(shards),
        )  # fmt: skip

    def table_rows(self) -> dict[str, int]:
        """Rows per table at backup time; on a cluster per shard and table (`shard_2_sharded_events`)."""
        if not self.shards:
            return {table: value.rows for table, value in self.tables.items()}
        return {
            f"shard_{number}_{table}": value.rows
            for number, shard in sorted(self.shards.items())
            for table, value in shard.tables.items()
        }


def existing_tables(client: ClickHouseClient, database: str, wanted: Sequence[str]) -> list[str]:
    """The wanted tables that exist in `database`, in name order."""
    rows = client.query_rows(EXISTING_TABLES, {"database": database, "tables": list(wanted)})
    return [row["name"] for row in rows]


def fingerprint(client: ClickHouseClient, database: str, tables: Sequence[str]) -> dict[str, TableFingerprint]:
    """Row count and content checksum of each table, now."""
    result = {}
    for table in tables:
        row = client.query_rows(TABLE_FINGERPRINT, {"database": database, "table": table})[0]
        result[table] = TableFingerprint(int(row["rows"]), int(row["checksum"] or 0))
    return result


def choose_base(kind: str, backups: Sequence[StoredBackup], now: datetime) -> StoredBackup | None:
    """The full backup an incremental builds on, or None for a full backup.

    `full`: none. `incremental`: the latest complete full, or none when there is no full yet (the
    backup becomes a full). `auto`: the latest complete full if it is younger than a week.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    fulls = [backup for backup in backups if backup.kind == "full" and backup.complete]
    latest = fulls[-1] if fulls else None
    if kind == "full" or latest is None:
        return None
    if kind == "auto" and now - latest.taken_at >= FULL_BACKUP_MAX_AGE:
        return None
    return latest


def take_backup(
    client: ClickHouseClient,
    storage: BackupStorage,
    database: str,
    tables: Sequence[str],
    taken_at: datetime,
    base: StoredBackup | None,
    log: Callable[[str], None],
    cluster: str | None = None,
    poll_seconds: float = 1.0,
) -> BackupResult:
    """Fingerprint the tables, then BACKUP them (on `base` when given) and follow it to the end."""
    name = backup_name(taken_at, "incr" if base else "full")
    result = BackupResult(
        name, "incr" if base else "full", base.name if base else None, database, storage.display(name)
    )
    result.tables = fingerprint(client, database, tables)
    engine, parameters = storage.engine(name)
    base_engine = None
    if base is not None:
        base_engine, base_parameters = storage.engine(base.name, prefix="base_")
        parameters = {**parameters, **base_parameters}
    started = time.monotonic()
    answer = client.command(backup_statement(database, tables, engine, base_engine, cluster), parameters)
    operation_id = started_id(answer)
    on_base = f" on {base.name}" if base else ""
    log(f"Backup {result.url} ({result.kind}{on_base}) of {', '.join(tables)} started as {operation_id}")
    status = follow_operation(client, operation_id, f"Backup {name}", log, poll_seconds)
    result.duration_seconds = round(time.monotonic() - started, 3)
    stored = storage.objects(name)
    result.bytes = sum(stored.values())
    result.bytes_with_base = int(status["total_size"])
    result.files = len(stored)
    return result
