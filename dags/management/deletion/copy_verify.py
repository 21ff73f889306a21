"""Proving a deletion in each batch export of the request's team, read back from the copy itself (listed
afresh, whatever the rewrite reported). Each interval the plan says holds the request's days must hold:

- for a team request: none of the team's rows (a batch export holds one team: any row without `team_id`);
- for a person request, in an events copy with `person_id`: none of the person's rows;
- for a person request, in an events copy without `person_id`: exactly as many rows as the export's
  selection of the cleaned `events` gives now (the person's rows cannot be seen there; a copy that was not
  rewritten still counts them);
- for a person request, in a pre-aggregate copy: nothing that names a person (its days are rewritten from the
  recomputed pre-aggregates, whose checks `verify_and_complete` runs);
- for a `properties` request, in an events copy with `properties`: no row of the request's selection that still
  holds one of its keys (a copy without `event` or `timestamp` counts every row as selected), and exactly as many
  rows as the export's selection of `events` gives now; an events copy without `properties` is not reached, a
  pre-aggregate copy is proven by its recomputed days' checks as for a person.
"""

from dataclasses import replace

from dags.common import ClickHouseClient
from dags.exports.datasets import ExportWindow
from dags.exports.destinations.base import Destination
from dags.exports.destinations.postgres import PostgresTable
from dags.management.deletion.copies import BatchCopy, file_path, place_of
from dags.management.deletion.properties import rows_holding_keys
from dags.management.deletion.requests import DeletionRequest

SELECTION_ROWS = "SELECT count() FROM ({query})"


def verify_copy(client: ClickHouseClient, copy: BatchCopy, request: DeletionRequest) -> tuple[list[str], list[str]]:
    """`(places read, problems)` of one copy for one request; no problem: proven."""
    if not copy.reached_by(request):
        return [], []
    destination = copy.resource.open()
    places: list[str] = []
    problems: list[str] = []
    for window in copy.intervals(destination, copy.days(request.event_days, request.days_recomputed)):
        place = place_of(copy, destination, window)
        places.append(place)
        if request.removes_properties:
            if copy.holds_properties:
                problems += properties_problems(client, copy, destination, window, request, place)
        elif request.is_whole_team or copy.holds_persons:
            left = request_rows(copy, destination, window, request)
            if left:
                problems.append(f"batch export {copy.name}: {place} still holds {left:,} of the request's rows")
        elif copy.dataset.has_events:
            held, expected = copy_rows(copy, destination, window), selection_rows(client, copy, window)
            if held and held != expected:
                problems.append(
                    f"batch export {copy.name}: {place} holds {held:,} rows where events now gives {expected:,} "
                    "(it has no person_id column: it must equal a fresh export of the cleaned events)"
                )
    return places, problems


def request_rows(
    copy: BatchCopy, destination: Destination | PostgresTable, window: ExportWindow, request: DeletionRequest
) -> int:
    """The request's rows still in one interval of the copy."""
    team = request.team_id if copy.holds_teams else None
    person = None if request.is_whole_team else request.key.lower()
    if isinstance(destination, PostgresTable):
        return destination.count_rows(copy.dataset.time_column, window, team_id=team, person_id=person)
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    columns = [name for name, wanted in (("team_id", team), ("person_id", person)) if wanted is not None]
    table = pq.read_table(pa.BufferReader(destination.read_bytes(file_path(copy, window))), columns=columns)
    matches = pa.array([True] * table.num_rows, pa.bool_())
    if team is not None:
        matches = pc.and_(matches, pc.equal(table["team_id"], pa.scalar(team, table.schema.field("team_id").type)))
    if person is not None:
        matches = pc.and_(matches, pc.equal(table["person_id"], person))
    return int(pc.sum(matches.cast("int64")).as_py() or 0)


def copy_rows(copy: BatchCopy, destination: Destination | PostgresTable, window: ExportWindow) -> int:
    """All rows of one interval of the copy."""
    if isinstance(destination, PostgresTable):
        return destination.count_rows(copy.dataset.time_column, window)
    import pyarrow as pa
    import pyarrow.parquet as pq

    return pq.ParquetFile(pa.BufferReader(destination.read_bytes(file_path(copy, window)))).metadata.num_rows


def selection_rows(client: ClickHouseClient, copy: BatchCopy, window: ExportWindow) -> int:
    """The rows a fresh export of the interval would write now."""
    selection = copy.export.selection
    query = SELECTION_ROWS.format(query=copy.dataset.query(selection))
    return int(client.command(query, copy.dataset.parameters(window, selection)))


def properties_problems(
    client: ClickHouseClient,
    copy: BatchCopy,
    destination: Destination | PostgresTable,
    window: ExportWindow,
    request: DeletionRequest,
    place: str,
) -> list[str]:
    """A `properties` request in an events copy with `properties`: no selected row still holds a key, and the
    interval holds as many rows as a fresh export gives (the request removes no row)."""
    problems: list[str] = []
    if isinstance(destination, PostgresTable):
        left = destination.count_rows(
            copy.dataset.time_column,
            window,
            team_id=request.team_id if copy.holds_teams else None,
            holding_keys=request.properties,
            events=request.events if "event" in copy.columns else (),
            since=request.start_time,
            until=request.end_time,
        )
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        wanted = [name for name in ("team_id", "event", "timestamp", "properties") if name in copy.columns]
        table = pq.read_table(pa.BufferReader(destination.read_bytes(file_path(copy, window))), columns=wanted)
        # A column the copy leaves out cannot narrow the selection: every row counts as selected.
        rows = [{"event": "", "timestamp": window.start, **row} for row in table.to_pylist()]
        unselective = replace(request, events=[], start_time=None, end_time=None)
        left = rows_holding_keys(rows, request if {"event", "timestamp"} <= set(copy.columns) else unselective)
    if left:
        problems.append(f"batch export {copy.name}: {place} still holds {left:,} row(s) with {request.properties}")
    held, expected = copy_rows(copy, destination, window), selection_rows(client, copy, window)
    if held != expected:
        problems.append(f"batch export {copy.name}: {place} holds {held:,} rows where events now gives {expected:,}")
    return problems
