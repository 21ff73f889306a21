"""Daily Parquet exports of events and web analytics pre-aggregates to a folder, S3 or GCS, exactly once.

Users own their data: these assets copy each day to their own bucket, on a schedule and in backfills.
The layout is a contract that outside readers rely on (they glob ``*/date=*/*.parquet``)::

    <destination>/<dataset>/date=YYYY-MM-DD/data.parquet     one zstd Parquet file per day
    <destination>/<dataset>/date=YYYY-MM-DD/_manifest.json   rows, bytes, checksum, schema, run id

Every day is written in one atomic step, so a reader sees each day exactly once, old or new, never a
partial file or a second copy: a local file is written under a hidden temporary name (outside the glob)
and renamed; an S3 object appears when its (multipart) upload completes; a GCS object when its upload
finishes. The manifest is written after the data file. A rerun first cleans up what a crashed run left
(incomplete multipart uploads, temporary files).

Two ways to move the data, chosen per destination (``ExportDestination.write_method``):

- ``stream`` (any destination): ClickHouse streams Arrow record batches into a Parquet writer, row group
  by row group (memory is bounded by the row group, not the day), then the file is published.
- ``clickhouse`` (S3 only): ClickHouse writes the Parquet file straight to the bucket with the ``s3()``
  table function; no data passes through Python. The server must be able to reach the bucket.

UUID columns are exported as their canonical 36-character strings: every Parquet reader (pyarrow,
pandas, Spark, DuckDB, BigQuery, Snowflake) reads those as is, with no byte-order or extension-type
question, and both ways of writing give the same schema.
"""

import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote, unquote, urlparse

from dagster import (
    AssetExecutionContext,
    AssetsDefinition,
    BackfillPolicy,
    ConfigurableResource,
    DailyPartitionsDefinition,
    Failure,
    MaterializeResult,
    MetadataValue,
    ResourceDependency,
    asset,
    build_schedule_from_partitioned_job,
    define_asset_job,
)
from pydantic import Field

from dags.common import (
    EXTERNAL_API_RETRY_POLICY,
    ClickHouseClient,
    ClickHouseError,
    ClickHouseResource,
    JobOwners,
    Settings,
    is_transient,
    load_settings,
    server_message,
)
from dags.events import create_events_table
from dags.web_preaggregated import (
    BOUNCES_TABLE,
    DIMENSIONS,
    STATS_TABLE,
    WEB_ANALYTICS_DAILY_PARTITIONS,
    create_web_preaggregated_tables,
    web_pre_aggregated_bounces,
    web_pre_aggregated_stats,
)

if TYPE_CHECKING:  # loaded when used: together they would triple a code server's start time
    import pyarrow as pa
    from dagster_aws.s3 import S3Resource
    from dagster_gcp import GCSResource

DATA_FILE = "data.parquet"
MANIFEST_FILE = "_manifest.json"
# Temporary files end in this suffix and start with a dot: outside `*/date=*/*.parquet` and hidden from
# Hive-style readers (Spark, Trino) that skip dot files.
IN_PROGRESS_SUFFIX = ".inprogress"
MANIFEST_VERSION = 1
PARQUET_CONTENT_TYPE = "application/vnd.apache.parquet"

# A day's export runs at most this long before Dagster's run monitoring stops it (seconds, per run).
EXPORT_MAX_RUNTIME_SECONDS = 4 * 3600


# --- What is exported: one SELECT per dataset, a day at a time --------------------------------------------

# Every column of the `events` contract. Sorted by the table's own sorting key (`events.uuid` is the column,
# not the string alias) so ClickHouse reads the day in order instead of sorting it in memory: memory stays
# flat however big the day, and the same day always gives the same file.
EVENTS_EXPORT_QUERY = """
SELECT
    toString(uuid) AS uuid,
    event,
    properties,
    timestamp,
    team_id,
    distinct_id,
    toString(person_id) AS person_id,
    `$session_id`,
    inserted_at
FROM events
WHERE toDate(timestamp) = {day:Date}
ORDER BY team_id, toDate(timestamp), event, cityHash64(distinct_id), cityHash64(events.uuid)
"""


_DIMENSIONS = ", ".join(DIMENSIONS)

