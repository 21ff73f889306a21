"""Rewriting a batch export's intervals of the days a deletion changed, from the cleaned tables, through the
export's own path: a Parquet file is published again in one atomic step (`export_day`), a table's day is
deleted and loaded again in one transaction (`export_window`, scoped to the export's team and day). Only
intervals the export already holds are written: a deletion never creates an export."""

from collections.abc import Callable, Sequence
from datetime import date

from dags.common import ClickHouseResource
from dags.exports.datasets import ExportWindow
from dags.exports.destinations.postgres import PostgresTable
from dags.exports.publish import export_day
from dags.management.deletion.copies import BatchCopy, place_of


def rewrite_copy(
    clickhouse: ClickHouseResource,
    context: object,
    copy: BatchCopy,
    days: Sequence[date],
    run_id: str,
    log: Callable[[str], None],
) -> list[tuple[ExportWindow, str]]:
    """Export each held interval of `days` again with the export's selection; returns each interval written
    and its place."""
    resource = copy.resource
    destination = resource.open()
    windows = copy.intervals(destination, days)
    if windows:  # a copy with nothing to rewrite is left alone (check_access may create a folder)
        destination.check_access()
    written: list[tuple[ExportWindow, str]] = []
    for window in windows:
        place = place_of(copy, destination, window)
        if isinstance(destination, PostgresTable):
            if not destination.count_rows(copy.dataset.time_column, window):
                continue  # never exported (or nothing of the team that day): nothing to rewrite
            result = destination.export_window(
                lambda: clickhouse.get_client(context), copy.dataset, window, resource.batch_rows, copy.export.selection
            )
            log(f"{copy.name} {window.label}: {result.replaced_rows:,} rows replaced by {result.rows:,} -> {place}")
        else:
            exported = export_day(
                lambda: clickhouse.get_client(context),
                resource,
                destination,
                copy.dataset,
                window,
                run_id,
                copy.export.selection,
            )
            log(f"{copy.name} {window.label}: rewritten, {exported.rows:,} rows -> {place}")
        written.append((window, place))
    return written
