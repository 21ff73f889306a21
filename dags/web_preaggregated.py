"""Web analytics pre-aggregates: hourly stats and bounces per team, read by the web analytics dashboards.

Dashboards must not scan raw ``events`` on every query, so two daily partitioned tables hold aggregate
*states* (``uniqState``, ``sumState``) per team, hour and dimension values; a dashboard merges them for
any date range and filter.

- ``web_pre_aggregated_stats``: pageviews, sessions and persons per pathname and hour.
- ``web_pre_aggregated_bounces``: sessions per entry/end pathname and hour of their first event, with
  bounces, total duration and session count.

Every run computes its whole partition window in one ``INSERT ... SELECT`` into a staging table of its
own, then swaps each day in with ``ALTER TABLE ... REPLACE PARTITION``: a day is replaced atomically,
and running a day twice leaves exactly what running it once leaves. At most one run that touches these
tables runs at a time (the ``web_analytics`` pool, limited in ``dagster.yaml``).
"""

import re
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    BackfillPolicy,
    Config,
    DagsterRunStatus,
    DailyPartitionsDefinition,
    DefaultScheduleStatus,
    DefaultSensorStatus,
    Failure,
    MaterializeResult,
    RunRequest,
    RunsFilter,
    ScheduleEvaluationContext,
    SensorEvaluationContext,
    SkipReason,
    asset,
    define_asset_job,
    schedule,
    sensor,
)
from pydantic import Field

from dags.common import (
    CLICKHOUSE_RETRY_POLICY,
    ClickHouseClient,
    ClickHouseResource,
    JobOwners,
    load_settings,
    quote_identifier,
)

STATS_TABLE = "web_pre_aggregated_stats"
BOUNCES_TABLE = "web_pre_aggregated_bounces"

# The concurrency pool of every asset that rewrites these tables. `dagster.yaml` limits pools to one run
# at a time (run granularity), which holds for job runs, asset backfills (`__ASSET_JOB`) and schedules alike.
WEB_ANALYTICS_POOL = "web_analytics"

JOB_NAME = "web_analytics_daily_job"
MAX_RUNTIME_SECONDS = 3 * 60 * 60

# Sessions belong to the day of their first event but may run past midnight; events this many days
# around the window are read to see whole sessions (sessions are capped at 24 hours).
SESSION_SPILL_DAYS = 1

# A session is a bounce when it has one pageview, no autocapture and lasts under this many seconds.
BOUNCE_MAX_SECONDS = 10

CHECK_TOTALS_MATCH_EVENTS = "totals_match_events"
CHECK_NO_EMPTY_DAYS = "no_empty_days_with_events"

_settings = load_settings()
WEB_ANALYTICS_DAILY_PARTITIONS = DailyPartitionsDefinition(
    start_date=_settings.web_analytics_start_date, end_offset=1, timezone="UTC"
)

# --- Tables (contracts: names, columns, partitioning) -----------------------------------------------------

# The dimensions every dashboard filters and breaks down by, in table order (their event properties are in
# DIMENSION_PROPERTIES below). Missing properties read as '' (strings), 0 (viewport) or false (click ids).
DIMENSION_COLUMNS = """
    host String,
    device_type String,
    browser String,
    os String,
    viewport_width Int64,
    viewport_height Int64,
    referring_domain String,
    utm_source String,
    utm_medium String,
    utm_campaign String,
    utm_term String,
    utm_content String,
    has_gclid Bool,
    has_fbclid Bool,
    country_code String,
    city_name String,
    region_code String,
    region_name String"""

DIMENSIONS = (
    "host", "device_type", "browser", "os", "viewport_width", "viewport_height", "referring_domain",
    "utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content", "has_gclid", "has_fbclid",
    "country_code", "city_name", "region_code", "region_name",
)  # fmt: skip