# A pre-aggregate's rows for the day with its aggregate states merged into plain numbers: rows of the same
# key not yet merged by the AggregatingMergeTree are combined here. Hours become DateTime64(3) because
# Parquet has no seconds unit (the Arrow output of a DateTime would otherwise be a bare integer).
WEB_STATS_EXPORT_QUERY = f"""
SELECT * REPLACE (toDateTime64(period_bucket, 3, 'UTC') AS period_bucket)
FROM
(
    SELECT
        team_id,
        period_bucket,
        {_DIMENSIONS},
        pathname,
        uniqMerge(persons_uniq_state) AS persons,
        uniqMerge(sessions_uniq_state) AS sessions,
        sumMerge(pageviews_count_state) AS pageviews
    FROM {STATS_TABLE}
    WHERE toDate(period_bucket) = {{day:Date}}
    GROUP BY team_id, period_bucket, {_DIMENSIONS}, pathname
)
ORDER BY ALL
"""

WEB_BOUNCES_EXPORT_QUERY = f"""
SELECT * REPLACE (toDateTime64(period_bucket, 3, 'UTC') AS period_bucket)
FROM
(
    SELECT
        team_id,
        period_bucket,
        {_DIMENSIONS},
        entry_pathname,
        end_pathname,
        uniqMerge(persons_uniq_state) AS persons,
        uniqMerge(sessions_uniq_state) AS sessions,
        sumMerge(pageviews_count_state) AS pageviews,
        sumMerge(bounces_count_state) AS bounces,
        sumMerge(total_session_duration_state) AS total_session_duration,
        sumMerge(total_session_count_state) AS total_session_count
    FROM {BOUNCES_TABLE}
    WHERE toDate(period_bucket) = {{day:Date}}
    GROUP BY team_id, period_bucket, {_DIMENSIONS}, entry_pathname, end_pathname
)
ORDER BY ALL
"""


@dataclass(frozen=True)
class ExportDataset:
    """A dataset exported one day at a time: its folder name (a contract), the day's SELECT, and how to
    create the source table when missing (so a fresh install exports empty days instead of failing)."""

    name: str
    query: str  # takes {day:Date}
    create_source: Callable[[ClickHouseClient], None]


EVENTS_DATASET = ExportDataset("events", EVENTS_EXPORT_QUERY, create_events_table)
WEB_STATS_DATASET = ExportDataset(STATS_TABLE, WEB_STATS_EXPORT_QUERY, create_web_preaggregated_tables)
WEB_BOUNCES_DATASET = ExportDataset(BOUNCES_TABLE, WEB_BOUNCES_EXPORT_QUERY, create_web_preaggregated_tables)


def day_folder(dataset: str, day: date) -> str:
    """The folder of one day of a dataset, relative to the destination (a contract)."""
    return f"{dataset}/date={day.isoformat()}"


# --- The Parquet file -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ParquetFileInfo:
    """What the manifest says about a written file."""

    rows: int
    bytes: int
    row_groups: int
    checksum: dict[str, str]
    schema: list[dict[str, Any]]


def schema_description(schema: "pa.Schema") -> list[dict[str, Any]]:
    return [{"name": f.name, "type": str(f.type), "nullable": f.nullable} for f in schema]


def fixed_size_row_groups(batches: "Iterator[pa.RecordBatch]", rows_per_group: int) -> "Iterator[pa.Table]":
    """Regroup record batches into tables of exactly ``rows_per_group`` rows (the last may be shorter).

    Row groups then do not depend on how ClickHouse happened to cut its blocks, so the same rows always
    give the same file; memory holds at most one row group plus one batch.
    """
    import pyarrow as pa

    pending: list[pa.RecordBatch] = []
    pending_rows = 0
    for batch in batches:
        if batch.num_rows == 0:
            continue
        pending.append(batch)
        pending_rows += batch.num_rows
        while pending_rows >= rows_per_group:
            table = pa.Table.from_batches(pending)
            yield table.slice(0, rows_per_group)
            rest = table.slice(rows_per_group)
            pending, pending_rows = rest.to_batches(), rest.num_rows
    if pending_rows:
        yield pa.Table.from_batches(pending)


def write_parquet(
    batches: "Iterator[pa.RecordBatch]", path: Path, rows_per_group: int, empty_schema: "Callable[[], pa.Schema]"
) -> None:
    """Write the batches as one zstd Parquet file at ``path``; a day without rows still gets a file.

    ``empty_schema`` gives the columns when the stream has no batch at all.
    """
    import pyarrow.parquet as pq

    writer: pq.ParquetWriter | None = None
    try:
        for group in fixed_size_row_groups(batches, rows_per_group):
            if writer is None:
                writer = pq.ParquetWriter(path, group.schema, compression="zstd")
            # One contiguous chunk per column: page boundaries then depend on the rows alone, not on where
            # ClickHouse's blocks happened to end, so the same rows always give the same bytes.
            writer.write_table(group.combine_chunks(), row_group_size=rows_per_group)
        if writer is None:
            writer = pq.ParquetWriter(path, empty_schema(), compression="zstd")
    finally:
        if writer is not None:
            writer.close()


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def describe_parquet_file(path: Path) -> ParquetFileInfo:
    import pyarrow.parquet as pq

    metadata = pq.read_metadata(path)
    return ParquetFileInfo(
        rows=metadata.num_rows,
        bytes=path.stat().st_size,
        row_groups=metadata.num_row_groups,
        checksum={"algorithm": "sha256", "value": sha256_of(path)},
        schema=schema_description(metadata.schema.to_arrow_schema()),
    )


