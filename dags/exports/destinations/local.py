"""A folder on a local or mounted disk."""

import hashlib
import os
from pathlib import Path

from dags.exports.destinations.base import IN_PROGRESS_SUFFIX, Destination, DestinationAccessError
from dags.exports.manifest import DATA_FILE


class LocalFolder(Destination):
    """A folder on a local or mounted disk: write a hidden temporary file, fsync, rename over the old one."""

    def __init__(self, root: Path):
        self.root = root
        self.url = root.as_uri()

    def check_access(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise DestinationAccessError(
                f"Cannot create the export folder {self.root} (EXPORT_DESTINATION_URL): {error}"
            ) from error
        if not os.access(self.root, os.W_OK):
            raise DestinationAccessError(
                f"The export folder {self.root} (EXPORT_DESTINATION_URL) is not writable by this process."
            )

    def clean_up(self, folder: str) -> list[str]:
        directory = self.root / folder
        if not directory.exists():
            return []
        leftovers = sorted(directory.glob(f".*{IN_PROGRESS_SUFFIX}"))
        for path in leftovers:
            path.unlink(missing_ok=True)
        return [str(path) for path in leftovers]

    def _temporary_name(self, path: Path, run_id: str) -> Path:
        return path.with_name(f".{path.name}.{run_id[:8]}{IN_PROGRESS_SUFFIX}")

    def staging_path(self, folder: str, run_id: str) -> Path:
        directory = self.root / folder
        directory.mkdir(parents=True, exist_ok=True)
        return self._temporary_name(directory / DATA_FILE, run_id)

    def _replace(self, temporary: Path, final: Path) -> None:
        with open(temporary, "rb") as file:
            os.fsync(file.fileno())
        os.replace(temporary, final)
        directory = os.open(final.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)

    def publish(self, staging: Path, folder: str) -> None:
        self._replace(staging, self.root / folder / DATA_FILE)

    def exists(self, path: str) -> bool:
        return (self.root / path).is_file()

    def read_bytes(self, path: str) -> bytes:
        return (self.root / path).read_bytes()

    def write_small_file(self, path: str, content: bytes) -> None:
        final = self.root / path
        temporary = self._temporary_name(final, hashlib.sha256(content).hexdigest())
        temporary.write_bytes(content)
        self._replace(temporary, final)
