"""Proving a backup: restore it into a scratch database and compare every table with the source."""

from __future__ import annotations

from collections.abc import Callable

from dags.common import ClickHouseClient, ClickHouseError
from dags.management.backups.backup import BackupResult, fingerprint
from dags.management.backups.follow import BackupOperationError, follow_operation, started_id
from dags.management.backups.sql import CREATE_DATABASE, DROP_DATABASE, restore_statement
from dags.management.backups.storage import BackupStorage


class BackupVerificationError(Exception):
    """The backup did not restore, or restored different rows than the source held when it was taken."""


def verify_backup(
    client: ClickHouseClient,
    storage: BackupStorage,
    backup: BackupResult,
    scratch_database: str,
    log: Callable[[str], None],
    cluster: str | None = None,
    poll_seconds: float = 1.0,
) -> dict[str, dict[str, int]]:
    """Restore every table of `backup` into `scratch_database`, compare, then drop the scratch database.

    Returns per table the rows and checksum restored; raises `BackupVerificationError` naming each table
    that differs, or quoting ClickHouse when the restore itself fails (missing or corrupted files).
    """
    tables = sorted(backup.tables)
    engine, parameters = storage.engine(backup.name)
    try:
        client.command(CREATE_DATABASE, {"database": scratch_database})
        try:
            answer = client.command(
                restore_statement(backup.database, tables, scratch_database, engine, cluster), parameters
            )
            follow_operation(
                client, started_id(answer), f"Restore of {backup.name} for verification", log, poll_seconds
            )
        except (BackupOperationError, ClickHouseError) as error:
            raise BackupVerificationError(
                f"Backup {backup.url} does not restore: {storage.scrub(str(error))}"
            ) from None
        try:
            restored = fingerprint(client, scratch_database, tables)
        except ClickHouseError as error:
            message = storage.scrub(str(error))
            raise BackupVerificationError(f"Backup {backup.url} restores unreadable data: {message}") from None
    finally:
        client.command(DROP_DATABASE, {"database": scratch_database})
    differences = [
        f"{table}: {restored[table].rows} rows (checksum {restored[table].checksum}) restored, "
        f"{expected.rows} rows (checksum {expected.checksum}) in the source at backup time"
        for table, expected in sorted(backup.tables.items())
        if restored[table] != expected
    ]
    if differences:
        raise BackupVerificationError(f"Backup {backup.url} restores different data: " + "; ".join(differences))
    log(f"Backup {backup.name} restores identically: {len(tables)} tables, rows and checksums equal to the source")
    return {table: {"rows": value.rows, "checksum": value.checksum} for table, value in restored.items()}