def describe_parquet_footer(footer: bytes, size: int, checksum: dict[str, str]) -> ParquetFileInfo:
    """Describe a remote Parquet file from its footer alone (the last bytes: metadata, length, ``PAR1``)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    metadata = pq.read_metadata(pa.BufferReader(b"PAR1" + footer))
    return ParquetFileInfo(
        rows=metadata.num_rows,
        bytes=size,
        row_groups=metadata.num_row_groups,
        checksum=checksum,
        schema=schema_description(metadata.schema.to_arrow_schema()),
    )


def manifest_json(
    *, dataset: str, day: date, info: ParquetFileInfo, run_id: str, write_method: str, exported_at: datetime
) -> bytes:
    manifest = {
        "manifest_version": MANIFEST_VERSION,
        "dataset": dataset,
        "date": day.isoformat(),
        "file": DATA_FILE,
        "format": "parquet",
        "compression": "zstd",
        "rows": info.rows,
        "bytes": info.bytes,
        "row_groups": info.row_groups,
        "checksum": info.checksum,
        "schema": info.schema,
        "run_id": run_id,
        "write_method": write_method,
        "exported_at": exported_at.isoformat(),
    }
    return (json.dumps(manifest, indent=2) + "\n").encode()


# --- Destinations ---------------------------------------------------------------------------------------


class DestinationAccessError(Exception):
    """The destination refused us (credentials, permissions, missing bucket): retrying will not help."""


class Destination:
    """One open destination for one run. Paths are relative to the destination root, ``/``-separated."""

    url: str  # without credentials: safe for logs, metadata and the UI
    supports_clickhouse_writes: bool = False

    def check_access(self) -> None:
        """Fail fast, before any data moves, when the destination refuses us."""

    def clean_up(self, folder: str) -> list[str]:
        """Remove what a crashed run left in ``folder`` (temporary files, incomplete uploads)."""
        return []

    def staging_path(self, folder: str, run_id: str) -> Path:
        """Where the Parquet writer writes the day's file before it is published."""
        raise NotImplementedError

    def publish(self, staging: Path, folder: str) -> None:
        """Make ``staging`` the day's ``data.parquet`` in one atomic step; ``staging`` is consumed."""
        raise NotImplementedError

    def write_small_file(self, path: str, content: bytes) -> None:
        """Write a small file (the manifest) atomically."""
        raise NotImplementedError

    def url_of(self, path: str) -> str:
        return f"{self.url.rstrip('/')}/{path}"


def _local_staging_root() -> Path:
    return Path(tempfile.gettempdir()) / "dagster-exports"


def _clean_staging_folder(staging: Path) -> list[str]:
    if not staging.exists():
        return []
    leftovers = [str(path) for path in staging.iterdir()]
    shutil.rmtree(staging, ignore_errors=True)
    return leftovers


