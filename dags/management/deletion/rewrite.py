"""Rewriting the exported files of the days a deletion changed, through the export assets' own exactly-once
publish path (`export_day`): each file is replaced in one atomic step, so a reader sees the old day or the
new one, never half of either, and rewriting a day twice leaves what rewriting it once leaves."""

from collections.abc import Callable, Sequence

from dags.common import ClickHouseResource
from dags.exports.destinations.base import Destination
from dags.exports.publish import export_day
from dags.exports.resource import ExportDestination
from dags.management.deletion.plan import FileToRewrite


def rewrite_files(
    clickhouse: ClickHouseResource,
    context: object,
    export_destination: ExportDestination,
    destination: Destination,
    files: Sequence[FileToRewrite],
    run_id: str,
    log: Callable[[str], None],
) -> list[str]:
    """Export each file's day again from the (already cleaned) tables; returns the rewritten files' URLs."""
    rewritten: list[str] = []
    for file in files:
        result = export_day(
            lambda: clickhouse.get_client(context), export_destination, destination, file.dataset, file.day, run_id
        )
        for leftover in result.cleaned_up:
            log(f"{file.dataset.name} {file.day}: removed what an earlier run left: {leftover}")
        log(f"{file.dataset.name} {file.day}: rewritten, {result.info.rows:,} rows -> {result.url}")
        rewritten.append(result.url)
    return rewritten
