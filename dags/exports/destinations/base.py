"""What every export destination offers: an access check, clean-up after a crash, and an atomic publish."""

import shutil
import tempfile
from pathlib import Path

# Temporary files end in this suffix and start with a dot: outside `*/date=*/*.parquet` and hidden from
# Hive-style readers (Spark, Trino) that skip dot files.
IN_PROGRESS_SUFFIX = ".inprogress"
PARQUET_CONTENT_TYPE = "application/vnd.apache.parquet"


class DestinationAccessError(Exception):
    """The destination refused us (credentials, permissions, missing bucket): retrying will not help.

    `code` is what the destination answered (`NoSuchBucket`, `SignatureDoesNotMatch`, `404`), when it did.
    """

    def __init__(self, message: str, code: str = ""):
        super().__init__(message)
        self.code = code


class DestinationUnreachableError(Exception):
    """The destination did not answer in the middle of a run: a later try may get through."""


class Destination:
    """One open destination for one run. Paths are relative to the destination root, `/`-separated."""

    url: str  # without credentials: safe for logs, metadata and the UI
    supports_clickhouse_writes: bool = False

    def check_access(self) -> None:
        """Fail fast, before any data moves, when the destination refuses us."""

    def clean_up(self, folder: str) -> list[str]:
        """Remove what a crashed run left in `folder` (temporary files, incomplete uploads)."""
        return []

    def staging_path(self, folder: str, run_id: str) -> Path:
        """Where the Parquet writer writes the day's file before it is published."""
        raise NotImplementedError

    def publish(self, staging: Path, folder: str) -> None:
        """Make `staging` the day's `data.parquet` in one atomic step; `staging` is consumed."""
        raise NotImplementedError

    def write_small_file(self, path: str, content: bytes) -> None:
        """Write a small file (the manifest) atomically."""
        raise NotImplementedError

    def exists(self, path: str) -> bool:
        """Whether a file is published at `path` (data deletion rewrites only days already exported)."""
        raise NotImplementedError

    def read_bytes(self, path: str) -> bytes:
        """The content of the file at `path` (data deletion reads rewritten files back to verify them)."""
        raise NotImplementedError

    def delete(self, path: str) -> None:
        """Remove the file at `path` (the destination check's probe)."""
        raise NotImplementedError

    def url_of(self, path: str) -> str:
        return f"{self.url.rstrip('/')}/{path}"


def local_staging_root() -> Path:
    return Path(tempfile.gettempdir()) / "dagster-exports"


def clean_staging_folder(staging: Path) -> list[str]:
    if not staging.exists():
        return []
    leftovers = [str(path) for path in staging.iterdir()]
    shutil.rmtree(staging, ignore_errors=True)
    return leftovers
