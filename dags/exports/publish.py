"""Exporting one day exactly once: clean up what a crash left, write the file in one atomic step, then the
manifest. A reader sees each day exactly once, old or new, never a partial file or a second copy."""

import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

from dags.common import ClickHouseClient, ClickHouseError, is_transient
from dags.exports.datasets import EVERYTHING, ExportDataset, ExportSelection, ExportWindow
from dags.exports.destinations.base import Destination, DestinationAccessError
from dags.exports.destinations.s3 import S3Bucket
from dags.exports.manifest import DATA_FILE, MANIFEST_FILE, manifest_json
from dags.exports.parquet import ParquetFileInfo, describe_parquet_file, write_parquet
from dags.exports.resource import ExportDestination

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


ClientFactory = Callable[[], AbstractContextManager[ClickHouseClient]]


class SourceNotReadyError(Exception):
    """The table a dataset reads is missing, or the day was never filled: nothing is published, and
    retrying will not help until the setting is fixed or the upstream asset has run."""


def require_source(client: ClickHouseClient, dataset: ExportDataset, day: date) -> None:
    """Fail unless the dataset's day can be read: its table exists and, for a table filled day by day by
    another asset, the day was filled whenever ``events`` has pageviews for it (else an empty file would lie)."""
    if not client.command("EXISTS TABLE {table:Identifier}", {"table": dataset.source_table}):
        raise SourceNotReadyError(
            f"{dataset.name} {day}: there is no table {dataset.source_table!r} in database {client.database!r}. "
            "Check CLICKHOUSE_URL (server and database)"
            + (f", and materialize {dataset.source_table} first" if dataset.filled_per_day else "")
            + ". Nothing was exported."
        )
    if not dataset.filled_per_day:
        return
    day_rows = client.command(
        "SELECT count() FROM {table:Identifier} WHERE toDate(period_bucket) = {day:Date}",
        {"table": dataset.source_table, "day": day},
    )
    if day_rows or not client.command("EXISTS TABLE events"):
        return
    pageviews = client.command(
        "SELECT count() FROM events WHERE toDate(timestamp) = {day:Date} AND event = '$pageview'", {"day": day}
    )
    if pageviews:
        raise SourceNotReadyError(
            f"{dataset.name} {day}: the day has no rows in {dataset.source_table} although events holds "
            f"{pageviews:,} pageviews for it: it was never pre-aggregated. Materialize {dataset.source_table} "
            f"for {day} first. Nothing was exported."
        )


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
            with client.query_arrow_stream(
                query, parameters, settings={"max_block_size": resource.batch_rows}
            ) as batches:
                write_parquet(
                    batches,
                    staging,
                    resource.row_group_rows,
                    lambda: client.query_arrow(empty_query, parameters).schema,
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
    with open_client() as client:
        require_source(client, dataset, window.day)
        client.command(
            insert + dataset.query(selection),
            {
                **dataset.parameters(window, selection),
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
    interval: date | ExportWindow,
    run_id: str,
    selection: ExportSelection = EVERYTHING,
) -> DayExport:
    """Export one day (or one hour: an ``ExportWindow``) of ``dataset``, only the rows and columns of
    ``selection``: clean up leftovers, write the file in one atomic step, then the manifest."""
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
