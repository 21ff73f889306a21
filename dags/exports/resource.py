"""The export destination resource: where the Parquet exports go, and how the data gets there."""

import os
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Literal
from urllib.parse import unquote, urlparse

from dagster import ConfigurableResource, InitResourceContext, ResourceDefinition, ResourceDependency, resource
from pydantic import Field

from dags.exports.destinations.base import Destination, DestinationAccessError
from dags.exports.destinations.gcs import GCSBucket
from dags.exports.destinations.local import LocalFolder
from dags.exports.destinations.postgres import PostgresTable, parse_postgres_url
from dags.exports.destinations.s3 import S3Bucket
from dags.exports.settings import ExportSettings, load_export_settings

if TYPE_CHECKING:  # loaded when used: together they would triple a code server's start time
    from dagster_aws.s3 import S3Resource
    from dagster_gcp import GCSResource
    from google.cloud import storage


def parse_destination_url(url: str) -> tuple[str, str, str]:
    """`(scheme, bucket or folder, prefix)` of a destination URL (for Postgres: `("postgresql", connection
    URL, table)`); a bad URL raises a ValueError that says why."""
    parsed = urlparse(url.strip())
    if parsed.scheme in ("postgresql", "postgres"):
        target = parse_postgres_url(url)
        return "postgresql", target.conninfo, target.qualified_name
    if parsed.username or parsed.password:
        raise ValueError(
            "Export destination URLs must not carry credentials: put them in AWS_* variables (S3) or "
            "GOOGLE_APPLICATION_CREDENTIALS (GCS)."
        )
    if parsed.query or parsed.fragment:
        raise ValueError(f"Export destination URL {url!r} must not have a query string or fragment.")
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost") or not parsed.path.startswith("/"):
            raise ValueError(f"Export destination {url!r}: use an absolute path, file:///absolute/path")
        return "file", unquote(parsed.path), ""
    if parsed.scheme in ("s3", "gs"):
        if not parsed.netloc:
            raise ValueError(f"Export destination {url!r} names no bucket: use {parsed.scheme}://bucket/prefix")
        if any(char in parsed.path for char in "*?{}"):
            raise ValueError(f"Export destination {url!r}: the prefix must not contain * ? {{ }}")
        return parsed.scheme, parsed.netloc, parsed.path.strip("/")
    raise ValueError(
        f"Export destination URL {url!r} is not supported: use file:///absolute/path, s3://bucket/prefix, "
        "gs://bucket/prefix or postgresql://user@host:5432/db?table=name."
    )


# The credentials an export may take from variables of its own (`credentials_env`), by their standard names.
CREDENTIAL_NAMES = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_ENDPOINT_URL",
    "GOOGLE_APPLICATION_CREDENTIALS",
    "PGPASSWORD",
)


