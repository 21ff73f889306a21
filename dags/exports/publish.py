"""Exporting one day exactly once: clean up what a crash left, write the file in one atomic step, then the
manifest. A reader sees each day exactly once, old or new, never a partial file or a second copy."""

import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

from dags.common import ClickHouseError, is_transient, server_message
from dags.exports.datasets import EVERYTHING, ExportDataset, ExportSelection, ExportWindow
from dags.exports.destinations.base import Destination, DestinationAccessError
from dags.exports.destinations.s3 import S3_ACCESS_ERROR_CODES, S3Bucket
from dags.exports.manifest import DATA_FILE, MANIFEST_FILE, manifest_json
from dags.exports.parquet import ParquetFileInfo, describe_parquet_file, write_parquet
from dags.exports.resource import ExportDestination
from dags.exports.sources import ClientFactory, SourceNotReadyError, require_source

# ClickHouse writes the day's file to S3 itself. Credentials are bound parameters: they never appear in the
# statement text, its log_comment, system.query_log or error messages.
# ClickHouse's own S3 retries per request and per write, and how long one request may stall (idle).
CLICKHOUSE_S3_RETRY_ATTEMPTS = 3
CLICKHOUSE_S3_REQUEST_TIMEOUT_MS = 30_000

# ClickHouse reads the interval for a streamed export with one thread, while this process encodes on another
# core (the stream reads ahead). More reading threads do not make it faster (the Parquet encoder is the slower
# side) but make the engine merge several sorted streams, whose buffers grow with the interval: measured on the
# embedded engine, peak memory 1.13x from a day of 167 k rows to one of 2.7 M with one thread, 1.32x with two.
STREAM_READ_THREADS = 1

CLICKHOUSE_S3_INSERT = (
    "INSERT INTO FUNCTION s3({url:String}, {access_key_id:String}, {secret_access_key:String}, 'Parquet')\n"
)
CLICKHOUSE_S3_INSERT_WITH_TOKEN = (
    "INSERT INTO FUNCTION s3({url:String}, {access_key_id:String}, {secret_access_key:String}, "
    "{session_token:String}, 'Parquet')\n"
)


@dataclass
class DayExport:
    """What one interval's export (a day, or an hour) wrote."""

    window: ExportWindow
    url: str
    info: ParquetFileInfo
    seconds: float
    cleaned_up: list[str] = field(default_factory=list)

    @property
    def day(self) -> date:
        return self.window.day

    @property
    def rows(self) -> int:
        return self.info.rows

    @property
    def bytes(self) -> int:
        return self.info.bytes


def write_streamed(
    open_client: ClientFactory,
    resource: ExportDestination,
    destination: Destination,
    dataset: ExportDataset,
    window: ExportWindow,
    folder: str,
    run_id: str,
    selection: ExportSelection = EVERYTHING,
) -> ParquetFileInfo:
    """Stream the interval's rows into a local Parquet file, batch by batch, then publish it in one step."""
    staging = destination.staging_path(folder, run_id)
    query, parameters = dataset.query(selection), dataset.parameters(window, selection)
    try:
        with open_client() as client:
            require_source(client, dataset, window.day)
            empty_query = f"SELECT * FROM ({query}) LIMIT 0"
            settings = {"max_block_size": resource.batch_rows, "max_threads": STREAM_READ_THREADS}
            with client.query_arrow_stream(
                query, parameters, settings=settings, batch_rows=resource.row_group_rows
            ) as row_groups:
                write_parquet(
                    row_groups,
                    staging,
                    lambda: client.query_arrow(empty_query, parameters).schema,
                    dataset.unique_valued_columns,
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
    window: ExportWindow,
    folder: str,
    selection: ExportSelection = EVERYTHING,
) -> ParquetFileInfo:
    """Have ClickHouse write the interval's Parquet object to S3 itself, then describe it from its footer."""
    access_key, secret_key, token = destination.clickhouse_credentials()
    endpoint = resource.clickhouse_s3_endpoint_url or destination.client.meta.endpoint_url
    insert = CLICKHOUSE_S3_INSERT_WITH_TOKEN if token else CLICKHOUSE_S3_INSERT
    settings = {
        "s3_truncate_on_insert": 1,  # replace the day's object (one PUT or multipart upload)
        "output_format_parquet_compression_method": "zstd",
        "output_format_parquet_row_group_size": resource.row_group_rows,
        "s3_max_single_part_upload_size": resource.part_size_bytes,
        "s3_min_upload_part_size": resource.part_size_bytes,
        # Bounded: the engine's own S3 retries default to hundreds of attempts with backoff, so a store answering
        # 500 to every PUT would hold the run for hours without a word.
        "s3_retry_attempts": CLICKHOUSE_S3_RETRY_ATTEMPTS,
        "s3_max_unexpected_write_error_retries": CLICKHOUSE_S3_RETRY_ATTEMPTS,
        "s3_request_timeout_ms": CLICKHOUSE_S3_REQUEST_TIMEOUT_MS,
        "max_execution_time": resource.clickhouse_write_timeout_seconds,
    }
    with open_client() as client:
        require_source(client, dataset, window.day)
        parameters = {
            **dataset.parameters(window, selection),
            "url": destination.object_url(endpoint, f"{folder}/{DATA_FILE}"),
            "access_key_id": access_key,
            "secret_access_key": secret_key,
            **({"session_token": token} if token else {}),
        }
        try:
            client.command(insert + dataset.query(selection), parameters, settings=settings)
        except ClickHouseError as error:
            if not refused_by_s3(error):
                raise
            # What to check first: the server's own message (long, with the URL) may be cut in the step's summary;
            # the driver's error, not ours that repeats the statement.
            said = server_message(error.__cause__ or error)
            raise DestinationAccessError(
                f"S3 refused ClickHouse's write to {destination.url_of(folder)}. Check AWS_ACCESS_KEY_ID, "
                "AWS_SECRET_ACCESS_KEY (or AWS_PROFILE), that these credentials may write to the bucket "
                f"{destination.bucket!r}, and EXPORT_CLICKHOUSE_S3_ENDPOINT_URL. {said}"
            ) from None
    return destination.describe_object(f"{folder}/{DATA_FILE}")


