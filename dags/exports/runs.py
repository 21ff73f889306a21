"""One export run: every day of its partition window, each on its own, with what happened as metadata."""

import time
from datetime import date, timedelta
from typing import Any

from dagster import AssetExecutionContext, Failure, MaterializeResult, MetadataValue

from dags.common import ClickHouseResource, server_message
from dags.exports.datasets import ExportDataset
from dags.exports.destinations.base import DestinationAccessError
from dags.exports.publish import DayExport, export_day, worth_retrying
from dags.exports.resource import ExportDestination


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