class LocalFolder(Destination):
    """A folder on a local or mounted disk: write a hidden temporary file, fsync, rename over the old one."""

    def __init__(self, root: Path):
        self.root = root
        self.url = root.as_uri()

    def check_access(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise DestinationAccessError(f"Cannot create the export folder {self.root}: {error}") from error
        if not os.access(self.root, os.W_OK):
            raise DestinationAccessError(f"The export folder {self.root} is not writable by this process.")

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

    def write_small_file(self, path: str, content: bytes) -> None:
        final = self.root / path
        temporary = self._temporary_name(final, hashlib.sha256(content).hexdigest())
        temporary.write_bytes(content)
        self._replace(temporary, final)


# Codes an object store answers when retrying cannot help: wrong keys, no permission, no such bucket.
S3_ACCESS_ERROR_CODES = frozenset(
    {
        "AccessDenied",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "InvalidToken",
        "ExpiredToken",
        "NoSuchBucket",
        "AllAccessDisabled",
        "403",
        "404",
    }
)


class S3Bucket(Destination):
    """An S3 (or S3-compatible) bucket and prefix: each file is one upload, multipart above the part size.

    An object appears only when its upload completes, so a killed run leaves the previous object in place
    and at most an incomplete multipart upload, which the next run for that day aborts.
    """

    supports_clickhouse_writes = True

    def __init__(self, resource: "S3Resource", bucket: str, prefix: str, part_size_bytes: int):
        self.resource = resource
        self.client = resource.get_client()
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.part_size_bytes = part_size_bytes
        self.url = f"s3://{bucket}/{self.prefix}".rstrip("/")

    def key(self, path: str) -> str:
        return f"{self.prefix}/{path}" if self.prefix else path

    def _call(self, what: str, operation: Callable[[], Any]) -> Any:
        from botocore.exceptions import ClientError, NoCredentialsError, PartialCredentialsError

        try:
            return operation()
        except (NoCredentialsError, PartialCredentialsError) as error:
            raise DestinationAccessError(
                f"No usable AWS credentials to {what} {self.url}: set AWS_ACCESS_KEY_ID and "
                f"AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) for the process running Dagster ({error})."
            ) from None
        except ClientError as error:
            code = str(error.response.get("Error", {}).get("Code", ""))
            if code in S3_ACCESS_ERROR_CODES:
                message = error.response.get("Error", {}).get("Message") or code
                raise DestinationAccessError(
                    f"S3 refused to {what} {self.url} ({code}: {message}). Check AWS_ACCESS_KEY_ID, "
                    "AWS_SECRET_ACCESS_KEY (or AWS_PROFILE), AWS_ENDPOINT_URL and AWS_REGION, that the bucket "
                    f"{self.bucket!r} exists, and that these credentials may list, write and abort uploads in it."
                ) from None
            raise

    def check_access(self) -> None:
        self._call(
            "list",
            lambda: self.client.list_objects_v2(Bucket=self.bucket, Prefix=self.key(""), MaxKeys=1),
        )

    def clean_up(self, folder: str) -> list[str]:
        prefix = self.key(folder) + "/"
        aborted = []
        listing = self._call(
            "list incomplete uploads in",
            lambda: self.client.list_multipart_uploads(Bucket=self.bucket, Prefix=prefix),
        )
        for upload in listing.get("Uploads", []):
            self._call(
                "abort an incomplete upload in",
                lambda upload=upload: self.client.abort_multipart_upload(
                    Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                ),
            )
            aborted.append(f"s3://{self.bucket}/{upload['Key']} (upload {upload['UploadId']})")
        return aborted + _clean_staging_folder(self._staging_folder(folder))

    def _staging_folder(self, folder: str) -> Path:
        return _local_staging_root() / "s3" / self.bucket / self.key(folder)

    def staging_path(self, folder: str, run_id: str) -> Path:
        directory = self._staging_folder(folder)
        directory.mkdir(parents=True, exist_ok=True)
        return directory / f".{DATA_FILE}.{run_id[:8]}{IN_PROGRESS_SUFFIX}"

    def publish(self, staging: Path, folder: str) -> None:
        from boto3.s3.transfer import TransferConfig

        config = TransferConfig(
            multipart_threshold=self.part_size_bytes, multipart_chunksize=self.part_size_bytes, max_concurrency=4
        )
        key = self.key(f"{folder}/{DATA_FILE}")
        self._call(
            "upload to",
            lambda: self.client.upload_file(
                str(staging), self.bucket, key, ExtraArgs={"ContentType": PARQUET_CONTENT_TYPE}, Config=config
            ),
        )

    def write_small_file(self, path: str, content: bytes) -> None:
        self._call(
            "write to",
            lambda: self.client.put_object(
                Bucket=self.bucket, Key=self.key(path), Body=content, ContentType="application/json"
            ),
        )

    # -- ClickHouse writing straight to the bucket --

    def clickhouse_credentials(self) -> tuple[str, str, str | None]:
        """The access key, secret and session token the boto3 client signs with, for ClickHouse's s3()."""
        import boto3

        if self.resource.aws_access_key_id and self.resource.aws_secret_access_key:
            return self.resource.aws_access_key_id, self.resource.aws_secret_access_key, self.resource.aws_session_token
        # The same chain the S3 resource's client resolves: environment, profile, instance role.
        credentials = boto3.session.Session(profile_name=self.resource.profile_name).get_credentials()
        if credentials is None:
            raise DestinationAccessError(
                f"write_method=clickhouse needs AWS credentials to hand to ClickHouse for {self.url}: "
                "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)."
            )
        frozen = credentials.get_frozen_credentials()
        return frozen.access_key, frozen.secret_key, frozen.token

    def object_url(self, endpoint_url: str, path: str) -> str:
        """A path-style HTTP URL of an object, as ClickHouse's s3() takes it."""
        return f"{endpoint_url.rstrip('/')}/{self.bucket}/{quote(self.key(path))}"

    def describe_object(self, path: str) -> ParquetFileInfo:
        """Describe the Parquet object at ``path`` from its footer (two small ranged reads)."""
        key = self.key(path)
        head = self._call("read", lambda: self.client.head_object(Bucket=self.bucket, Key=key))
        size = int(head["ContentLength"])
        tail = self._call("read", lambda: self.client.get_object(Bucket=self.bucket, Key=key, Range="bytes=-8"))
        tail_bytes = tail["Body"].read()
        if len(tail_bytes) != 8 or tail_bytes[4:] != b"PAR1":
            raise ValueError(f"{self.url_of(path)} is not a Parquet file")
        footer_length = int.from_bytes(tail_bytes[:4], "little")
        footer = self._call(
            "read",
            lambda: self.client.get_object(Bucket=self.bucket, Key=key, Range=f"bytes=-{footer_length + 8}"),
        )["Body"].read()
        checksum = {"algorithm": "s3-etag", "value": str(head["ETag"]).strip('"')}
        return describe_parquet_footer(footer, size, checksum)


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
                f"(GOOGLE_APPLICATION_CREDENTIALS), that the bucket exists and that they may list and write objects."
            ) from None

    def check_access(self) -> None:
        self._call("list", lambda: list(self.bucket.list_blobs(prefix=self.key(""), max_results=1)))

    def _staging_folder(self, folder: str) -> Path:
        return _local_staging_root() / "gcs" / self.bucket.name / self.key(folder)

    def clean_up(self, folder: str) -> list[str]:
        # An unfinished resumable upload never becomes an object (GCS expires it); only local files remain.
        return _clean_staging_folder(self._staging_folder(folder))

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


