"""What a request deletes, per day, found before anything is deleted and stored with the request, so the
days to recompute and rewrite are still known after the events are gone (a killed run resumes from it)."""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date

from dags.common import ClickHouseClient
from dags.exports.datasets import EVENTS_DATASET, WEB_BOUNCES_DATASET, WEB_STATS_DATASET, ExportDataset, day_folder
from dags.exports.destinations.base import Destination
from dags.exports.manifest import DATA_FILE
from dags.management.deletion.properties import HOLDS_KEYS, scope_parameters
from dags.management.deletion.requests import DeletionRequest
from dags.web_analytics.sql import PRE_AGGREGATES

# The events of one request: the whole team, one person of it, or (a `properties` request) the team's selected
# events that hold one of the keys to remove. Every value is always bound, so the statement is the same for every
# kind of request (no key to remove: no further condition).
MATCHES_REQUEST = (
    "team_id = {team_id:Int64} AND ({whole_team:Bool} OR person_id = toUUID({person_id:String}))"
    f" AND (empty({{property_keys:Array(String)}}) OR ({HOLDS_KEYS}))"
)

ROWS_BY_DAY = f"""
SELECT toDate(timestamp) AS day, count() AS rows
FROM events
WHERE {MATCHES_REQUEST}
GROUP BY day
ORDER BY day
"""

# A session belongs to the pre-aggregates' day of its first event, and may run past midnight: deleting
# its later events changes the day it started on too.
SESSION_START_DAYS = f"""
SELECT DISTINCT toDate(min(timestamp)) AS day
FROM events
WHERE team_id = {{team_id:Int64}}
  -- GLOBAL: on a cluster the sessions are found once and sent to every shard (plain IN is refused there).
  AND `$session_id` GLOBAL IN
      (SELECT DISTINCT `$session_id` FROM events WHERE {MATCHES_REQUEST} AND `$session_id` != '')
GROUP BY `$session_id`
ORDER BY day
"""

TEAM_HAS_EVENTS = "SELECT count() > 0 FROM (SELECT 1 FROM events WHERE team_id = {team_id:Int64} LIMIT 1)"

PRE_AGGREGATED_DAYS = """
SELECT DISTINCT toDate(period_bucket) AS day
FROM {table:Identifier}
WHERE toDate(period_bucket) IN {days:Array(Date)}
ORDER BY day
"""

# What each dataset's export of a day holds: events for the days with deleted rows, the pre-aggregates for
# the days recomputed.
EXPORTED_DATASETS: tuple[ExportDataset, ...] = (EVENTS_DATASET, WEB_STATS_DATASET, WEB_BOUNCES_DATASET)


def request_parameters(request: DeletionRequest) -> dict[str, object]:
    """The bound values of `MATCHES_REQUEST`; a team or `properties` request binds the nil UUID, which it never
    compares (a `properties` request reaches the whole team, then only the rows holding its keys)."""
    whole_team = request.is_whole_team or request.removes_properties
    return {
        "team_id": request.team_id,
        "whole_team": whole_team,
        "person_id": request.key.lower() if not whole_team else "00000000-0000-0000-0000-000000000000",
        **scope_parameters(request),
    }


def team_has_events(client: ClickHouseClient, team_id: int) -> bool:
    return bool(client.command(TEAM_HAS_EVENTS, {"team_id": team_id}))


def plan_request(client: ClickHouseClient, request: DeletionRequest) -> tuple[list[date], list[int], list[date]]:
    """(days with the request's events, their rows, days whose pre-aggregates change)."""
    parameters = request_parameters(request)
    rows = client.query_rows(ROWS_BY_DAY, parameters)
    event_days = [row["day"] for row in rows]
    session_days = [row["day"] for row in client.query_rows(SESSION_START_DAYS, parameters)]
    return event_days, [int(row["rows"]) for row in rows], sorted(set(event_days) | set(session_days))


def pre_aggregated_days(client: ClickHouseClient, days: Iterable[date]) -> list[date]:
    """The days among `days` that were ever pre-aggregated (in either table): only those are recomputed,
    so a deletion never creates pre-aggregates that were not there."""
    wanted = sorted(set(days))
    if not wanted or not client.command("EXISTS TABLE {table:Identifier}", {"table": PRE_AGGREGATES[0].table}):
        return []
    found: set[date] = set()
    for pre_aggregate in PRE_AGGREGATES:
        rows = client.query_rows(PRE_AGGREGATED_DAYS, {"table": pre_aggregate.table, "days": wanted})
        found.update(row["day"] for row in rows)
    return sorted(found)


@dataclass(frozen=True)
class FileToRewrite:
    """One exported day that holds (or was computed from) deleted rows."""

    dataset: ExportDataset
    day: date

    @property
    def path(self) -> str:
        return f"{day_folder(self.dataset.name, self.day)}/{DATA_FILE}"


@dataclass
class RewritePlan:
    """The exported files to rewrite per dataset; only days already exported (never create new exports)."""

    files: list[FileToRewrite] = field(default_factory=list)

    def of(self, dataset: ExportDataset) -> list[FileToRewrite]:
        return [file for file in self.files if file.dataset.name == dataset.name]


def exported_files(
    destination: Destination, event_days: Sequence[date], pre_aggregate_days: Sequence[date]
) -> RewritePlan:
    """The files at the destination that hold the days: events for `event_days`, the pre-aggregates'
    exports for `pre_aggregate_days`."""
    plan = RewritePlan()
    for dataset in EXPORTED_DATASETS:
        days = event_days if dataset.name == EVENTS_DATASET.name else pre_aggregate_days
        for day in sorted(set(days)):
            candidate = FileToRewrite(dataset, day)
            if destination.exists(candidate.path):
                plan.files.append(candidate)
    return plan
