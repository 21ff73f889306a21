"""ClickHouse backups to object storage, proven by restoring them (the data platform team's jobs)."""

from typing import Any

from dags.management.backups.jobs import (
    BACKUP_JOBS,
    BACKUP_SCHEDULES,
    BACKUP_SENSORS,
    clickhouse_backup_job,
    clickhouse_restore_job,
)
from dags.management.backups.storage import BackupStorage, backup_storage_from_env


def backup_resources() -> dict[str, Any]:
    """The resources the backup jobs need besides the shared ones."""
    return {"backup_storage": backup_storage_from_env()}


__all__ = [
    "BACKUP_JOBS",
    "BACKUP_SCHEDULES",
    "BACKUP_SENSORS",
    "BackupStorage",
    "backup_resources",
    "backup_storage_from_env",
    "clickhouse_backup_job",
    "clickhouse_restore_job",
]
