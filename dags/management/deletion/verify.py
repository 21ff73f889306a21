"""Proving a deletion: no matching row left in `events`, the recomputed days' checks pass, and the
rewritten files hold none of the deleted events. Each function returns what is wrong (empty: proven)."""

from collections.abc import Sequence
from datetime import date

from dags.common import ClickHouseClient
from dags.exports.datasets import EVENTS_DATASET, ExportWindow
from dags.exports.destinations.base import Destination
from dags.management.deletion.plan import MATCHES_REQUEST, FileToRewrite, request_parameters
from dags.management.deletion.properties import rows_holding_keys
from dags.management.deletion.recompute import contiguous_windows
from dags.management.deletion.requests import DeletionRequest
from dags.web_analytics.checks import check_totals
from dags.web_analytics.sql import PRE_AGGREGATES

ROWS_LEFT = f"SELECT count() FROM events WHERE {MATCHES_REQUEST}"
EXPORT_ROWS = "SELECT count() FROM ({query})"


def rows_left_in_events(client: ClickHouseClient, request: DeletionRequest) -> int:
    return int(client.command(ROWS_LEFT, request_parameters(request)))


def failed_pre_aggregate_checks(client: ClickHouseClient, days: Sequence[date], team_ids: Sequence[int]) -> list[str]:
    """The web analytics checks (totals equal those from `events`) over the recomputed days and teams."""
    problems: list[str] = []
    for pre_aggregate in PRE_AGGREGATES:
        for first_day, end_day in contiguous_windows(days):
            for result in check_totals(
                client, pre_aggregate, first_day=first_day, end_day=end_day, team_ids=sorted(set(team_ids))
            ):
                if not result.passed:
                    problems.append(f"{pre_aggregate.table} {first_day}..{end_day}: {result.description}")
    return problems


def deleted_rows_in_file(destination: Destination, file: FileToRewrite, request: DeletionRequest) -> int:
    """Rows of the request still in a rewritten file: any of a deleted team's rows, or (events files) any
    of a deleted person's events, or (a `properties` request, events files) the selected rows of the team that
    still hold one of its keys. Aggregated files hold no person ids, so only a team deletion is visible."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    is_events = file.dataset.name == EVENTS_DATASET.name
    if request.removes_properties:
        if not is_events:
            return 0  # aggregated files hold no properties: their days are recomputed and checked
        columns = ["team_id", "event", "timestamp", "properties"]
        table = pq.read_table(pa.BufferReader(destination.read_bytes(file.path)), columns=columns)
        return rows_holding_keys(table.to_pylist(), request)
    if not is_events and not request.is_whole_team:
        return 0
    columns = ["team_id", "person_id"] if is_events else ["team_id"]
    table = pq.read_table(pa.BufferReader(destination.read_bytes(file.path)), columns=columns)
    matches = pc.equal(table["team_id"], pa.scalar(request.team_id, table.schema.field("team_id").type))
    if not request.is_whole_team:
        matches = pc.and_(matches, pc.equal(table["person_id"], request.key.lower()))
    return int(pc.sum(matches.cast("int64")).as_py() or 0)


def rows_missing_from_file(client: ClickHouseClient, destination: Destination, file: FileToRewrite) -> str | None:
    """For a `properties` request, which removes no row: the events file must hold exactly the rows a fresh export
    of the day gives (no row lost or doubled by the rewrite), or what differs."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if file.dataset.name != EVENTS_DATASET.name:
        return None
    window = ExportWindow.of_day(file.day)
    expected = int(client.command(EXPORT_ROWS.format(query=file.dataset.query()), file.dataset.parameters(window)))
    held = pq.ParquetFile(pa.BufferReader(destination.read_bytes(file.path))).metadata.num_rows
    return None if held == expected else f"holds {held:,} rows where events gives {expected:,}"
