"""The SQL that computes the pre-aggregates from `events` and checks them against it.

Column lists come from the dimensions declared in `schema.py`; values and table names are bound by the
server (`{first_day:Date}`, `{staging:Identifier}`). A run limited to some teams binds their ids; an
empty list means every team, so the team condition is always in the statement.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

from dags.common import ClickHouseClient
from dags.web_analytics.schema import BOUNCES_TABLE, DIMENSION_LIST, DIMENSION_PROPERTIES, STATS_TABLE

# Sessions belong to the day of their first event but may run past midnight; events this many days
# around the window are read to see whole sessions (sessions are capped at 24 hours).
SESSION_SPILL_DAYS = 1

# A session is a bounce when it has one pageview, no autocapture and lasts under this many seconds.
BOUNCE_MAX_SECONDS = 10

# The properties the pre-aggregates read, parsed once per event (a third of the time of one parse per
# property); missing properties come out as '' and 0.
PROPERTIES_TUPLE = (
    "Tuple("
    + ", ".join(f'"{key}" {type_}' for key, type_ in [("$pathname", "String"), *DIMENSION_PROPERTIES.values()])
    + ")"
)


def parse_properties(properties: str) -> str:
    """The expression that parses the JSON `properties` into a tuple of the properties read here.

    Only a JSON object has properties: an array or a scalar would otherwise be read by position (an array's
    first element as the pathname), so anything that is not an object reads as empty properties, as does
    invalid JSON. Such events still count; the `no_events_left_out` check reports how many there were.
    """
    return f"JSONExtract(if(startsWith(trimLeft({properties}), '{{'), {properties}, '{{}}'), '{PROPERTIES_TUPLE}')"


def property_of(parsed: str, key: str) -> str:
    return f"tupleElement({parsed}, '{key}')"


def dimension_expressions(parsed: str) -> str:
    """SELECT expressions for the dimension columns, from a tuple made by `parse_properties`."""
    expressions = []
    for column, (key, _) in DIMENSION_PROPERTIES.items():
        value = property_of(parsed, key)
        expressions.append(f"{value} != '' AS {column}" if column.startswith("has_") else f"{value} AS {column}")
    return ",\n    ".join(expressions)


# The teams a run computes: every team when the bound list is empty. Team ids are UInt64 in the pre-aggregates:
# an event with a negative team id has no team a dashboard could ask for, so it is left out (not wrapped into
# 18446744073709551615 and below) and reported by the `no_events_left_out` check.
TEAM_CONDITION = "team_id >= 0 AND (empty({team_ids:Array(Int64)}) OR team_id IN {team_ids:Array(Int64)})"

# One row per pathname, hour and dimension values of the window's pageviews.
INSERT_STATS = f"""
INSERT INTO {{staging:Identifier}}
    (team_id, period_bucket, {DIMENSION_LIST}, pathname,
     persons_uniq_state, sessions_uniq_state, pageviews_count_state)
SELECT
    toUInt64(team_id),
    toStartOfHour(timestamp) AS period_bucket,
    {dimension_expressions("parsed")},
    {property_of("parsed", "$pathname")} AS pathname,
    uniqState(person_id),
    -- Pageviews without a session id count as pageviews, not as one shared empty session.
    CAST(uniqIfState(`$session_id`, `$session_id` != '') AS AggregateFunction(uniq, String)),
    sumState(toUInt64(1))