# Each dimension column and the event property it comes from; `has_*` are true when the property is non-empty.
DIMENSION_PROPERTIES: dict[str, tuple[str, str]] = {
    "host": ("$host", "String"),
    "device_type": ("$device_type", "String"),
    "browser": ("$browser", "String"),
    "os": ("$os", "String"),
    "viewport_width": ("$viewport_width", "Int64"),
    "viewport_height": ("$viewport_height", "Int64"),
    "referring_domain": ("$referring_domain", "String"),
    "utm_source": ("utm_source", "String"),
    "utm_medium": ("utm_medium", "String"),
    "utm_campaign": ("utm_campaign", "String"),
    "utm_term": ("utm_term", "String"),
    "utm_content": ("utm_content", "String"),
    "has_gclid": ("gclid", "String"),
    "has_fbclid": ("fbclid", "String"),
    "country_code": ("$geoip_country_code", "String"),
    "city_name": ("$geoip_city_name", "String"),
    "region_code": ("$geoip_subdivision_1_code", "String"),
    "region_name": ("$geoip_subdivision_1_name", "String"),
}
assert tuple(DIMENSION_PROPERTIES) == DIMENSIONS

# The properties the pre-aggregates read, parsed once per event (a third of the time of one parse per
# property); missing properties come out as '' and 0.
PROPERTIES_TUPLE = (
    "Tuple("
    + ", ".join(f'"{key}" {type_}' for key, type_ in [("$pathname", "String"), *DIMENSION_PROPERTIES.values()])
    + ")"
)


def parse_properties(properties: str) -> str:
    """The expression that parses the JSON ``properties`` into a tuple of the properties read here."""
    return f"JSONExtract({properties}, '{PROPERTIES_TUPLE}')"


def property_of(parsed: str, key: str) -> str:
    return f"tupleElement({parsed}, '{key}')"


def dimension_expressions(parsed: str) -> str:
    """SELECT expressions for the dimension columns, from a tuple made by ``parse_properties``."""
    expressions = []
    for column, (key, _) in DIMENSION_PROPERTIES.items():
        value = property_of(parsed, key)
        expressions.append(f"{value} != '' AS {column}" if column.startswith("has_") else f"{value} AS {column}")
    return ",\n    ".join(expressions)


_DIMENSION_LIST = ", ".join(DIMENSIONS)

# AggregatingMergeTree merges rows with equal sorting keys, so the key holds every dimension.
CREATE_STATS_TABLE = f"""
CREATE TABLE IF NOT EXISTS {STATS_TABLE}
(
    team_id UInt64,
    period_bucket DateTime('UTC'),{DIMENSION_COLUMNS},
    pathname String,
    persons_uniq_state AggregateFunction(uniq, UUID),
    sessions_uniq_state AggregateFunction(uniq, String),
    pageviews_count_state AggregateFunction(sum, UInt64)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMMDD(period_bucket)
ORDER BY (team_id, period_bucket, host, pathname, {_DIMENSION_LIST.replace("host, ", "")})
"""

CREATE_BOUNCES_TABLE = f"""
CREATE TABLE IF NOT EXISTS {BOUNCES_TABLE}
(
    team_id UInt64,
    period_bucket DateTime('UTC'),{DIMENSION_COLUMNS},
    entry_pathname String,
    end_pathname String,
    persons_uniq_state AggregateFunction(uniq, UUID),
    sessions_uniq_state AggregateFunction(uniq, String),
    pageviews_count_state AggregateFunction(sum, UInt64),
    bounces_count_state AggregateFunction(sum, UInt64),
    total_session_duration_state AggregateFunction(sum, Int64),
    total_session_count_state AggregateFunction(sum, UInt64)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMMDD(period_bucket)
ORDER BY (team_id, period_bucket, host, entry_pathname, end_pathname, {_DIMENSION_LIST.replace("host, ", "")})
"""


def create_web_preaggregated_tables(client: ClickHouseClient) -> None:
    """Create both pre-aggregate tables if they do not exist (idempotent)."""
    client.command(CREATE_STATS_TABLE)
    client.command(CREATE_BOUNCES_TABLE)


# --- Computing a window of days -----------------------------------------------------------------------------

# Only when a run is limited to some teams; the values are bound, only this fixed fragment is added.
TEAM_FILTER = "AND team_id IN {team_ids:Array(Int64)}"

# One row per pathname, hour and dimension values of the window's pageviews.
INSERT_STATS = f"""
INSERT INTO {{staging:Identifier}}
    (team_id, period_bucket, {_DIMENSION_LIST}, pathname,
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
      {{team_filter}}
)
GROUP BY team_id, period_bucket, {_DIMENSION_LIST}, pathname
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
  {{team_filter}}
GROUP BY team_id, session_id
HAVING pageviews > 0
   AND toDate(session_start) >= {{first_day:Date}}
   AND toDate(session_start) < {{end_day:Date}}
"""

