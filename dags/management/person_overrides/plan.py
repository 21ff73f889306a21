"""What a squash changes, found before anything changes: the events rows whose `person_id` differs from
their override, per team, day and monthly partition, and the days whose pre-aggregates change with them.

Read where the rows are: `events` on one host; on a cluster each shard's `sharded_events` on one host of the
shard that holds the dictionary (a shard's copies hold the same rows), summed.
"""

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from dags.common import ClickHouseClient, ClickHouseCluster
from dags.management.person_overrides.dictionary import qualified
from dags.management.person_overrides.snapshot import SNAPSHOT_PREFIX, SquashNames

# The rows a squash changes: an override exists and names another person.
CHANGES = """dictHas({dictionary:String}, (team_id, distinct_id))
  AND person_id != dictGet({dictionary:String}, 'person_id', (team_id, distinct_id))"""

ROWS_TO_CHANGE = f"""
SELECT team_id, toDate(timestamp) AS day, _partition_id AS partition, count() AS rows
FROM {{table:Identifier}}
WHERE {CHANGES}
GROUP BY team_id, day, partition
ORDER BY team_id, day
"""

# A session counts on the pre-aggregates' day of its first event, with the person of that event (bounces), and
# may run past midnight: a changed row changes its session's start day too.
SESSION_START_DAYS = f"""
SELECT DISTINCT team_id, toDate(min(timestamp)) AS day
FROM {{table:Identifier}}
WHERE (team_id, `$session_id`) IN (
    SELECT DISTINCT team_id, `$session_id` FROM {{table:Identifier}} WHERE {CHANGES} AND `$session_id` != ''
)
GROUP BY team_id, `$session_id`
"""


# The snapshots that earlier runs left: a run killed after its mutations but before its follow-through.
LEFT_OVER_SNAPSHOTS = """
SELECT name FROM system.tables
WHERE database = currentDatabase() AND startsWith(name, {prefix:String}) AND NOT endsWith(name, '_staging')
ORDER BY name
"""

# The days such a run changed: rows that already carry the person its snapshot names for their distinct_id
# (a superset when the run was killed before its mutations: redoing a day is harmless).
DAYS_CHANGED_BY = """
SELECT DISTINCT team_id, toDate(timestamp) AS day
FROM {table:Identifier}
WHERE (team_id, distinct_id, person_id) IN (SELECT team_id, distinct_id, person_id FROM {snapshot:Identifier})
"""


def left_over_runs(client: ClickHouseClient, own: SquashNames) -> list[SquashNames]:
    """The earlier runs whose snapshot is still on this host (killed runs), not `own`."""
    names = [row["name"] for row in client.query_rows(LEFT_OVER_SNAPSHOTS, {"prefix": SNAPSHOT_PREFIX})]
    return [SquashNames(name.removeprefix(SNAPSHOT_PREFIX)) for name in names if name != own.snapshot]


@dataclass
class SquashPlan:
    """Rows to change per (team, day, partition) and the days whose pre-aggregates change, per team."""

    rows: dict[tuple[int, date, str], int] = field(default_factory=dict)
    session_days: set[tuple[int, date]] = field(default_factory=set)
    # (team, day) an earlier, killed run changed without redoing what is built on them: this run redoes them.
    left_over_days: set[tuple[int, date]] = field(default_factory=set)
    left_over_runs: list[SquashNames] = field(default_factory=list)

    @property
    def total_rows(self) -> int:
        return sum(self.rows.values())

    @property
    def partitions(self) -> list[str]:
        return sorted({partition for _, _, partition in self.rows})

    @property
    def teams(self) -> list[int]:
        return sorted({team for team, _, _ in self.rows} | {team for team, _ in self.left_over_days})

    @property
    def event_days(self) -> list[date]:
        """Days whose events change (or a killed run changed): their events exports are rewritten."""
        return sorted({day for _, day, _ in self.rows} | {day for _, day in self.left_over_days})

    @property
    def changed_days(self) -> list[date]:
        """Days whose pre-aggregates change: days with changed rows and the start days of their sessions."""
        return sorted(set(self.event_days) | {day for _, day in self.session_days})

    def rows_by_team_and_day(self) -> list[dict[str, Any]]:
        by: dict[tuple[int, date], int] = defaultdict(int)
        for (team, day, _), rows in self.rows.items():
            by[(team, day)] += rows
        return [{"team_id": team, "day": day.isoformat(), "rows": rows} for (team, day), rows in sorted(by.items())]


def plan_on_host(client: ClickHouseClient, table: str, names: SquashNames) -> tuple[list[dict], list[dict]]:
    parameters = {"table": table, "dictionary": qualified(client, names)}
    return client.query_rows(ROWS_TO_CHANGE, parameters), client.query_rows(SESSION_START_DAYS, parameters)


def plan_squash(cluster: ClickHouseCluster, table: str, names: SquashNames) -> SquashPlan:
    """The squash's plan, read on one of `hosts` per shard through that host's dictionary."""
    plan = SquashPlan()
    answers = cluster.map_one_host_per_shard(lambda client: plan_on_host(client, table, names), "Planning the squash")
    for changed, sessions in answers.values():
        for row in changed:
            key = (int(row["team_id"]), row["day"], str(row["partition"]))
            plan.rows[key] = plan.rows.get(key, 0) + int(row["rows"])
        plan.session_days.update((int(row["team_id"]), row["day"]) for row in sessions)
    left_over = cluster.map_one_host_per_shard(
        lambda client: days_changed_by_left_over_runs(client, table, names), "Planning"
    )
    for runs, days in left_over.values():
        plan.left_over_runs = sorted({*plan.left_over_runs, *runs}, key=lambda run: run.run_id)
        plan.left_over_days.update(days)
    plan.session_days.update(plan.left_over_days)
    return plan


def days_changed_by_left_over_runs(
    client: ClickHouseClient, table: str, own: SquashNames
) -> tuple[list[SquashNames], set[tuple[int, date]]]:
    runs = left_over_runs(client, own)
    days: set[tuple[int, date]] = set()
    for run in runs:
        rows = client.query_rows(DAYS_CHANGED_BY, {"table": table, "snapshot": run.snapshot})
        days.update((int(row["team_id"]), row["day"]) for row in rows)
    return runs, days


@dataclass(frozen=True)
class SquashRun:
    """What the first step found, handed to the others (and to a re-execution's steps)."""

    run_id: str  # the root run id the tables are named after
    before: int  # unix time: overrides written before it are squashed
    limit: int | None
    partitions: tuple[str, ...]
    teams: tuple[int, ...]
    event_days: tuple[date, ...]
    pre_aggregate_days: tuple[date, ...]  # changed days that were ever pre-aggregated
    rows: int
    left_over_runs: tuple[str, ...] = ()  # killed runs whose days this run redoes and whose tables it drops

    @property
    def names(self) -> SquashNames:
        return SquashNames(self.run_id)