FROM
(
    SELECT team_id, timestamp, person_id, `$session_id`, {parse_properties("properties")} AS parsed
    FROM events
    WHERE event = '$pageview'
      AND toDate(timestamp) >= {{first_day:Date}}
      AND toDate(timestamp) < {{end_day:Date}}
      AND {TEAM_CONDITION}
)
GROUP BY team_id, period_bucket, {DIMENSION_LIST}, pathname
"""

# One row per session with a pageview that starts in the window. Events a day either side are read so
# sessions crossing midnight are whole: they belong to the day (and hour) of their first event.
SESSIONS = f"""
SELECT
    team_id,
    `$session_id` AS session_id,
    min(timestamp) AS session_start,
    max(timestamp) AS session_end,
    countIf(event = '$pageview') AS pageviews,
    countIf(event = '$autocapture') AS autocaptures,
    argMinIf(properties, (timestamp, uuid), event = '$pageview') AS entry_properties,
    argMaxIf(JSONExtractString(properties, '$pathname'), (timestamp, uuid), event = '$pageview') AS end_pathname,
    argMin(person_id, (timestamp, uuid)) AS session_person_id,
    intDiv(toUnixTimestamp64Micro(session_end) - toUnixTimestamp64Micro(session_start), 1000000)
        AS duration_seconds,
    pageviews = 1 AND autocaptures = 0 AND duration_seconds < {BOUNCE_MAX_SECONDS} AS is_bounce
FROM events
WHERE `$session_id` != ''
  AND toDate(timestamp) >= {{first_day:Date}} - {SESSION_SPILL_DAYS}
  AND toDate(timestamp) < {{end_day:Date}} + {SESSION_SPILL_DAYS}
  AND {TEAM_CONDITION}
GROUP BY team_id, session_id
HAVING pageviews > 0
   AND toDate(session_start) >= {{first_day:Date}}
   AND toDate(session_start) < {{end_day:Date}}
"""

INSERT_BOUNCES = f"""
INSERT INTO {{staging:Identifier}}
    (team_id, period_bucket, {DIMENSION_LIST}, entry_pathname, end_pathname,
     persons_uniq_state, sessions_uniq_state, pageviews_count_state,
     bounces_count_state, total_session_duration_state, total_session_count_state)
SELECT
    toUInt64(team_id),
    toStartOfHour(session_start) AS period_bucket,
    {dimension_expressions("entry")},
    {property_of("entry", "$pathname")} AS entry_pathname,
    end_pathname,
    uniqState(session_person_id),
    uniqState(session_id),
    sumState(pageviews),
    sumState(toUInt64(is_bounce)),
    sumState(duration_seconds),
    sumState(toUInt64(1))
FROM (SELECT *, {parse_properties("entry_properties")} AS entry FROM ({SESSIONS}))
GROUP BY team_id, period_bucket, {DIMENSION_LIST}, entry_pathname, end_pathname
"""

# A run limited to some teams keeps the other teams' rows of its days: they go into staging unchanged.
COPY_OTHER_TEAMS = """
INSERT INTO {staging:Identifier}
SELECT *
FROM {target:Identifier}
WHERE toDate(period_bucket) >= {first_day:Date}
  AND toDate(period_bucket) < {end_day:Date}
  AND team_id NOT IN {team_ids:Array(Int64)}
"""

ROWS_BY_DAY = """
SELECT toString(toDate(period_bucket)) AS day, count() AS rows
FROM {table:Identifier}
GROUP BY day
"""

# The totals per team and day straight from `events`, to check a pre-aggregate's against (`TABLE_FIGURES`).
# The filter runs in a subquery: in ClickHouse an alias in SELECT (`toUInt64(team_id) AS team_id`) would
# replace the column in WHERE too, and `team_id >= 0` would hold for every wrapped negative id.
STATS_TOTALS_FROM_EVENTS = f"""
SELECT toUInt64(team_id) AS team_id, toDate(timestamp) AS day, count() AS pageviews,
       uniqIf(`$session_id`, `$session_id` != '') AS sessions
FROM
(
    SELECT team_id, timestamp, `$session_id`
    FROM events
    WHERE event = '$pageview'
      AND toDate(timestamp) >= {{first_day:Date}}
      AND toDate(timestamp) < {{end_day:Date}}
      AND {TEAM_CONDITION}
)
GROUP BY team_id, day
"""

BOUNCES_TOTALS_FROM_EVENTS = f"""
SELECT toUInt64(team_id) AS team_id, toDate(session_start) AS day, sum(pageviews) AS pageviews,
       uniq(session_id) AS sessions
