"""What is exported: one SELECT per dataset, an interval (a day or an hour) at a time, read from tables the
export does not own, optionally narrowed to some teams, some events and some columns.

Every dataset declares the columns it exports, in order, once; the SELECT's column list is generated from
that declaration, and the filters are bound conditions that are always there (empty means "everything"), so
the full export and a user's narrowed batch export run the same statement.

An export never creates its source: a table that is missing is a wrong setting (another database, a typo)
or a step not yet run, and must fail the run instead of reading as an empty interval.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from dags.common import quote_identifier

# The filters every dataset's SELECT carries; empty arrays select everything.
TEAM_FILTER = "(empty({teams:Array(Int64)}) OR team_id IN {teams:Array(Int64)})"
EVENT_FILTER = (
    "(empty({events:Array(String)}) OR event IN {events:Array(String)})\n"
    "    AND NOT has({exclude_events:Array(String)}, event)"
)
WINDOW_START, WINDOW_END = "{start:DateTime('UTC')}", "{end:DateTime('UTC')}"

# `events` as exported: UUIDs as canonical strings (see README), everything else as stored.
EVENTS_COLUMNS: dict[str, str] = {
    "uuid": "toString(uuid)",
    "event": "event",
    "properties": "properties",
    "timestamp": "timestamp",
    "team_id": "team_id",
    "distinct_id": "distinct_id",
    "person_id": "toString(person_id)",
    "$session_id": "`$session_id`",
    "inserted_at": "inserted_at",
}


# Sorted by the table's own sorting key (`events.uuid` is the column, not the string alias) so ClickHouse
# reads the interval in order instead of sorting it in memory: memory stays flat however big the day, and
# the same interval always gives the same file. The time range on `timestamp` also prunes by the key's
# `toDate(timestamp)` (a monotonic function of it).
def events_query(columns: str) -> str:
    return f"""
SELECT
    {columns}
FROM events
WHERE timestamp >= {WINDOW_START} AND timestamp < {WINDOW_END}
    AND {TEAM_FILTER}
    AND {EVENT_FILTER}
ORDER BY team_id, toDate(timestamp), event, cityHash64(distinct_id), cityHash64(events.uuid)
"""


# The key columns of both pre-aggregates (team, hour, the web analytics team's dimensions), as exported.
_PRE_AGGREGATE_KEYS = (
    "team_id",
    "period_bucket",
    "host",
    "device_type",
    "browser",
    "os",
    "viewport_width",
    "viewport_height",
    "referring_domain",
    "utm_source",
    "utm_medium",
    "utm_campaign",
    "utm_term",
    "utm_content",
    "has_gclid",
    "has_fbclid",
    "country_code",
    "city_name",
    "region_code",
    "region_name",
)


# A pre-aggregate's rows for the interval with its aggregate states merged into plain numbers: rows of the
# same key not yet merged by the AggregatingMergeTree are combined here. The full export takes the key columns
# as the table declares them (`*`), so a new dimension is exported without a change here; a batch export's
# column subset is checked against the declared columns. Hours become DateTime64(3) because Parquet has no
# seconds unit (the Arrow output of a DateTime would otherwise be a bare integer).
def web_stats_query(columns: str) -> str:
    return f"""
SELECT {columns}
FROM
(
    SELECT * REPLACE (toDateTime64(period_bucket, 3, 'UTC') AS period_bucket)
    FROM
    (
        SELECT
            * EXCEPT (persons_uniq_state, sessions_uniq_state, pageviews_count_state),
            uniqMerge(persons_uniq_state) AS persons,
            uniqMerge(sessions_uniq_state) AS sessions,
            sumMerge(pageviews_count_state) AS pageviews
        FROM web_pre_aggregated_stats
        WHERE period_bucket >= {WINDOW_START} AND period_bucket < {WINDOW_END}
            AND {TEAM_FILTER}
        GROUP BY ALL
    )
)
ORDER BY ALL
"""


def web_bounces_query(columns: str) -> str:
    return f"""
