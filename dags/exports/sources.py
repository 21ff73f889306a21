"""The tables an export reads: they must exist, and a table filled day by day by another team's asset must
have been filled for the day. Checked before anything is written, whatever the destination."""

from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import date

from dags.common import ClickHouseClient
from dags.exports.datasets import ExportDataset

ClientFactory = Callable[[], AbstractContextManager[ClickHouseClient]]


class SourceNotReadyError(Exception):
    """The table a dataset reads is missing, or the day was never filled: nothing is published, and
    retrying will not help until the setting is fixed or the upstream asset has run."""


def require_source(client: ClickHouseClient, dataset: ExportDataset, day: date) -> None:
    """Fail unless the dataset's day can be read: its table exists and, for a table filled day by day by
    another asset, the day was filled whenever `events` has pageviews for it (else an empty file would lie)."""
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