FROM ({SESSIONS})
GROUP BY team_id, day
"""

# The pageviews of each day of the window that the pre-aggregates leave out (a negative team id) or read
# without properties (the properties are not a JSON object, or not valid JSON), for the `no_events_left_out`
# check. A day without pageviews has no row.
EVENTS_NOT_FULLY_COUNTED = """
SELECT
    toString(toDate(timestamp)) AS day,
    countIf(team_id < 0) AS negative_team_id,
    countIf(team_id >= 0 AND NOT startsWith(trimLeft(properties), '{')) AS properties_not_an_object,
    countIf(team_id >= 0 AND startsWith(trimLeft(properties), '{') AND NOT isValidJSON(properties))
        AS properties_not_valid_json
FROM events
WHERE event = '$pageview'
  AND toDate(timestamp) >= {first_day:Date}
  AND toDate(timestamp) < {end_day:Date}
  AND (empty({team_ids:Array(Int64)}) OR team_id IN {team_ids:Array(Int64)})
GROUP BY day
"""

# What a pre-aggregate holds per team and day of a window, in one scan of the table: its rows, the totals its
# checks compare with `events`, and the dashboards' "unique persons" (per team: a person belongs to one team).
TABLE_FIGURES = """
SELECT team_id, toString(toDate(period_bucket)) AS day, count() AS rows,
       sumMerge(pageviews_count_state) AS pageviews, uniqMerge(sessions_uniq_state) AS sessions,
       uniqMerge(persons_uniq_state) AS persons
FROM {table:Identifier}
WHERE toDate(period_bucket) >= {first_day:Date} AND toDate(period_bucket) < {end_day:Date}
GROUP BY team_id, day
"""


@dataclass(frozen=True)
class TableFigures:
    """A pre-aggregate's figures per (team, day) of a window; a team-day without rows is absent."""

    by_team_day: dict[tuple[int, str], dict[str, int]]

    def rows_by_day(self) -> dict[str, int]:
        """Each day's rows, every team's."""
        return self._sum_by_day("rows")

    def persons_by_day(self) -> dict[str, int]:
        """Each day's unique persons, added up over teams."""
        return self._sum_by_day("persons")

    def totals(self, team_ids: Sequence[int] | None = None) -> dict[tuple[int, str], tuple[int, int]]:
        """(pageviews, sessions) per team and day, of the given teams only (every team when None)."""
        teams = set(team_ids or ())
        return {
            key: (figures["pageviews"], figures["sessions"])
            for key, figures in self.by_team_day.items()
            if not teams or key[0] in teams
        }

    def _sum_by_day(self, name: str) -> dict[str, int]:
        days: dict[str, int] = {}
        for (_, day), figures in self.by_team_day.items():
            days[day] = days.get(day, 0) + figures[name]
        return days


def table_figures(client: ClickHouseClient, table: str, first_day: date, end_day: date) -> TableFigures:
    """`table`'s figures per team and day for the days in `[first_day, end_day)`."""
    rows = client.query_rows(TABLE_FIGURES, {"table": table, "first_day": first_day, "end_day": end_day})
    names = ("rows", "pageviews", "sessions", "persons")
    return TableFigures({(int(row["team_id"]), row["day"]): {name: int(row[name]) for name in names} for row in rows})


def unique_persons_by_day(client: ClickHouseClient, table: str, first_day: date, end_day: date) -> dict[str, int]:
    """Each day's unique persons in `table` (`YYYY-MM-DD` to count) for days in `[first_day, end_day)`."""
    return table_figures(client, table, first_day, end_day).persons_by_day()


@dataclass(frozen=True)
class PreAggregate:
    """One pre-aggregate table and the SQL that fills and checks it."""

    table: str
    insert_sql: str
    totals_from_events_sql: str

    @property
    def staging_prefix(self) -> str:
        return f"{self.table}_staging_"


STATS = PreAggregate(STATS_TABLE, INSERT_STATS, STATS_TOTALS_FROM_EVENTS)
BOUNCES = PreAggregate(BOUNCES_TABLE, INSERT_BOUNCES, BOUNCES_TOTALS_FROM_EVENTS)
PRE_AGGREGATES = (STATS, BOUNCES)