def refused_by_s3(error: ClickHouseError) -> bool:
    """Whether ClickHouse's s3() write failed because S3 refused its credentials (retrying cannot help)."""
    text = str(error)
    refusals = ("Access Denied", *sorted(S3_ACCESS_ERROR_CODES - {"403", "404", "NoSuchBucket"}))
    # The error's name is in the message over HTTP; its code (499) on every way in.
    return ("S3_ERROR" in text or "Code: 499." in text) and any(refusal in text for refusal in refusals)


def export_day(
    open_client: ClientFactory,
    resource: ExportDestination,
    destination: Destination,
    dataset: ExportDataset,
    interval: date | ExportWindow,
    run_id: str,
    selection: ExportSelection = EVERYTHING,
) -> DayExport:
    """Export one day (or one hour: an `ExportWindow`) of `dataset`, only the rows and columns of
    `selection`: clean up leftovers, write the file in one atomic step, then the manifest."""
    started = time.monotonic()
    window = interval if isinstance(interval, ExportWindow) else ExportWindow.of_day(interval)
    folder = window.folder(dataset.name)
    cleaned_up = destination.clean_up(folder)
    if resource.write_method == "clickhouse":
        assert isinstance(destination, S3Bucket)
        info = write_with_clickhouse(open_client, resource, destination, dataset, window, folder, selection)
    else:
        info = write_streamed(open_client, resource, destination, dataset, window, folder, run_id, selection)
    manifest = manifest_json(
        dataset=dataset.name,
        day=window.day,
        hour=window.start.hour if window.hourly else None,
        info=info,
        run_id=run_id,
        write_method=resource.write_method,
        exported_at=datetime.now(UTC),
    )
    destination.write_small_file(f"{folder}/{MANIFEST_FILE}", manifest)
    return DayExport(window, destination.url_of(f"{folder}/{DATA_FILE}"), info, time.monotonic() - started, cleaned_up)


def worth_retrying(error: BaseException) -> bool:
    """Whether the step's retry policy should try again after this error.

    The clients already retry throttling, 5xx and connection errors with backoff (boto3 in standard mode,
    the GCS client, the ClickHouse resource); a step retry covers outages longer than that. Refused
    credentials, bad configuration, a wrong query or a local disk problem will not go away by retrying.
    """
    if isinstance(error, DestinationAccessError | SourceNotReadyError | ValueError):
        return False
    if isinstance(error, ClickHouseError):
        return error.__cause__ is not None and is_transient(error.__cause__)
    if isinstance(error, OSError) and not isinstance(error, ConnectionError | TimeoutError):
        return False
    return True