def parse_destination_url(url: str) -> tuple[str, str, str]:
    """``(scheme, bucket or folder, prefix)`` of a destination URL; a bad URL raises a ValueError that says why."""
    parsed = urlparse(url.strip())
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
        f"Export destination URL {url!r} is not supported: use file:///absolute/path, s3://bucket/prefix "
        "or gs://bucket/prefix."
    )


class ExportDestination(ConfigurableResource):
    """Where the Parquet exports go, and how the data gets there.

    Credentials never go in this resource's config: S3 uses the AWS variables boto3 reads
    (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_PROFILE``,
    ``AWS_REGION``, ``AWS_ENDPOINT_URL``), GCS the application default credentials (and
    ``STORAGE_EMULATOR_HOST``).

    Example:
        .. code-block:: python

            Definitions(
                assets=[events_export],
                resources={
                    "clickhouse": ClickHouseResource(url=EnvVar("CLICKHOUSE_URL")),
                    "export_destination": ExportDestination(
                        url="s3://our-exports/warehouse", s3=S3Resource(), gcs=GCSResource()
                    ),
                },
            )
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
    # Optional, so that a local folder loads neither client library; the default reads the usual environment.
    s3: ResourceDependency["S3Resource | None"] = None
    gcs: ResourceDependency["GCSResource | None"] = None

    def open(self) -> Destination:
        scheme, location, prefix = parse_destination_url(self.url)
        if self.write_method == "clickhouse" and scheme != "s3":
            raise ValueError(f"write_method=clickhouse writes to S3 only; {self.url} is not an s3:// URL.")
        if scheme == "file":
            return LocalFolder(Path(location))
        from botocore.exceptions import BotoCoreError
        from google.auth.exceptions import GoogleAuthError

        try:
            if scheme == "s3":
                return S3Bucket(self.s3 or default_s3_resource(), location, prefix, self.part_size_bytes)
            return GCSBucket(self.gcs or default_gcs_resource(), location, prefix)
        except (BotoCoreError, GoogleAuthError) as error:
            # No credentials found, an unknown AWS_PROFILE, a bad region: say so instead of a client traceback.
            raise DestinationAccessError(f"Cannot open a client for {self.url}: {error}") from None


def default_s3_resource() -> "S3Resource":
    from dagster_aws.s3 import S3Resource

    return S3Resource()


def default_gcs_resource() -> "GCSResource":
    from dagster_gcp import GCSResource

    return GCSResource()


def export_destination_from_env(settings: Settings | None = None) -> ExportDestination:
    """The export destination as the environment configures it (``EXPORT_DESTINATION_URL`` and friends)."""
    settings = settings or load_settings()
    url = settings.effective_export_url
    local = url.startswith("file:")
    return ExportDestination(
        url=url,
        write_method="stream" if local else settings.export_write_method,
        clickhouse_s3_endpoint_url=None if local else settings.export_clickhouse_s3_endpoint_url,
        s3=default_s3_resource() if url.startswith("s3:") else None,
        gcs=default_gcs_resource() if url.startswith("gs:") else None,
    )


# --- Exporting one day ----------------------------------------------------------------------------------

# ClickHouse writes the day's file to S3 itself. Credentials are bound parameters: they never appear in the
# statement text, its log_comment, system.query_log or error messages.
CLICKHOUSE_S3_INSERT = (
    "INSERT INTO FUNCTION s3({url:String}, {access_key_id:String}, {secret_access_key:String}, 'Parquet')\n"
)
CLICKHOUSE_S3_INSERT_WITH_TOKEN = (
    "INSERT INTO FUNCTION s3({url:String}, {access_key_id:String}, {secret_access_key:String}, "
    "{session_token:String}, 'Parquet')\n"
)


@dataclass
class DayExport:
    """What one day's export wrote."""

    day: date
    url: str
    info: ParquetFileInfo
    seconds: float
    cleaned_up: list[str] = field(default_factory=list)


