"""One export run: every interval (day or hour) of its partition window, each on its own, with what it wrote
as the metadata of its own partition."""

import time
from datetime import timedelta
from typing import Any

from dagster import AssetExecutionContext, Failure, MaterializeResult, MetadataValue

from dags.common import ClickHouseResource, server_message
from dags.exports.datasets import EVERYTHING, ExportDataset, ExportSelection, ExportWindow
from dags.exports.destinations.base import DestinationAccessError
from dags.exports.destinations.postgres import PostgresTable, TableExport
from dags.exports.publish import DayExport, export_day, worth_retrying
from dags.exports.resource import ExportDestination


def partition_windows(context: AssetExecutionContext, hourly: bool = False) -> list[ExportWindow]:
    """The intervals of this run: one partition, or every day (hour) of a backfill range."""
    window = context.partition_time_window
    if hourly:
        first = ExportWindow.of_hour(window.start)
        hours = int((window.end - window.start) / timedelta(hours=1))
        return [ExportWindow.of_hour(first.start + timedelta(hours=offset)) for offset in range(hours)]
    first_day, end_day = window.start.date(), window.end.date()
    return [ExportWindow.of_day(first_day + timedelta(days=offset)) for offset in range((end_day - first_day).days)]


def run_export(
    context: AssetExecutionContext,
    clickhouse: ClickHouseResource,
    export_destination: ExportDestination,
    dataset: ExportDataset,
    selection: ExportSelection = EVERYTHING,
    hourly: bool = False,
    name: str | None = None,
) -> MaterializeResult:
    """Export every interval of the run (days, or hours when `hourly`), only the rows and columns of
    `selection`; a failing interval does not stop the others, and the run then fails naming it. `name`
    (a batch export's) prefixes every message instead of the dataset's name."""
    started = time.monotonic()
    label = name or dataset.name
    try:
        destination = export_destination.open()
        destination.check_access()
    except (ValueError, DestinationAccessError) as error:
        message = f"{label}: {error}{export_destination.credentials_hint()}" if name else str(error)
        raise Failure(description=message, allow_retries=False) from None
    windows = partition_windows(context, hourly)
    unit = "hour" if hourly else "day"
    context.log.info(
        f"Exporting {dataset.name} for {len(windows)} {unit}(s) to {destination.url} "
        f"({'COPY' if isinstance(destination, PostgresTable) else export_destination.write_method})"
    )
    done: list[DayExport | TableExport] = []
    failed: dict[str, str] = {}
    retry_may_help = False
    for window in windows:
        try:
            result: DayExport | TableExport
            if isinstance(destination, PostgresTable):
                result = destination.export_window(
                    lambda: clickhouse.get_client(context), dataset, window, export_destination.batch_rows, selection
                )
            else:
                result = export_day(
                    lambda: clickhouse.get_client(context),
                    export_destination,
                    destination,
                    dataset,
                    window,
                    context.run.run_id,
                    selection,
                )
        except Exception as error:
            retry_may_help = retry_may_help or worth_retrying(error)
            failed[window.label] = server_message(error)
            context.log.error(f"{label} {window.label}: export failed: {server_message(error)}")
            continue
        for leftover in result.cleaned_up:
            context.log.warning(f"{label} {window.label}: removed what an earlier run left: {leftover}")
        for warning in result.warnings if isinstance(result, TableExport) else ():
            context.log.warning(f"{label} {window.label}: {warning}")
        if isinstance(result, TableExport) and result.repairs:
            context.log.warning(
                f"{label} {window.label}: values changed so that Postgres accepts them: {result.repairs}"
            )
        context.log.info(
            f"{label} {window.label}: {result.rows:,} rows, {result.bytes:,} bytes -> {result.url} "
            f"in {result.seconds:.1f}s"
        )
        done.append(result)

    rows = sum(result.rows for result in done)
    seconds = time.monotonic() - started
    is_table = isinstance(destination, PostgresTable)
    written = "tables_written" if is_table else "files_written"
    common: dict[str, Any] = {
        "destination": destination.url,
        "write_method": "copy" if is_table else export_destination.write_method,
    }
    context.log.info(
        f"{label}: {rows:,} rows, {sum(result.bytes for result in done):,} bytes, {len(done)} of {len(windows)} "
        f"{unit}(s) in {seconds:.1f}s"
    )
    if failed:
        # The step fails and records no partition: the run's totals and each interval go on the failure.
        run_totals: dict[str, Any] = {
            **common,
            f"{unit}s": len(windows),
            "files": sum(isinstance(result, DayExport) for result in done),
            "rows": rows,
            "dagster/row_count": rows,
            "bytes": sum(result.bytes for result in done),
            "duration_seconds": round(seconds, 3),
            "rows_per_second": round(rows / seconds, 1) if seconds > 0 else 0.0,
            written: MetadataValue.json({result.window.label: interval_written(result) for result in done}),
        }
        if is_table:
            for name in REPAIRS:
                run_totals[name] = sum(
                    getattr(result.repairs, name) for result in done if isinstance(result, TableExport)
                )
        raise Failure(
            description=f"{label}: {len(failed)} of {len(windows)} {unit}(s) failed to export: "
            + "; ".join(f"{day}: {message}" for day, message in failed.items()),
            metadata={**run_totals, "failed_days": MetadataValue.json(failed)},
            allow_retries=retry_may_help,
        )
    # Each interval is its own partition: its materialization carries what that interval's export wrote.
    for partition_key, result in zip(context.partition_keys, done, strict=True):
        context.add_asset_metadata(interval_metadata(result, unit, written), partition_key=partition_key)
    return MaterializeResult(metadata=common)


REPAIRS = ("nul_bytes_stripped", "invalid_json_wrapped", "invalid_utf8_replaced")


def interval_written(result: DayExport | TableExport) -> dict[str, Any]:
    return {"url": result.url, "rows": result.rows, "bytes": result.bytes, "seconds": round(result.seconds, 3)}


def interval_metadata(result: DayExport | TableExport, unit: str, written: str) -> dict[str, Any]:
    """What one interval's export wrote, for its own partition's materialization."""
    metadata: dict[str, Any] = {
        f"{unit}s": 1,
        "files": int(isinstance(result, DayExport)),
        "rows": result.rows,
        "dagster/row_count": result.rows,
        "bytes": result.bytes,
        "duration_seconds": round(result.seconds, 3),
        "rows_per_second": round(result.rows / result.seconds, 1) if result.seconds > 0 else 0.0,
        written: MetadataValue.json({result.window.label: interval_written(result)}),
    }
    if isinstance(result, TableExport):
        for name in REPAIRS:
            metadata[name] = getattr(result.repairs, name)
    return metadata
