"""A Google Cloud Storage bucket and prefix, through dagster-gcp's GCS resource."""

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dags.exports.destinations.base import (
    IN_PROGRESS_SUFFIX,
    PARQUET_CONTENT_TYPE,
    Destination,
    DestinationAccessError,
    clean_staging_folder,
    local_staging_root,
)
from dags.exports.manifest import DATA_FILE

if TYPE_CHECKING:
    from dagster_gcp import GCSResource


class GCSBucket(Destination):
    """A Google Cloud Storage bucket and prefix: an object appears when its upload finishes."""

    def __init__(self, resource: "GCSResource", bucket: str, prefix: str):
        self.client = resource.get_client()
        self.bucket = self.client.bucket(bucket)
        self.prefix = prefix.strip("/")
        self.url = f"gs://{bucket}/{self.prefix}".rstrip("/")

    def key(self, path: str) -> str:
        return f"{self.prefix}/{path}" if self.prefix else path

    def _call(self, what: str, operation: Callable[[], Any]) -> Any:
        from google.api_core import exceptions
        from google.auth.exceptions import DefaultCredentialsError

        try:
            return operation()
        except DefaultCredentialsError as error:
            raise DestinationAccessError(
                f"No Google credentials to {what} {self.url}: set GOOGLE_APPLICATION_CREDENTIALS or run "
                f"`gcloud auth application-default login` ({error})."
            ) from None
        except (exceptions.Unauthorized, exceptions.Forbidden, exceptions.NotFound) as error:
            raise DestinationAccessError(
                f"GCS refused to {what} {self.url} ({error.code}: {error.message}). Check the credentials "
                "(GOOGLE_APPLICATION_CREDENTIALS), that the bucket (EXPORT_DESTINATION_URL) exists and that they may "
                "list and write objects.",
                code=str(error.code),
            ) from None

    def check_access(self) -> None:
        self._call("list", lambda: list(self.bucket.list_blobs(prefix=self.key(""), max_results=1)))

    def _staging_folder(self, folder: str) -> Path:
        return local_staging_root() / "gcs" / self.bucket.name / self.key(folder)

    def clean_up(self, folder: str) -> list[str]:
        # An unfinished resumable upload never becomes an object (GCS expires it); only local files remain.
        return clean_staging_folder(self._staging_folder(folder))

    def staging_path(self, folder: str, run_id: str) -> Path:
        directory = self._staging_folder(folder)
        directory.mkdir(parents=True, exist_ok=True)
        return directory / f".{DATA_FILE}.{run_id[:8]}{IN_PROGRESS_SUFFIX}"

    def publish(self, staging: Path, folder: str) -> None:
        from google.cloud.storage.retry import DEFAULT_RETRY

        blob = self.bucket.blob(self.key(f"{folder}/{DATA_FILE}"))
        # A whole-object upload is idempotent, so it is safe to retry unconditionally.
        self._call(
            "upload to",
            lambda: blob.upload_from_filename(str(staging), content_type=PARQUET_CONTENT_TYPE, retry=DEFAULT_RETRY),
        )

    def write_small_file(self, path: str, content: bytes) -> None:
        from google.cloud.storage.retry import DEFAULT_RETRY

        blob = self.bucket.blob(self.key(path))
        self._call(
            "write to",
            lambda: blob.upload_from_string(content, content_type="application/json", retry=DEFAULT_RETRY),
        )

    def exists(self, path: str) -> bool:
        return bool(self._call("read", lambda: self.bucket.blob(self.key(path)).exists()))

    def read_bytes(self, path: str) -> bytes:
        return self._call("read", lambda: self.bucket.blob(self.key(path)).download_as_bytes())

    def delete(self, path: str) -> None:
        self._call("delete from", lambda: self.bucket.blob(self.key(path)).delete())