ClientFactory = Callable[[], AbstractContextManager[ClickHouseClient]]


def write_streamed(
    open_client: ClientFactory,
    resource: ExportDestination,
    destination: Destination,
    dataset: ExportDataset,
    day: date,
    folder: str,
    run_id: str,
) -> ParquetFileInfo:
    """Stream the day's rows into a local Parquet file, batch by batch, then publish it in one step."""
    staging = destination.staging_path(folder, run_id)
    try:
        with open_client() as client:
            dataset.create_source(client)
            empty_query = f"SELECT * FROM ({dataset.query}) LIMIT 0"
            with client.query_arrow_stream(
                dataset.query, {"day": day}, settings={"max_block_size": resource.batch_rows}
            ) as batches:
                write_parquet(
                    batches,
                    staging,
                    resource.row_group_rows,
                    lambda: client.query_arrow(empty_query, {"day": day}).schema,
                )
        info = describe_parquet_file(staging)
        destination.publish(staging, folder)
        return info
    finally:
        staging.unlink(missing_ok=True)


def write_with_clickhouse(
    open_client: ClientFactory,
    resource: ExportDestination,
    destination: S3Bucket,
    dataset: ExportDataset,
    day: date,
    folder: str,
) -> ParquetFileInfo:
    """Have ClickHouse write the day's Parquet object to S3 itself, then describe it from its footer."""
    access_key, secret_key, token = destination.clickhouse_credentials()
    endpoint = resource.clickhouse_s3_endpoint_url or destination.client.meta.endpoint_url
    insert = CLICKHOUSE_S3_INSERT_WITH_TOKEN if token else CLICKHOUSE_S3_INSERT
    with open_client() as client:
        dataset.create_source(client)
        client.command(
            insert + dataset.query,
            {
                "day": day,
                "url": destination.object_url(endpoint, f"{folder}/{DATA_FILE}"),
                "access_key_id": access_key,
                "secret_access_key": secret_key,
                **({"session_token": token} if token else {}),
            },
            settings={
                "s3_truncate_on_insert": 1,  # replace the day's object (one PUT or multipart upload)
                "output_format_parquet_compression_method": "zstd",
                "output_format_parquet_row_group_size": resource.row_group_rows,
                "s3_max_single_part_upload_size": resource.part_size_bytes,
                "s3_min_upload_part_size": resource.part_size_bytes,
            },
        )
    return destination.describe_object(f"{folder}/{DATA_FILE}")


def export_day(
    open_client: ClientFactory,
    resource: ExportDestination,
    destination: Destination,
    dataset: ExportDataset,
    day: date,
    run_id: str,
) -> DayExport:
    """Export one day of ``dataset``: clean up leftovers, write the file in one atomic step, then the manifest."""
    started = time.monotonic()
    folder = day_folder(dataset.name, day)
    cleaned_up = destination.clean_up(folder)
    if resource.write_method == "clickhouse":
        assert isinstance(destination, S3Bucket)
        info = write_with_clickhouse(open_client, resource, destination, dataset, day, folder)
    else:
        info = write_streamed(open_client, resource, destination, dataset, day, folder, run_id)
    manifest = manifest_json(
        dataset=dataset.name,
        day=day,
        info=info,
        run_id=run_id,
        write_method=resource.write_method,
        exported_at=datetime.now(UTC),
    )
    destination.write_small_file(f"{folder}/{MANIFEST_FILE}", manifest)
    return DayExport(day, destination.url_of(f"{folder}/{DATA_FILE}"), info, time.monotonic() - started, cleaned_up)


