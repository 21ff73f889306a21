"""Following a BACKUP or RESTORE started with `ASYNC` through `system.backups` until it ends."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from dags.common import ClickHouseClient
from dags.management.backups.sql import OPERATION_STATUS

DONE = {"BACKUP_CREATED", "RESTORED"}
FAILED = {"BACKUP_FAILED", "RESTORE_FAILED", "BACKUP_CANCELLED", "RESTORE_CANCELLED"}
PROGRESS_LOG_SECONDS = 10.0


class BackupOperationError(Exception):
    """ClickHouse reported a backup or restore as failed; the message is the engine's own."""


def engine_error(error: str) -> str:
    """The engine's message without the stack trace ClickHouse appends in `system.backups.error`."""
    return error.split(", Stack trace", 1)[0].split("\n", 1)[0].strip()


def started_id(result: Any) -> str:
    """The operation id from what `BACKUP ... ASYNC` answers: `id\tstatus` over HTTP and embedded,
    `[(id, status)]` (one row) over the native protocol."""
    if isinstance(result, list) and len(result) == 1 and isinstance(result[0], list | tuple):
        result = result[0]
    if isinstance(result, list | tuple):
        return str(result[0])
    return str(result).split("\t", 1)[0].strip()


def follow_operation(
    client: ClickHouseClient,
    operation_id: str,
    what: str,
    log: Callable[[str], None],
    poll_seconds: float = 1.0,
) -> dict[str, Any]:
    """Wait until the operation ends; log progress every `PROGRESS_LOG_SECONDS`; return its last status row.

    Raises `BackupOperationError` with ClickHouse's message when it failed.
    """
    started = time.monotonic()
    last_log = started
    while True:
        rows = client.query_rows(OPERATION_STATUS, {"id": operation_id})
        if not rows:
            raise BackupOperationError(f"{what}: ClickHouse has no operation {operation_id} in system.backups")
        status = rows[0]
        if status["status"] in DONE:
            log(
                f"{what}: {status['status']} after {time.monotonic() - started:.1f}s, "
                f"{status['num_files']} files, {status['total_size']} bytes"
            )
            return status
        if status["status"] in FAILED:
            raise BackupOperationError(f"{what} failed: {engine_error(status['error'])}")
        now = time.monotonic()
        if now - last_log >= PROGRESS_LOG_SECONDS:
            log(
                f"{what}: {status['status']} for {now - started:.0f}s, "
                f"{status['num_files']} files and {status['total_size']} bytes so far, "
                f"{status['files_read']} files read"
            )
            last_log = now
        time.sleep(poll_seconds)