SELECT {columns}
FROM
(
    SELECT * REPLACE (toDateTime64(period_bucket, 3, 'UTC') AS period_bucket)
    FROM
    (
        SELECT
            * EXCEPT (
                persons_uniq_state, sessions_uniq_state, pageviews_count_state,
                bounces_count_state, total_session_duration_state, total_session_count_state
            ),
            uniqMerge(persons_uniq_state) AS persons,
            uniqMerge(sessions_uniq_state) AS sessions,
            sumMerge(pageviews_count_state) AS pageviews,
            sumMerge(bounces_count_state) AS bounces,
            sumMerge(total_session_duration_state) AS total_session_duration,
            sumMerge(total_session_count_state) AS total_session_count
        FROM web_pre_aggregated_bounces
        WHERE period_bucket >= {WINDOW_START} AND period_bucket < {WINDOW_END}
            AND {TEAM_FILTER}
        GROUP BY ALL
    )
)
ORDER BY ALL
"""


@dataclass(frozen=True)
class ExportWindow:
    """One interval of an export: a UTC day or hour, `start` included, `end` excluded."""

    start: datetime
    end: datetime

    @classmethod
    def of_day(cls, day: date) -> "ExportWindow":
        start = datetime(day.year, day.month, day.day, tzinfo=UTC)
        return cls(start, start + timedelta(days=1))

    @classmethod
    def of_hour(cls, start: datetime) -> "ExportWindow":
        start = start.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
        return cls(start, start + timedelta(hours=1))

    @property
    def day(self) -> date:
        return self.start.date()

    @property
    def hourly(self) -> bool:
        return self.end - self.start == timedelta(hours=1)

    @property
    def label(self) -> str:
        """How logs and failure messages name the interval: `2024-03-05` or `2024-03-05T10:00`."""
        return self.start.strftime("%Y-%m-%dT%H:00") if self.hourly else self.day.isoformat()

    def folder(self, dataset: str) -> str:
        """The interval's folder, relative to the destination (a contract): `<dataset>/date=YYYY-MM-DD`,
        and `/hour=HH` below it for an hour."""
        folder = day_folder(dataset, self.day)
        return f"{folder}/hour={self.start.hour:02d}" if self.hourly else folder


@dataclass(frozen=True)
class ExportSelection:
    """Which rows and columns of a dataset an export takes; empty means all of them."""

    team_ids: tuple[int, ...] = ()
    events: tuple[str, ...] = ()
    exclude_events: tuple[str, ...] = ()
    columns: tuple[str, ...] = ()


EVERYTHING = ExportSelection()


@dataclass(frozen=True)
class ExportDataset:
    """A dataset exported one interval at a time: its folder name (a contract), the table it reads, the
    columns it exports (in order), its SELECT, the column holding each row's time, whether it has events to
    filter on, and whether its table is filled per day by another asset (so an unfilled day is not empty)."""

    name: str
    source_table: str
    columns: tuple[str, ...]
    build_query: Callable[[str], str] = field(repr=False)  # the SELECT for a generated column list
    time_column: str
    column_expressions: dict[str, str] = field(default_factory=dict, repr=False)  # name -> SQL, where not itself
    has_events: bool = False
    filled_per_day: bool = False
    full_export_selects_star: bool = False  # the full export takes the table's columns as they are (`*`)
    # Columns whose values are nearly all different: Parquet's dictionary encoding gives up on them after a
    # megabyte, so trying costs a quarter of the encoding time of `events` and saves nothing.
    unique_valued_columns: frozenset[str] = frozenset()

    def select_list(self, columns: Sequence[str] = ()) -> str:
        """The SELECT's column list, generated from the declaration: every column, or `columns` in order."""
        unknown = [column for column in columns if column not in self.columns]
        if unknown:
            raise ValueError(f"{self.name} has no column(s) {', '.join(unknown)}; it has {', '.join(self.columns)}")
        if not columns and self.full_export_selects_star:
            return "*"
        chosen = columns or self.columns
        return ",\n    ".join(self._expression(column) for column in chosen)

    def _expression(self, column: str) -> str:
        expression = self.column_expressions.get(column)
        if expression is None or expression == quote_identifier(column) or expression == column:
            return quote_identifier(column)
        return f"{expression} AS {quote_identifier(column)}"

    def query(self, selection: ExportSelection = EVERYTHING) -> str:
        """The interval's SELECT: binds `start`, `end`, `teams` and, for events, `events` and
        `exclude_events` (see `parameters`)."""
        return self.build_query(self.select_list(selection.columns))

    def parameters(self, window: ExportWindow, selection: ExportSelection = EVERYTHING) -> dict[str, Any]:
        """The values `query` binds, for one interval (naive UTC times: the parameters' type says UTC)."""
        parameters: dict[str, Any] = {
            "start": window.start.astimezone(UTC).replace(tzinfo=None),
            "end": window.end.astimezone(UTC).replace(tzinfo=None),
            "teams": list(selection.team_ids),
        }
        if self.has_events:
            parameters["events"] = list(selection.events)
            parameters["exclude_events"] = list(selection.exclude_events)
        return parameters


EVENTS_DATASET = ExportDataset(
    name="events",
    source_table="events",
    columns=tuple(EVENTS_COLUMNS),
    build_query=events_query,
    time_column="timestamp",
    column_expressions=EVENTS_COLUMNS,
    has_events=True,
    unique_valued_columns=frozenset({"uuid", "properties", "timestamp"}),
)
WEB_STATS_DATASET = ExportDataset(
    name="web_pre_aggregated_stats",
    source_table="web_pre_aggregated_stats",
    columns=(*_PRE_AGGREGATE_KEYS, "pathname", "persons", "sessions", "pageviews"),
    build_query=web_stats_query,
    time_column="period_bucket",
    filled_per_day=True,
    full_export_selects_star=True,
)
WEB_BOUNCES_DATASET = ExportDataset(
    name="web_pre_aggregated_bounces",
    source_table="web_pre_aggregated_bounces",
    columns=(
        *_PRE_AGGREGATE_KEYS,
        "entry_pathname",
        "end_pathname",
        "persons",
        "sessions",
        "pageviews",
        "bounces",
        "total_session_duration",
        "total_session_count",
    ),
    build_query=web_bounces_query,
    time_column="period_bucket",
    filled_per_day=True,
    full_export_selects_star=True,
)

DATASETS: dict[str, ExportDataset] = {
    dataset.name: dataset for dataset in (EVENTS_DATASET, WEB_STATS_DATASET, WEB_BOUNCES_DATASET)
}

# Every column of `events` for one interval: the statement events_export runs (and the benchmark compares).
EVENTS_EXPORT_QUERY = EVENTS_DATASET.query()


def day_folder(dataset: str, day: date) -> str:
    """The folder of one day of a dataset, relative to the destination (a contract)."""
    return f"{dataset}/date={day.isoformat()}"