def worth_retrying(error: BaseException) -> bool:
    """Whether the step's retry policy should try again after this error.

    The clients already retry throttling, 5xx and connection errors with backoff (boto3 in standard mode,
    the GCS client, the ClickHouse resource); a step retry covers outages longer than that. Refused
    credentials, bad configuration, a wrong query or a local disk problem will not go away by retrying.
    """
    if isinstance(error, DestinationAccessError | ValueError):
        return False
    if isinstance(error, ClickHouseError):
        return error.__cause__ is not None and is_transient(error.__cause__)
    if isinstance(error, OSError) and not isinstance(error, ConnectionError | TimeoutError):
        return False
    return True


def partition_days(context: AssetExecutionContext) -> list[date]:
    """The days of this run: one partition, or every day of a backfill range."""
    window = context.partition_time_window
    first, end = window.start.date(), window.end.date()
    return [first + timedelta(days=offset) for offset in range((end - first).days)]


def run_export(
    context: AssetExecutionContext,
    clickhouse: ClickHouseResource,
    export_destination: ExportDestination,
    dataset: ExportDataset,
) -> MaterializeResult:
    """Export every day of the run; a failing day does not stop the others, and the run then fails naming it."""
    started = time.monotonic()
    try:
        destination = export_destination.open()
        destination.check_access()
    except (ValueError, DestinationAccessError) as error:
        raise Failure(description=str(error), allow_retries=False) from None
    days = partition_days(context)
    context.log.info(
        f"Exporting {dataset.name} for {len(days)} day(s) to {destination.url} ({export_destination.write_method})"
    )
    done: list[DayExport] = []
    failed: dict[str, str] = {}
    retry_may_help = False
    for day in days:
        try:
            result = export_day(
                lambda: clickhouse.get_client(context),
                export_destination,
                destination,
                dataset,
                day,
                context.run.run_id,
            )
        except Exception as error:
            retry_may_help = retry_may_help or worth_retrying(error)
            failed[day.isoformat()] = server_message(error)
            context.log.error(f"{dataset.name} {day}: export failed: {server_message(error)}")
            continue
        for leftover in result.cleaned_up:
            context.log.warning(f"{dataset.name} {day}: removed what an earlier run left: {leftover}")
        context.log.info(
            f"{dataset.name} {day}: {result.info.rows:,} rows, {result.info.bytes:,} bytes "
            f"-> {result.url} in {result.seconds:.1f}s"
        )
        done.append(result)

    rows = sum(result.info.rows for result in done)
    seconds = time.monotonic() - started
    metadata: dict[str, Any] = {
        "destination": destination.url,
        "write_method": export_destination.write_method,
        "days": len(days),
        "files": len(done),
        "rows": rows,
        "dagster/row_count": rows,
        "bytes": sum(result.info.bytes for result in done),
        "duration_seconds": round(seconds, 3),
        "rows_per_second": round(rows / seconds, 1) if seconds > 0 else 0.0,
        "files_written": MetadataValue.json(
            {result.day.isoformat(): {"url": result.url, "rows": result.info.rows} for result in done}
        ),
    }
    if failed:
        raise Failure(
            description=f"{dataset.name}: {len(failed)} of {len(days)} day(s) failed to export: "
            + "; ".join(f"{day}: {message}" for day, message in failed.items()),
            metadata={**metadata, "failed_days": MetadataValue.json(failed)},
            allow_retries=retry_may_help,
        )
    return MaterializeResult(metadata=metadata)


# --- Assets, jobs and schedules -------------------------------------------------------------------------

# Each export asset has a pool of its own: with a limit of 1, two runs never write the same day at once
# (a second run's clean-up would abort the first one's upload). Different datasets export in parallel.
EXPORT_DAILY_PARTITIONS = DailyPartitionsDefinition(start_date=load_settings().export_start_date)
_DAYS_PER_RUN = load_settings().export_max_partitions_per_run
if _DAYS_PER_RUN < 1:
    raise ValueError(f"EXPORT_MAX_PARTITIONS_PER_RUN must be at least 1, got {_DAYS_PER_RUN}")
EXPORT_BACKFILL_POLICY = BackfillPolicy.multi_run(max_partitions_per_run=_DAYS_PER_RUN)


