"""The data platform team's backup settings, read from the environment.

`CLICKHOUSE_BACKUP_URL` is read when the location loads (a bad one fails this location with the variable's
name); `CLICKHOUSE_BACKUP_RETENTION_DAYS` only when the retention step runs, so a bad value fails that step
and leaves the backups themselves, the restores and the other jobs loading.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import PurePosixPath
from urllib.parse import urlparse

from dags.common import env_positive_int

BACKUP_URL_VARIABLE = "CLICKHOUSE_BACKUP_URL"
RETENTION_DAYS_VARIABLE = "CLICKHOUSE_BACKUP_RETENTION_DAYS"
DEFAULT_RETENTION_DAYS = 30
# A century: the cutoff is now - timedelta(days=N), which Python cannot represent before year 1.
MAX_RETENTION_DAYS = 100 * 366

# S3 bucket names: 3 to 63 lowercase letters, digits, dots and hyphens (ClickHouse's path-style parsing
# needs at least 3 characters too).
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


@dataclass(frozen=True)
class BackupLocation:
    """Where backups go: an S3 bucket and prefix, or a folder on the ClickHouse server (`file://`)."""

    scheme: str  # "s3" or "file"
    bucket: str  # S3 only, "" for a folder
    prefix: str  # the S3 key prefix without slashes at the ends, or the absolute folder path

    @property
    def url(self) -> str:
        """The location as written in `CLICKHOUSE_BACKUP_URL` (never carries credentials)."""
        if self.scheme == "s3":
            return f"s3://{self.bucket}/{self.prefix}".rstrip("/")
        return f"file://{self.prefix}"

    def key(self, *parts: str) -> str:
        """An S3 key (or a path) under the prefix."""
        return "/".join(part.strip("/") for part in (self.prefix, *parts) if part.strip("/"))


def parse_backup_url(url: str, variable: str = BACKUP_URL_VARIABLE) -> BackupLocation:
    """`s3://bucket/prefix` or `file:///absolute/folder`; anything else raises `ValueError` naming it."""
    parsed = urlparse(url.strip())
    if parsed.scheme == "s3":
        if "@" in parsed.netloc or parsed.password or parsed.username:
            raise ValueError(
                f"{variable} must not carry credentials: put them in AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
            )
        if not _BUCKET.match(parsed.netloc or ""):
            raise ValueError(
                f"{variable} must look like s3://bucket/prefix with a bucket name of 3 to 63 lowercase letters, "
                f"digits, dots or hyphens; got {url!r}"
            )
        if parsed.query or parsed.fragment:
            raise ValueError(f"{variable} must look like s3://bucket/prefix without '?' or '#'; got {url!r}")
        return BackupLocation("s3", parsed.netloc, parsed.path.strip("/"))
    if parsed.scheme == "file":
        if parsed.netloc or not parsed.path.startswith("/") or parsed.query:
            raise ValueError(f"{variable} must look like file:///absolute/folder; got {url!r}")
        return BackupLocation("file", "", str(PurePosixPath(parsed.path)))
    raise ValueError(f"{variable} must start with s3:// (s3://bucket/prefix) or file:///; got {url!r}")


@dataclass(frozen=True)
class BackupSettings:
    """Where ClickHouse backups go and how long they are kept.

    `location` is None when `CLICKHOUSE_BACKUP_URL` is unset: the location loads, and the backup jobs
    fail at their first step saying which variable to set.
    """

    location: BackupLocation | None
    retention_days: int


def load_backup_location() -> BackupLocation | None:
    """`CLICKHOUSE_BACKUP_URL` as it is now; None when unset."""
    url = os.environ.get(BACKUP_URL_VARIABLE, "").strip()
    return parse_backup_url(url) if url else None


def load_retention_days() -> int:
    """`CLICKHOUSE_BACKUP_RETENTION_DAYS` as it is now (30 when unset); a bad value raises naming it."""
    return env_positive_int(RETENTION_DAYS_VARIABLE, DEFAULT_RETENTION_DAYS, MAX_RETENTION_DAYS)


def load_backup_settings() -> BackupSettings:
    """Read the backup settings now (not at import), so tests and CLIs can change the environment."""
    return BackupSettings(location=load_backup_location(), retention_days=load_retention_days())