INSERT_BOUNCES = f"""
INSERT INTO {{staging:Identifier}}
    (team_id, period_bucket, {_DIMENSION_LIST}, entry_pathname, end_pathname,
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
GROUP BY team_id, period_bucket, {_DIMENSION_LIST}, entry_pathname, end_pathname
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

# The pre-aggregate's totals per team and day, and the same totals straight from `events`.
TABLE_TOTALS = """
SELECT team_id, toDate(period_bucket) AS day, sumMerge(pageviews_count_state) AS pageviews,
       uniqMerge(sessions_uniq_state) AS sessions
FROM {table:Identifier}
WHERE toDate(period_bucket) >= {first_day:Date}
  AND toDate(period_bucket) < {end_day:Date}
  {team_filter}
GROUP BY team_id, day
"""

STATS_TOTALS_FROM_EVENTS = """
SELECT toUInt64(team_id) AS team_id, toDate(timestamp) AS day, count() AS pageviews,
       uniqIf(`$session_id`, `$session_id` != '') AS sessions
FROM events
WHERE event = '$pageview'
  AND toDate(timestamp) >= {first_day:Date}
  AND toDate(timestamp) < {end_day:Date}
  {team_filter}
GROUP BY team_id, day
"""

BOUNCES_TOTALS_FROM_EVENTS = f"""
SELECT toUInt64(team_id) AS team_id, toDate(session_start) AS day, sum(pageviews) AS pageviews,
       uniq(session_id) AS sessions
FROM ({SESSIONS})
GROUP BY team_id, day
"""

STALE_STAGING_TABLES = """
SELECT name
FROM system.tables
WHERE database = currentDatabase()
  AND startsWith(name, {prefix:String})
  AND metadata_modification_time <= now() - toIntervalSecond({age_seconds:UInt32})
"""


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


class WebPreaggregatedConfig(Config):
    team_ids: list[int] | None = Field(
        default=None,
        description="Recompute only these teams (their rows of each day are replaced, other teams' are kept). "
        "Default: every team.",
    )
    extra_clickhouse_settings: dict[str, Any] = Field(
        default_factory=dict,
        description="ClickHouse settings for the computing query, e.g. {max_threads: 4, max_memory_usage: 2e10}.",
    )


_SETTING_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def config_error(message: str) -> Failure:
    """A failure that retrying cannot fix: the run stops at once, before anything is written."""
    return Failure(description=message, allow_retries=False)


def validate_config(client: ClickHouseClient, config: WebPreaggregatedConfig) -> None:
    """Reject bad config before anything is written, with an error that says what to change."""
    if config.team_ids is not None:
        if not config.team_ids:
            raise config_error("team_ids is empty: leave it out to compute every team, or list at least one team id.")
        negative = [team for team in config.team_ids if team < 0]
        if negative:
            raise config_error(f"team_ids must be non-negative team ids, got {negative}.")
    settings = config.extra_clickhouse_settings
    if not settings:
        return
    malformed = [name for name in settings if not _SETTING_NAME.match(name)]
    if malformed:
        raise config_error(f"extra_clickhouse_settings has names that are not ClickHouse settings: {malformed}.")
    not_scalar = [name for name, value in settings.items() if not isinstance(value, str | int | float | bool)]
    if not_scalar:
        raise config_error(f"extra_clickhouse_settings values must be numbers, strings or booleans: {not_scalar}.")
    known = {
        row["name"]
        for row in client.query_rows(
            "SELECT name FROM system.settings WHERE name IN {names:Array(String)}", {"names": list(settings)}
        )
    }
    unknown = sorted(set(settings) - known)
    if unknown:
        raise config_error(
            f"extra_clickhouse_settings names unknown ClickHouse settings: {unknown}. "
            "See SELECT name FROM system.settings for the ones this server knows."
        )
    try:
        client.command("SELECT 1", settings=settings)
    except Exception as error:
        raise config_error(f"ClickHouse rejected extra_clickhouse_settings {settings}: {error}") from None


def days_of(first_day: date, end_day: date) -> list[date]:
    return [first_day + timedelta(days=offset) for offset in range((end_day - first_day).days)]


def staging_table_name(target: str, run_id: str) -> str:
    """A staging table per run and target: concurrent runs never share one."""
    return f"{target}_staging_{run_id.replace('-', '')}"


@contextmanager
def staging_table(client: ClickHouseClient, target: str, run_id: str) -> Iterator[str]:
    """A fresh empty copy of ``target``'s structure for this run, dropped afterwards (also on failure)."""
    name = staging_table_name(target, run_id)
    client.command("DROP TABLE IF EXISTS {name:Identifier} SYNC", {"name": name})  # a retried step's leftover
    # `AS {target:Identifier}` does not parse; the target is one of this module's table names.
    client.command(f"CREATE TABLE {{name:Identifier}} AS {quote_identifier(target)}", {"name": name})
    try:
        yield name
    finally:
        client.command("DROP TABLE IF EXISTS {name:Identifier} SYNC", {"name": name})


