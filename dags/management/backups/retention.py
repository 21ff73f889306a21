"""Retention: backups older than the retention period are deleted, never the base of a backup that is kept."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from dags.management.backups.storage import StoredBackup


def plan_retention(
    backups: Sequence[StoredBackup],
    base_of: Callable[[str], str | None],
    now: datetime,
    retention_days: int,
) -> tuple[list[str], list[str]]:
    """Which backups to delete and which to keep, each list oldest first.

    Kept: every backup taken within `retention_days` and the base of every kept incremental
    (`base_of(name)` reads it from the backup itself). Everything else, unfinished backups included, goes.
    """
    cutoff = now - timedelta(days=retention_days)
    keep = {backup.name for backup in backups if backup.taken_at >= cutoff}
    for backup in backups:
        if backup.name in keep and backup.kind == "incr" and backup.complete:
            base = base_of(backup.name)
            if base:
                keep.add(base)
    names = [backup.name for backup in backups]
    return [name for name in names if name not in keep], [name for name in names if name in keep]