@asset(
    partitions_def=EXPORT_DAILY_PARTITIONS,
    backfill_policy=EXPORT_BACKFILL_POLICY,
    kinds={"clickhouse", "parquet"},
    tags=JobOwners.TEAM_DATA_EXPORTS.tags(),
    retry_policy=EXTERNAL_API_RETRY_POLICY,
    pool="exports_events",
    group_name="exports",
)
def events_export(
    context: AssetExecutionContext, clickhouse: ClickHouseResource, export_destination: ExportDestination
) -> MaterializeResult:
    """Every event of the day, every column of ``events``, as one Parquet file in the customer's destination
    (``events/date=YYYY-MM-DD/data.parquet``), so users own a full copy of their raw data."""
    return run_export(context, clickhouse, export_destination, EVENTS_DATASET)


EXPORT_RUN_TAGS = {**JobOwners.TEAM_DATA_EXPORTS.tags(), "dagster/max_runtime": str(EXPORT_MAX_RUNTIME_SECONDS)}

events_export_job = define_asset_job(
    name="events_export_job",
    selection=[events_export],
    tags=EXPORT_RUN_TAGS,
)

# Yesterday's events, early enough in the morning for late events to have arrived.
events_export_daily_schedule = build_schedule_from_partitioned_job(
    events_export_job, name="events_export_daily_schedule", hour_of_day=2, minute_of_hour=0
)

# The pre-aggregates' days up to yesterday (their own partitions include today, which is still changing).
WEB_PRE_AGGREGATED_EXPORT_PARTITIONS = DailyPartitionsDefinition(
    start_date=WEB_ANALYTICS_DAILY_PARTITIONS.start, timezone="UTC"
)


@asset(
    deps=[web_pre_aggregated_stats],
    partitions_def=WEB_PRE_AGGREGATED_EXPORT_PARTITIONS,
    backfill_policy=EXPORT_BACKFILL_POLICY,
    kinds={"clickhouse", "parquet"},
    tags=JobOwners.TEAM_DATA_EXPORTS.tags(),
    retry_policy=EXTERNAL_API_RETRY_POLICY,
    pool="exports_web_pre_aggregated_stats",
    group_name="exports",
)
def web_pre_aggregated_stats_export(
    context: AssetExecutionContext, clickhouse: ClickHouseResource, export_destination: ExportDestination
) -> MaterializeResult:
    """The day's web traffic per team, hour, pathname and visitor dimensions, with plain numbers
    (``persons``, ``sessions``, ``pageviews``), as Parquet in the customer's destination: their
    dashboards' numbers, in their own warehouse."""
    return run_export(context, clickhouse, export_destination, WEB_STATS_DATASET)


@asset(
    deps=[web_pre_aggregated_bounces],
    partitions_def=WEB_PRE_AGGREGATED_EXPORT_PARTITIONS,
    backfill_policy=EXPORT_BACKFILL_POLICY,
    kinds={"clickhouse", "parquet"},
    tags=JobOwners.TEAM_DATA_EXPORTS.tags(),
    retry_policy=EXTERNAL_API_RETRY_POLICY,
    pool="exports_web_pre_aggregated_bounces",
    group_name="exports",
)
def web_pre_aggregated_bounces_export(
    context: AssetExecutionContext, clickhouse: ClickHouseResource, export_destination: ExportDestination
) -> MaterializeResult:
    """The day's sessions per team, hour, entry and end pathname and visitor dimensions, with plain
    numbers (``persons``, ``sessions``, ``pageviews``, ``bounces``, ``total_session_duration``,
    ``total_session_count``), as Parquet in the customer's destination."""
    return run_export(context, clickhouse, export_destination, WEB_BOUNCES_DATASET)


web_pre_aggregated_exports_job = define_asset_job(
    name="web_pre_aggregated_exports_job",
    selection=[web_pre_aggregated_stats_export, web_pre_aggregated_bounces_export],
    tags=EXPORT_RUN_TAGS,
)

# Yesterday's pre-aggregates, after the web analytics job has recomputed them (00:15, at most 3 hours).
web_pre_aggregated_exports_daily_schedule = build_schedule_from_partitioned_job(
    web_pre_aggregated_exports_job, name="web_pre_aggregated_exports_daily_schedule", hour_of_day=4, minute_of_hour=0
)

EXPORT_ASSETS: list[AssetsDefinition] = [
    events_export,
    web_pre_aggregated_stats_export,
    web_pre_aggregated_bounces_export,
]
EXPORT_JOBS = [events_export_job, web_pre_aggregated_exports_job]
EXPORT_SCHEDULES = [events_export_daily_schedule, web_pre_aggregated_exports_daily_schedule]