def drop_stale_staging_tables(
    client: ClickHouseClient, pre_aggregate: PreAggregate, older_than_seconds: int = 2 * MAX_RUNTIME_SECONDS
) -> list[str]:
    """Drop staging tables left by runs killed without cleaning up (older than any run may last)."""
    stale = [
        row["name"]
        for row in client.query_rows(
            STALE_STAGING_TABLES, {"prefix": pre_aggregate.staging_prefix, "age_seconds": older_than_seconds}
        )
    ]
    for name in stale:
        client.command("DROP TABLE IF EXISTS {name:Identifier} SYNC", {"name": name})
    return stale


def window_parameters(first_day: date, end_day: date, team_ids: Sequence[int] | None) -> dict[str, Any]:
    return {"first_day": first_day, "end_day": end_day, "team_ids": list(team_ids or [])}


def with_team_filter(sql: str, team_ids: Sequence[int] | None) -> str:
    return sql.replace("{team_filter}", TEAM_FILTER if team_ids else "")


def refresh_window(
    client: ClickHouseClient,
    pre_aggregate: PreAggregate,
    *,
    first_day: date,
    end_day: date,
    run_id: str,
    team_ids: Sequence[int] | None = None,
    extra_settings: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Recompute the days ``[first_day, end_day)`` of one pre-aggregate; returns what happened, for metadata.

    One INSERT ... SELECT computes the whole window into a staging table; then each day replaces the
    target's partition (a day with no rows is dropped from the target, so deleted events disappear too).
    """
    create_web_preaggregated_tables(client)
    params = window_parameters(first_day, end_day, team_ids)
    with staging_table(client, pre_aggregate.table, run_id) as staging:
        started = time.monotonic()
        client.command(
            with_team_filter(pre_aggregate.insert_sql, team_ids),
            {**params, "staging": staging},
            settings=extra_settings,
        )
        insert_seconds = time.monotonic() - started
        rows_by_day = {row["day"]: row["rows"] for row in client.query_rows(ROWS_BY_DAY, {"table": staging})}
        if team_ids:
            client.command(COPY_OTHER_TEAMS, {**params, "staging": staging, "target": pre_aggregate.table})
        staged_days = {row["day"] for row in client.query_rows(ROWS_BY_DAY, {"table": staging})}

        started = time.monotonic()
        emptied: list[str] = []
        for day in days_of(first_day, end_day):
            partition = day.strftime("%Y%m%d")
            if day.isoformat() in staged_days:
                # ALTER takes no identifier parameters; both names are ours (a table constant, the run id).
                client.command(
                    f"ALTER TABLE {quote_identifier(pre_aggregate.table)} REPLACE PARTITION ID {{partition:String}} "
                    f"FROM {quote_identifier(staging)}",
                    {"partition": partition},
                )
            else:
                # ClickHouse refuses REPLACE PARTITION from an empty source partition: drop the day instead.
                client.command(
                    f"ALTER TABLE {quote_identifier(pre_aggregate.table)} DROP PARTITION ID {{partition:String}}",
                    {"partition": partition},
                )
                emptied.append(day.isoformat())
        replace_seconds = time.monotonic() - started
    return {
        "rows_written": sum(rows_by_day.values()),
        "rows_by_day": {day.isoformat(): rows_by_day.get(day.isoformat(), 0) for day in days_of(first_day, end_day)},
        "days_emptied": emptied,
        "insert_seconds": round(insert_seconds, 3),
        "replace_seconds": round(replace_seconds, 3),
        "staging_table": staging,
    }


def check_totals(
    client: ClickHouseClient,
    pre_aggregate: PreAggregate,
    *,
    first_day: date,
    end_day: date,
    team_ids: Sequence[int] | None = None,
) -> tuple[AssetCheckResult, AssetCheckResult]:
    """Compare the pre-aggregate's pageviews and sessions per team and day with ``events`` itself."""
    params = window_parameters(first_day, end_day, team_ids)
    table_rows = client.query_rows(with_team_filter(TABLE_TOTALS, team_ids), {**params, "table": pre_aggregate.table})
    event_rows = client.query_rows(with_team_filter(pre_aggregate.totals_from_events_sql, team_ids), params)

    def by_team_day(rows: list[dict[str, Any]]) -> dict[tuple[int, str], tuple[int, int]]:
        return {(row["team_id"], str(row["day"])): (row["pageviews"], row["sessions"]) for row in rows}

    table, events = by_team_day(table_rows), by_team_day(event_rows)
    mismatches = [
        {
            "team_id": team,
            "day": day,
            "pageviews": table.get((team, day), (0, 0))[0],
            "pageviews_in_events": events.get((team, day), (0, 0))[0],
            "sessions": table.get((team, day), (0, 0))[1],
            "sessions_in_events": events.get((team, day), (0, 0))[1],
        }
        for team, day in sorted(set(table) | set(events))
        if table.get((team, day), (0, 0)) != events.get((team, day), (0, 0))
    ]
    days_with_events = sorted({day for _, day in events})
    days_in_table = {day for _, day in table}
    empty_days = [day for day in days_with_events if day not in days_in_table]
    totals = AssetCheckResult(
        check_name=CHECK_TOTALS_MATCH_EVENTS,
        passed=not mismatches,
        severity=AssetCheckSeverity.ERROR,
        description=None if not mismatches else f"{len(mismatches)} team-days differ from events; recompute them",
        metadata={
            "team_days_checked": len(set(table) | set(events)),
            "pageviews": sum(value[0] for value in table.values()),
            "pageviews_in_events": sum(value[0] for value in events.values()),
            "mismatches": mismatches[:50],
        },
    )
    no_empty_days = AssetCheckResult(
        check_name=CHECK_NO_EMPTY_DAYS,
        passed=not empty_days,
        severity=AssetCheckSeverity.ERROR,
        description=None if not empty_days else f"days with events but no rows: {empty_days}",
        metadata={"days_with_events": days_with_events, "empty_days": empty_days},
    )
    return totals, no_empty_days


# --- Assets ------------------------------------------------------------------------------------------------

if _settings.web_preaggregated_max_partitions_per_run < 1:
    raise ValueError(
        "DAGSTER_WEB_PREAGGREGATED_MAX_PARTITIONS_PER_RUN must be at least 1 (days per backfill run), "
        f"got {_settings.web_preaggregated_max_partitions_per_run}"
    )
BACKFILL_POLICY = BackfillPolicy.multi_run(max_partitions_per_run=_settings.web_preaggregated_max_partitions_per_run)


def check_specs(asset_name: str) -> list[AssetCheckSpec]:
    """The checks run after each materialization, recorded per partition (a multi-day run records one
    evaluation for its whole window, listing the days in its metadata)."""
    return [
        AssetCheckSpec(
            CHECK_TOTALS_MATCH_EVENTS,
            asset=asset_name,
            partitions_def=WEB_ANALYTICS_DAILY_PARTITIONS,
            description="Pageviews and unique sessions per team and day equal those computed from events.",
        ),
        AssetCheckSpec(
            CHECK_NO_EMPTY_DAYS,
            asset=asset_name,
            partitions_def=WEB_ANALYTICS_DAILY_PARTITIONS,
            description="Every day of the run with pageviews in events has rows in the pre-aggregate.",
        ),
    ]


def materialize_window(
    context: AssetExecutionContext,
    config: WebPreaggregatedConfig,
    clickhouse: ClickHouseResource,
    pre_aggregate: PreAggregate,
) -> MaterializeResult:
    window = context.partition_time_window
    first_day, end_day = window.start.date(), window.end.date()
    team_ids = sorted(set(config.team_ids)) if config.team_ids else None
    with clickhouse.get_client(context) as client:
        validate_config(client, config)
        if not client.command("EXISTS TABLE events"):
            raise config_error(
                f"There is no events table in database {client.database!r}: load events first "
                "(locally: materialize demo_events, or run bin/demo)."
            )
        stale = drop_stale_staging_tables(client, pre_aggregate)
        refreshed = refresh_window(
            client,
            pre_aggregate,
            first_day=first_day,
            end_day=end_day,
            run_id=context.run.run_id,
            team_ids=team_ids,
            extra_settings=config.extra_clickhouse_settings,
        )
        started = time.monotonic()
        totals, no_empty_days = check_totals(
            client, pre_aggregate, first_day=first_day, end_day=end_day, team_ids=team_ids
        )
        check_seconds = time.monotonic() - started
        table_rows = client.command(
            "SELECT count() FROM {table:Identifier} WHERE toDate(period_bucket) >= {first_day:Date} "
            "AND toDate(period_bucket) < {end_day:Date}",
            {"table": pre_aggregate.table, "first_day": first_day, "end_day": end_day},
        )
    days = [day.isoformat() for day in days_of(first_day, end_day)]
    context.log.info(
        f"{pre_aggregate.table}: {refreshed['rows_written']} rows for {days[0]}..{days[-1]} "
        f"in {refreshed['insert_seconds']}s, partitions swapped in {refreshed['replace_seconds']}s"
    )
    return MaterializeResult(
        metadata={
            "table": pre_aggregate.table,
            "rows_written": refreshed["rows_written"],
            "rows_by_day": refreshed["rows_by_day"],
            "dagster/row_count": int(table_rows),
            "days_covered": days,
            "days_emptied": refreshed["days_emptied"],
            "teams": team_ids or "all",
            "insert_seconds": refreshed["insert_seconds"],
            "replace_seconds": refreshed["replace_seconds"],
            "check_seconds": round(check_seconds, 3),
            "stale_staging_tables_dropped": stale,
        },
        check_results=[totals, no_empty_days],
    )


ASSET_OPTIONS: dict[str, Any] = {
    "partitions_def": WEB_ANALYTICS_DAILY_PARTITIONS,
    "backfill_policy": BACKFILL_POLICY,
    "kinds": {"clickhouse"},
    "tags": JobOwners.TEAM_WEB_ANALYTICS.tags(),
    "retry_policy": CLICKHOUSE_RETRY_POLICY,
    "pool": WEB_ANALYTICS_POOL,
    "group_name": "web_analytics",
}


@asset(check_specs=check_specs(STATS_TABLE), **ASSET_OPTIONS)
def web_pre_aggregated_stats(
    context: AssetExecutionContext, config: WebPreaggregatedConfig, clickhouse: ClickHouseResource
) -> MaterializeResult:
    """Pageviews, unique sessions and unique persons per team, hour, pathname and visitor dimensions.

    The dashboards' traffic and paths panels read this instead of raw events.
    """
    return materialize_window(context, config, clickhouse, STATS)


@asset(check_specs=check_specs(BOUNCES_TABLE), **ASSET_OPTIONS)
def web_pre_aggregated_bounces(
    context: AssetExecutionContext, config: WebPreaggregatedConfig, clickhouse: ClickHouseResource
) -> MaterializeResult:
    """Sessions per team, hour of their first event, entry and end pathname and visitor dimensions.

    With bounces (one pageview, no autocapture, under 10 seconds), total duration and session count,
    for the dashboards' bounce rate and session duration panels.
    """
    return materialize_window(context, config, clickhouse, BOUNCES)


WEB_ANALYTICS_ASSETS = [web_pre_aggregated_stats, web_pre_aggregated_bounces]
WEB_ANALYTICS_ASSET_KEYS = frozenset(AssetKey(table) for table in (STATS_TABLE, BOUNCES_TABLE))

web_analytics_daily_job = define_asset_job(
    JOB_NAME,
    selection=WEB_ANALYTICS_ASSETS,
    tags={**JobOwners.TEAM_WEB_ANALYTICS.tags(), "dagster/max_runtime": str(MAX_RUNTIME_SECONDS)},
    description="Recompute the web analytics pre-aggregates for the selected days (one run at a time).",
)


# --- Schedules -----------------------------------------------------------------------------------------------

ACTIVE_STATUSES = [
    DagsterRunStatus.QUEUED,
    DagsterRunStatus.NOT_STARTED,
    DagsterRunStatus.STARTING,
    DagsterRunStatus.STARTED,
    DagsterRunStatus.CANCELING,
]


def active_web_analytics_runs(context: ScheduleEvaluationContext) -> list[str]:
    """Queued or running runs of the job, or of any backfill that rewrites these tables."""
    runs = context.instance.get_runs(RunsFilter(statuses=ACTIVE_STATUSES))
    return [
        run.run_id
        for run in runs
        if run.job_name == JOB_NAME or WEB_ANALYTICS_ASSET_KEYS & set(run.asset_selection or ())
    ]


def partition_request(context: ScheduleEvaluationContext, day: date) -> RunRequest | SkipReason:
    busy = active_web_analytics_runs(context)
    if busy:
        return SkipReason(
            f"{JOB_NAME} already has a queued or running run ({', '.join(busy[:3])}); skipping this tick."
        )
    scheduled = context.scheduled_execution_time or datetime.now(UTC)
    return RunRequest(
        run_key=f"{day.isoformat()}@{scheduled.isoformat()}",
        partition_key=day.isoformat(),
    )


@schedule(
    job=web_analytics_daily_job,
    cron_schedule=_settings.web_analytics_yesterday_cron,
    execution_timezone="UTC",
    default_status=DefaultScheduleStatus.RUNNING,
    description="Yesterday's partition, once it is complete.",
)
def web_analytics_yesterday_schedule(context: ScheduleEvaluationContext) -> RunRequest | SkipReason:
    scheduled = context.scheduled_execution_time or datetime.now(UTC)
    return partition_request(context, scheduled.date() - timedelta(days=1))


@schedule(
    job=web_analytics_daily_job,
    cron_schedule=_settings.web_analytics_today_cron,
    execution_timezone="UTC",
    default_status=DefaultScheduleStatus.RUNNING,
    description="Today's partition so far, refreshed through the day.",
)
def web_analytics_today_schedule(context: ScheduleEvaluationContext) -> RunRequest | SkipReason:
    scheduled = context.scheduled_execution_time or datetime.now(UTC)
    return partition_request(context, scheduled.date())


WEB_ANALYTICS_SCHEDULES = [web_analytics_yesterday_schedule, web_analytics_today_schedule]


# --- The pool's limit -------------------------------------------------------------------------------------------


@sensor(
    minimum_interval_seconds=60,
    default_status=DefaultSensorStatus.RUNNING,
    tags=JobOwners.TEAM_WEB_ANALYTICS.tags(),
    description=f"Makes sure the {WEB_ANALYTICS_POOL} pool has its limit before any of its runs is queued.",
)
def web_analytics_pool_limit_sensor(context: SensorEvaluationContext) -> SkipReason:
    """Write the pool's limit to the instance if it has none yet.

    Dagster 1.13 stores a pool's default limit (dagster.yaml ``concurrency.pools.default_limit``) only while
    deciding its first dequeue pass for that pool, and decides that pass as if the pool were unlimited: on a
    fresh instance, the first queued web analytics runs would all start together. Writing the limit at
    daemon start closes that gap. A limit set in the UI or with ``dagster instance concurrency set`` stays.
    """
    storage = context.instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return SkipReason("This instance's storage has no concurrency pools; runs are limited by tags only.")
    limits = {pool.name: pool.limit for pool in storage.get_pool_limits()}
    if WEB_ANALYTICS_POOL in limits:
        return SkipReason(f"Pool {WEB_ANALYTICS_POOL!r} is limited to {limits[WEB_ANALYTICS_POOL]} run(s) at a time.")
    if context.instance.global_op_concurrency_default_limit:
        storage.initialize_concurrency_limit_to_default(WEB_ANALYTICS_POOL)
    else:
        storage.set_concurrency_slots(WEB_ANALYTICS_POOL, 1)
    limit = {pool.name: pool.limit for pool in storage.get_pool_limits()}.get(WEB_ANALYTICS_POOL)
    return SkipReason(f"Set the limit of pool {WEB_ANALYTICS_POOL!r} to {limit}.")