class ExportDestination(ConfigurableResource):
    """Where the Parquet exports go, and how the data gets there.

    Credentials never go in this resource's config: S3 uses the AWS variables boto3 reads
    (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_PROFILE`,
    `AWS_REGION`, `AWS_ENDPOINT_URL`), GCS the application default credentials (and
    `STORAGE_EMULATOR_HOST`).

    Example:
        ```python
        Definitions(
            assets=[events_export],
            resources={
                "clickhouse": ClickHouseResource(url=EnvVar("CLICKHOUSE_URL")),
                "export_destination": ExportDestination(
                    url="s3://our-exports/warehouse", s3=S3Resource(), gcs=GCSResource()
                ),
            },
        )
        ```
    """

    url: str = Field(description="file:///absolute/path, s3://bucket/prefix or gs://bucket/prefix.")
    write_method: Literal["stream", "clickhouse"] = Field(
        default="stream",
        description=(
            "stream: Arrow batches from ClickHouse into a Parquet writer, then an upload (any destination). "
            "clickhouse: ClickHouse writes Parquet straight to S3 with s3() (S3 only; the server must reach "
            "the bucket)."
        ),
    )
    clickhouse_s3_endpoint_url: str | None = Field(
        default=None,
        description=(
            "The S3 endpoint as the ClickHouse server reaches it, for write_method=clickhouse; "
            "by default the endpoint this process uses."
        ),
    )
    row_group_rows: int = Field(default=100_000, ge=1, description="Rows per Parquet row group.")
    batch_rows: int = Field(
        default=65_536, ge=1, description="Rows per Arrow batch streamed from ClickHouse (max_block_size)."
    )
    part_size_bytes: int = Field(
        default=64 * 1024 * 1024,
        ge=5 * 1024 * 1024,
        description="S3 multipart upload part size; files larger than this are uploaded in parts.",
    )
    clickhouse_write_timeout_seconds: int = Field(
        default=3600,
        ge=1,
        description="write_method=clickhouse: the longest one day's write by ClickHouse may take (max_execution_time).",
    )
    credentials_env: dict[str, str] = Field(
        default={},
        description=(
            "Standard credential names (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, "
            "AWS_ENDPOINT_URL, GOOGLE_APPLICATION_CREDENTIALS, PGPASSWORD) mapped to the names of the variables "
            "holding them, read when the run opens the destination. Names only, never values."
        ),
    )
    # Optional, so that a local folder loads neither client library; the default reads the usual environment.
    s3: ResourceDependency["S3Resource | None"] = None
    gcs: ResourceDependency["GCSResource | None"] = None

    def credential(self, name: str) -> str | None:
        """The value of a standard credential from the variable `credentials_env` names for it; None when it
        names none. A named variable that is unset fails, naming it, before any data moves."""
        variable = self.credentials_env.get(name)
        if variable is None:
            return None
        value = os.environ.get(variable)
        if not value:
            raise DestinationAccessError(
                f"The variable {variable} (the {name} of {self.url}, named in credentials_env) is not set "
                "in the environment of the process running Dagster."
            )
        return value

    def credentials_hint(self) -> str:
        """Where this destination's credentials come from, for error messages: which variable to fix."""
        if not self.credentials_env:
            return ""
        return (
            " Its credentials_env reads "
            + ", ".join(f"{name} in {variable}" for name, variable in sorted(self.credentials_env.items()))
            + "."
        )

    def open(self) -> Destination | PostgresTable:
        scheme, location, prefix = parse_destination_url(self.url)
        if self.write_method == "clickhouse" and scheme != "s3":
            raise ValueError(f"write_method=clickhouse writes to S3 only; {self.url} is not an s3:// URL.")
        if scheme == "file":
            return LocalFolder(Path(location))
        if scheme == "postgresql":
            return PostgresTable(
                self.url, self.credential("PGPASSWORD"), self.credentials_env.get("PGPASSWORD", "PGPASSWORD")
            )
        from botocore.exceptions import BotoCoreError
        from google.auth.exceptions import GoogleAuthError

        try:
            if scheme == "s3":
                return S3Bucket(self._s3_resource(), location, prefix, self.part_size_bytes)
            return GCSBucket(self._gcs_resource(), location, prefix)
        except (BotoCoreError, GoogleAuthError) as error:
            # No credentials found, an unknown AWS_PROFILE, a bad region: say so instead of a client traceback.
            raise DestinationAccessError(f"Cannot open a client for {self.url}: {error}") from None

    def _s3_resource(self) -> "S3Resource":
        """The S3 resource, with the export's own credentials when `credentials_env` names them."""
        names = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL")
        if not any(name in self.credentials_env for name in names):
            return self.s3 or default_s3_resource()
        from dagster_aws.s3 import S3Resource

        base = self.s3 or default_s3_resource()
        return S3Resource(
            region_name=base.region_name or os.environ.get("AWS_REGION"),
            endpoint_url=self.credential("AWS_ENDPOINT_URL") or base.endpoint_url,
            aws_access_key_id=self.credential("AWS_ACCESS_KEY_ID"),
            aws_secret_access_key=self.credential("AWS_SECRET_ACCESS_KEY"),
            aws_session_token=self.credential("AWS_SESSION_TOKEN"),
            max_attempts=base.max_attempts,
        )

    def _gcs_resource(self) -> "GCSResource | ServiceAccountGCS":
        """The GCS resource, or the export's own service account key when `credentials_env` names one."""
        key_file = self.credential("GOOGLE_APPLICATION_CREDENTIALS")
        if key_file is None:
            return self.gcs or default_gcs_resource()
        if not Path(key_file).is_file():
            variable = self.credentials_env["GOOGLE_APPLICATION_CREDENTIALS"]
            raise DestinationAccessError(f"{variable} names no readable key file (GOOGLE_APPLICATION_CREDENTIALS).")
        return ServiceAccountGCS(key_file)


class ServiceAccountGCS:
    """A GCS client from one service account key file, as `GCSBucket` asks a resource for it."""

    def __init__(self, key_file: str):
        self.key_file = key_file

    def get_client(self) -> "storage.Client":
        from google.cloud import storage

        return storage.Client.from_service_account_json(self.key_file)


S3_CLIENT_MAX_ATTEMPTS = 3


def default_s3_resource() -> "S3Resource":
    from dagster_aws.s3 import S3Resource

    # Fewer tries than boto3's default: the step's retry policy outlasts an outage, and a wrong endpoint is
    # reported in seconds instead of a minute of silent backoff.
    return S3Resource(max_attempts=S3_CLIENT_MAX_ATTEMPTS)


def default_gcs_resource() -> "GCSResource":
    from dagster_gcp import GCSResource

    return GCSResource()


def export_destination_from_env(settings: ExportSettings | None = None) -> ExportDestination:
    """The export destination as the environment configures it (`EXPORT_DESTINATION_URL` and friends)."""
    settings = settings or load_export_settings()
    url = settings.effective_destination_url
    local = url.startswith("file:")
    return ExportDestination(
        url=url,
        write_method="stream" if local else settings.write_method,
        clickhouse_s3_endpoint_url=None if local else settings.clickhouse_s3_endpoint_url,
        s3=default_s3_resource() if url.startswith("s3:") else None,
        gcs=default_gcs_resource() if url.startswith("gs:") else None,
    )


@resource(
    description="Where the Parquet exports go: EXPORT_DESTINATION_URL, EXPORT_WRITE_METHOD and "
    "EXPORT_CLICKHOUSE_S3_ENDPOINT_URL, read when a step that uses it starts."
)
def _export_destination_from_env(_: InitResourceContext) -> ExportDestination:
    return export_destination_from_env()


@cache
def export_destination() -> ResourceDefinition:
    """The `export_destination` resource of this process: the destination the environment configures, built
    when a step that writes or rewrites exports starts, never when a location loads, so a broken export setting
    fails those steps (naming the variable) and leaves the other jobs of a location running. One object, so
    that `dags.definitions` can merge the locations that use it (data exports, data deletion)."""
    return _export_destination_from_env
