"""Web analytics pre-aggregates: known answers from hand-written sessions, demo traffic equal to `events`,
idempotent and atomic per day, multi-day runs, the team filter, bad config, checks, schedules and the pool."""

import json
import subprocess
import sys
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from dagster import (
    AssetCheckKey,
    AssetKey,
    DagsterInstance,
    DagsterRunStatus,
    RunRequest,
    SkipReason,
    build_schedule_context,
    build_sensor_context,
    materialize,
)
from dagster._core.event_api import PartitionKeyFilter
from dagster._core.remote_origin import InProcessCodeLocationOrigin, RemoteJobOrigin, RemoteRepositoryOrigin
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin

from dags.common import PROJECT_ROOT, ClickHouseClient, ClickHouseResource
from dags.events import create_events_table, generate_demo_events
from dags.locations.web_analytics import defs
from dags.tests.conftest import partition_metadata
from dags.web_analytics.assets import (
    JOB_NAME,
    WEB_ANALYTICS_POOL,
    web_pre_aggregated_bounces,
    web_pre_aggregated_stats,
)
from dags.web_analytics.checks import (
    CHECK_NO_EMPTY_DAYS,
    CHECK_NO_EVENTS_LEFT_OUT,
    CHECK_TOTALS_MATCH_EVENTS,
    check_totals,
)
from dags.web_analytics.refresh import drop_stale_staging_tables, refresh_window
from dags.web_analytics.schedules import (
    web_analytics_pool_limit_sensor,
    web_analytics_today_schedule,
    web_analytics_yesterday_schedule,
)
from dags.web_analytics.schema import BOUNCES_TABLE, DIMENSIONS, STATS_TABLE, create_web_preaggregated_tables
from dags.web_analytics.settings import load_web_analytics_settings
from dags.web_analytics.sql import BOUNCES, STATS

pytestmark = pytest.mark.end_to_end  # see conftest: embedded only unless every_engine

ASSETS = [web_pre_aggregated_stats, web_pre_aggregated_bounces]
PERSON_1, PERSON_2, PERSON_3 = (f"00000000-0000-0000-0000-00000000000{n}" for n in (1, 2, 3))

STATS_BY_PATHNAME = f"""
SELECT team_id, toString(period_bucket) AS hour, pathname,
       sumMerge(pageviews_count_state) AS pageviews, uniqMerge(sessions_uniq_state) AS sessions,
       uniqMerge(persons_uniq_state) AS persons
FROM {STATS_TABLE}
GROUP BY team_id, hour, pathname
ORDER BY team_id, hour, pathname
"""

BOUNCES_BY_PATHNAMES = f"""
SELECT team_id, toString(period_bucket) AS hour, entry_pathname, end_pathname,
       uniqMerge(sessions_uniq_state) AS sessions, uniqMerge(persons_uniq_state) AS persons,
       sumMerge(pageviews_count_state) AS pageviews, sumMerge(bounces_count_state) AS bounces,
       sumMerge(total_session_duration_state) AS duration, sumMerge(total_session_count_state) AS session_count
FROM {BOUNCES_TABLE}
GROUP BY team_id, hour, entry_pathname, end_pathname
ORDER BY team_id, hour, entry_pathname, end_pathname
"""


def add_event(
    ch: ClickHouseClient,
    event: str,
    at: str,
    session: str,
    person: str,
    pathname: str = "",
    team: int = 1,
    **extra: Any,
) -> None:
    properties = {
        "$host": "www.example.com",
        "$pathname": pathname,
        "$device_type": "Desktop",
        "$browser": "Chrome",
        "$os": "Mac OS X",
        "$viewport_width": 1440,
        "$viewport_height": 900,
        "$referring_domain": "$direct",
        "$geoip_country_code": "US",
        "$geoip_city_name": "San Francisco",
        "$geoip_subdivision_1_code": "CA",
        "$geoip_subdivision_1_name": "California",
        **extra,
    }
    ch.command(
        "INSERT INTO events (uuid, event, properties, timestamp, team_id, distinct_id, person_id, `$session_id`) "
        "VALUES (generateUUIDv4(), {event:String}, {properties:String}, {at:DateTime64(6, 'UTC')}, {team:Int64}, "
        "{person:String}, {person:UUID}, {session:String})",
        {
            "event": event,
            "properties": json.dumps(properties),
            "at": at,
            "team": team,
            "person": person,
            "session": session,
        },
    )


@pytest.fixture
def sessions(ch: ClickHouseClient) -> ClickHouseClient:
    """Hand-written sessions of team 1 on 2024-03-15 (and one of team 2) with known answers."""
    create_events_table(ch)
    # A: three pageviews over five minutes, from an ad click.
    for at, path in (("10:00:00", "/home"), ("10:00:30", "/pricing"), ("10:05:00", "/home")):
        add_event(ch, "$pageview", f"2024-03-15 {at}", "A", PERSON_1, path, utm_source="google", gclid="x1")
    # B: one pageview, gone 9.999 s later: a bounce.
    add_event(ch, "$pageview", "2024-03-15 10:10:00", "B", PERSON_2, "/pricing")
    add_event(ch, "$pageleave", "2024-03-15 10:10:09.999", "B", PERSON_2, "/pricing")
    # C: one pageview, gone exactly 10 s later: not a bounce.
    add_event(ch, "$pageview", "2024-03-15 11:00:00", "C", PERSON_2, "/docs")
    add_event(ch, "$pageleave", "2024-03-15 11:00:10", "C", PERSON_2, "/docs")
    # D: one pageview and a click 2 s later: not a bounce.
    add_event(ch, "$pageview", "2024-03-15 11:30:00", "D", PERSON_3, "/docs")
    add_event(ch, "$autocapture", "2024-03-15 11:30:02", "D", PERSON_3, "/docs")
    # E: clicks only, no pageview: not a web analytics session.
    add_event(ch, "$autocapture", "2024-03-15 12:00:00", "E", PERSON_3, "/docs")
    add_event(ch, "$autocapture", "2024-03-15 12:00:01", "E", PERSON_3, "/docs")
    # A pageview without a session: a pageview, not a session.
    add_event(ch, "$pageview", "2024-03-15 12:30:00", "", PERSON_3, "/home")
    # F: starts ten seconds before midnight and ends the next day: it belongs to the 15th, 23:00.
    add_event(ch, "$pageview", "2024-03-15 23:59:50", "F", PERSON_1, "/blog")
    add_event(ch, "$pageview", "2024-03-16 00:00:20", "F", PERSON_1, "/signup")
    # G: another team.
    add_event(ch, "$pageview", "2024-03-15 09:00:00", "G", PERSON_1, "/", team=2)
    return ch


def run(
    clickhouse: ClickHouseResource,
    instance: DagsterInstance,
    partition: str | tuple[str, str],
    config: dict[str, Any] | None = None,
    raise_on_error: bool = True,
):
    tags = {}
    if isinstance(partition, tuple):
        tags = {"dagster/asset_partition_range_start": partition[0], "dagster/asset_partition_range_end": partition[1]}
    return materialize(
        ASSETS,
        partition_key=partition if isinstance(partition, str) else None,
        tags=tags,
        resources={"clickhouse": clickhouse},
        run_config={"ops": {asset.key.path[0]: {"config": config} for asset in ASSETS}} if config else None,
        instance=instance,
        raise_on_error=raise_on_error,
    )


def snapshot(ch: ClickHouseClient, table: str) -> list[dict[str, Any]]:
    """Every stored row (not merged), states finalized: equal snapshots mean equal tables."""
    states = [
        row["name"]
        for row in ch.query_rows(
            "SELECT name FROM system.columns WHERE database = currentDatabase() AND table = {table:String} "
            "AND type LIKE 'AggregateFunction%'",
            {"table": table},
        )
    ]
    finalized = ", ".join(f"finalizeAggregation({name}) AS {name}" for name in states)
    return ch.query_rows(f"SELECT * EXCEPT ({', '.join(states)}), {finalized} FROM {table} ORDER BY ALL")


def staging_tables(ch: ClickHouseClient) -> list[str]:
    return [
        row["name"]
        for row in ch.query_rows(
            "SELECT name FROM system.tables WHERE database = currentDatabase() AND name LIKE '%\\_staging\\_%'"
        )
    ]


def metadata_by_day(result, asset_name: str) -> dict[str, dict[str, Any]]:
    """The metadata of each partition the run materialized (each day reports its own figures)."""
    events = [event for event in result.get_asset_materialization_events() if event.asset_key == AssetKey(asset_name)]
    reported = {
        event.partition: {key: value.value for key, value in event.materialization.metadata.items()} for event in events
    }
    assert len(reported) == len(events)
    return reported


def metadata(result, asset_name: str) -> dict[str, Any]:
    """The metadata of the asset's one materialization in a run of one day."""
    [reported] = metadata_by_day(result, asset_name).values()
    return reported


# --- Tables ---------------------------------------------------------------------------------------------


@pytest.mark.every_engine
def test_tables_have_the_contract_columns_and_daily_partitions(ch: ClickHouseClient) -> None:
    create_web_preaggregated_tables(ch)
    create_web_preaggregated_tables(ch)  # idempotent
    common = {
        "team_id": "UInt64",
        "period_bucket": "DateTime('UTC')",
        "persons_uniq_state": "AggregateFunction(uniq, UUID)",
        "sessions_uniq_state": "AggregateFunction(uniq, String)",
        "pageviews_count_state": "AggregateFunction(sum, UInt64)",
    }
    bounces_only = {
        "entry_pathname": "String",
        "end_pathname": "String",
        "bounces_count_state": "AggregateFunction(sum, UInt64)",
        "total_session_duration_state": "AggregateFunction(sum, Int64)",
        "total_session_count_state": "AggregateFunction(sum, UInt64)",
    }
    for table, own in ((STATS_TABLE, {"pathname": "String"}), (BOUNCES_TABLE, bounces_only)):
        columns = {
            row["name"]: row["type"]
            for row in ch.query_rows(
                "SELECT name, type FROM system.columns WHERE database = currentDatabase() AND table = {t:String}",
                {"t": table},
            )
        }
        assert columns.items() >= {**common, **own}.items()
        assert set(DIMENSIONS) <= set(columns)
        partition_key = ch.command(
            "SELECT partition_key FROM system.tables WHERE database = currentDatabase() AND name = {t:String}",
            {"t": table},
        )
        assert partition_key == "toYYYYMMDD(period_bucket)"


# --- Known answers -------------------------------------------------------------------------------------------


@pytest.mark.every_engine
def test_stats_count_pageviews_sessions_and_persons_per_pathname_and_hour(
    sessions: ClickHouseClient, clickhouse: ClickHouseResource, dagster_instance: DagsterInstance
) -> None:
    run(clickhouse, dagster_instance, ("2024-03-15", "2024-03-16"))

    row = {"team_id": 1}
    assert sessions.query_rows(STATS_BY_PATHNAME) == [
        {**row, "hour": "2024-03-15 10:00:00", "pathname": "/home", "pageviews": 2, "sessions": 1, "persons": 1},
        {**row, "hour": "2024-03-15 10:00:00", "pathname": "/pricing", "pageviews": 2, "sessions": 2, "persons": 2},
        {**row, "hour": "2024-03-15 11:00:00", "pathname": "/docs", "pageviews": 2, "sessions": 2, "persons": 2},
        {**row, "hour": "2024-03-15 12:00:00", "pathname": "/home", "pageviews": 1, "sessions": 0, "persons": 1},
        {**row, "hour": "2024-03-15 23:00:00", "pathname": "/blog", "pageviews": 1, "sessions": 1, "persons": 1},
        {**row, "hour": "2024-03-16 00:00:00", "pathname": "/signup", "pageviews": 1, "sessions": 1, "persons": 1},
        {"team_id": 2, "hour": "2024-03-15 09:00:00", "pathname": "/", "pageviews": 1, "sessions": 1, "persons": 1},
    ]
    # The dimensions come from each pageview's properties.
    [ad_click] = sessions.query_rows(
        f"SELECT host, device_type, browser, os, viewport_width, viewport_height, referring_domain, utm_source, "
        f"utm_medium, has_gclid, has_fbclid, country_code, city_name, region_code, region_name "
        f"FROM {STATS_TABLE} WHERE pathname = '/home' AND toHour(period_bucket) = 10"
    )
    assert ad_click == {
        "host": "www.example.com",
        "device_type": "Desktop",
        "browser": "Chrome",
        "os": "Mac OS X",
        "viewport_width": 1440,
        "viewport_height": 900,
        "referring_domain": "$direct",
        "utm_source": "google",
        "utm_medium": "",
        "has_gclid": True,
        "has_fbclid": False,
        "country_code": "US",
        "city_name": "San Francisco",
        "region_code": "CA",
        "region_name": "California",
    }


@pytest.mark.every_engine
def test_bounces_follow_sessions_from_entry_to_end_with_the_ten_second_edge(
    sessions: ClickHouseClient, clickhouse: ClickHouseResource, dagster_instance: DagsterInstance
) -> None:
    run(clickhouse, dagster_instance, ("2024-03-15", "2024-03-16"))

    common = {"team_id": 1, "persons": 1}
    assert sessions.query_rows(BOUNCES_BY_PATHNAMES) == [
        # A: three pageviews over 300 s.
        {**common, "hour": "2024-03-15 10:00:00", "entry_pathname": "/home", "end_pathname": "/home",
         "sessions": 1, "pageviews": 3, "bounces": 0, "duration": 300, "session_count": 1},
        # B: one pageview, 9.999 s: a bounce of 9 whole seconds.
        {**common, "hour": "2024-03-15 10:00:00", "entry_pathname": "/pricing", "end_pathname": "/pricing",
         "sessions": 1, "pageviews": 1, "bounces": 1, "duration": 9, "session_count": 1},
        # C (exactly 10 s) and D (a click): one pageview each, neither bounced. E (no pageview) is left out.
        {**common, "hour": "2024-03-15 11:00:00", "entry_pathname": "/docs", "end_pathname": "/docs",
         "persons": 2, "sessions": 2, "pageviews": 2, "bounces": 0, "duration": 12, "session_count": 2},
        # F: counted on the day and hour it started, ending on the next day's page.
        {**common, "hour": "2024-03-15 23:00:00", "entry_pathname": "/blog", "end_pathname": "/signup",
         "sessions": 1, "pageviews": 2, "bounces": 0, "duration": 30, "session_count": 1},
        {**common, "team_id": 2, "hour": "2024-03-15 09:00:00", "entry_pathname": "/", "end_pathname": "/",
         "sessions": 1, "pageviews": 1, "bounces": 1, "duration": 0, "session_count": 1},
    ]  # fmt: skip


@pytest.mark.every_engine
def test_materialization_reports_rows_days_durations_and_passing_checks(
    sessions: ClickHouseClient, clickhouse: ClickHouseResource, dagster_instance: DagsterInstance
) -> None:
    result = run(clickhouse, dagster_instance, ("2024-03-15", "2024-03-16"))

    stats = metadata_by_day(result, STATS_TABLE)
    # Sessions A and B both saw /pricing at 10:00 but from different campaigns: two rows.
    assert {day: entry["rows_by_day"] for day, entry in stats.items()} == {
        "2024-03-15": {"2024-03-15": 7},
        "2024-03-16": {"2024-03-16": 1},
    }
    assert [(entry["rows_written"], entry["dagster/row_count"]) for entry in stats.values()] == [(7, 7), (1, 1)]
    assert [entry["days_covered"] for entry in stats.values()] == [["2024-03-15"], ["2024-03-16"]]
    assert all(entry["days_emptied"] == [] and entry["table"] == STATS_TABLE for entry in stats.values())
    assert all(entry["insert_seconds"] > 0 and entry["replace_seconds"] > 0 for entry in stats.values())
    bounces = metadata_by_day(result, BOUNCES_TABLE)
    assert [entry["rows_written"] for entry in bounces.values()] == [5, 0]
    # F belongs to the 15th: nothing starts on the 16th
    assert [entry["days_emptied"] for entry in bounces.values()] == [[], ["2024-03-16"]]
    # The dashboards' unique persons of the day (per team, added up), counted independently from the events.
    for day, entry in stats.items():
        persons = sessions.command(
            "SELECT sum(n) FROM (SELECT team_id, uniqExact(person_id) AS n FROM events WHERE event = '$pageview' "
            "AND team_id >= 0 AND toDate(timestamp) = {day:Date} GROUP BY team_id)",
            {"day": day},
        )
        assert entry["unique_persons"] == int(persons) > 0
    # A day without data says so, rather than reading as a "Row count 0" result on the asset's overview.
    assert bounces["2024-03-15"]["dagster/row_count"] == 5 and "empty_day" not in bounces["2024-03-15"]
    assert "dagster/row_count" not in bounces["2024-03-16"]
    assert bounces["2024-03-16"]["empty_day"].startswith(f"No events to aggregate into {BOUNCES_TABLE} on 2024-03-16")

    evaluations = {(e.asset_key.path[0], e.check_name, e.partition): e for e in result.get_asset_check_evaluations()}
    checks = (CHECK_TOTALS_MATCH_EVENTS, CHECK_NO_EMPTY_DAYS, CHECK_NO_EVENTS_LEFT_OUT)
    assert set(evaluations) == {
        (table, check, day)
        for table in (STATS_TABLE, BOUNCES_TABLE)
        for check in checks
        for day in ("2024-03-15", "2024-03-16")
    }
    assert all(evaluation.passed for evaluation in evaluations.values())
    assert evaluations[(STATS_TABLE, CHECK_TOTALS_MATCH_EVENTS, "2024-03-15")].metadata["pageviews"].value == 9
    assert evaluations[(STATS_TABLE, CHECK_TOTALS_MATCH_EVENTS, "2024-03-16")].metadata["pageviews"].value == 1
    assert staging_tables(sessions) == []


# --- Demo traffic equals events ----------------------------------------------------------------------------------


def expected_from_events(ch: ClickHouseClient, days: set[str]) -> tuple[dict, dict]:
    """The stats and bounces of demo traffic computed in Python, from the raw events, another way round."""
    rows = ch.query_rows(
        "SELECT team_id, event, toUnixTimestamp64Micro(timestamp) AS micros, toString(person_id) AS person, "
        "`$session_id` AS session, JSONExtractString(properties, '$pathname') AS pathname FROM events"
    )

    def hour(micros: int) -> str:
        return datetime.fromtimestamp(micros // 1_000_000, UTC).strftime("%Y-%m-%d %H:00:00")

    stats: dict = defaultdict(lambda: [0, set(), set()])
    by_session: dict = defaultdict(list)
    for row in rows:
        if row["event"] == "$pageview" and hour(row["micros"])[:10] in days:
            key = (row["team_id"], hour(row["micros"]), row["pathname"])
            stats[key][0] += 1
            stats[key][1].add(row["session"])
            stats[key][2].add(row["person"])
        if row["session"]:
            by_session[(row["team_id"], row["session"])].append(row)
    bounces: dict = defaultdict(lambda: [0, 0, 0, 0])
    for (team, _), events in by_session.items():
        events.sort(key=lambda row: row["micros"])
        pageviews = [row for row in events if row["event"] == "$pageview"]
        if not pageviews or hour(events[0]["micros"])[:10] not in days:
            continue
        duration = (events[-1]["micros"] - events[0]["micros"]) // 1_000_000
        bounced = len(pageviews) == 1 and all(row["event"] != "$autocapture" for row in events) and duration < 10
        key = (team, hour(events[0]["micros"]), pageviews[0]["pathname"], pageviews[-1]["pathname"])
        for index, value in enumerate((1, len(pageviews), int(bounced), duration)):
            bounces[key][index] += value
    return (
        {key: (count, len(sessions), len(persons)) for key, (count, sessions, persons) in stats.items()},
        {key: tuple(values) for key, values in bounces.items()},
    )


def test_demo_traffic_numbers_equal_the_events_exactly(
    ch: ClickHouseClient, clickhouse: ClickHouseResource, dagster_instance: DagsterInstance
) -> None:
    generate_demo_events(ch, start_date=datetime(2024, 3, 1).date(), days=2, events=4_000, seed=11)
    result = run(clickhouse, dagster_instance, ("2024-03-01", "2024-03-02"))
    assert all(evaluation.passed for evaluation in result.get_asset_check_evaluations())

    expected_stats, expected_bounces = expected_from_events(ch, {"2024-03-01", "2024-03-02"})
    stats = {
        (row["team_id"], row["hour"], row["pathname"]): (row["pageviews"], row["sessions"], row["persons"])
        for row in ch.query_rows(STATS_BY_PATHNAME)
    }
    bounces = {
        (row["team_id"], row["hour"], row["entry_pathname"], row["end_pathname"]): (
            row["session_count"],
            row["pageviews"],
            row["bounces"],
            row["duration"],
        )
        for row in ch.query_rows(BOUNCES_BY_PATHNAMES)
    }
    assert stats == expected_stats
    assert bounces == expected_bounces
    assert 0 < sum(value[2] for value in bounces.values()) < sum(value[0] for value in bounces.values())


# --- Idempotent, atomic per day, multi-day runs --------------------------------------------------------------------


def test_running_a_day_twice_changes_nothing(
    sessions: ClickHouseClient, clickhouse: ClickHouseResource, dagster_instance: DagsterInstance
) -> None:
    result = run(clickhouse, dagster_instance, "2024-03-15")
    assert {evaluation.partition for evaluation in result.get_asset_check_evaluations()} == {"2024-03-15"}
    first = {table: snapshot(sessions, table) for table in (STATS_TABLE, BOUNCES_TABLE)}
    run(clickhouse, dagster_instance, "2024-03-15")
    assert {table: snapshot(sessions, table) for table in (STATS_TABLE, BOUNCES_TABLE)} == first
    assert first[STATS_TABLE] and first[BOUNCES_TABLE]


def test_a_rerun_after_events_were_deleted_empties_the_day(
    sessions: ClickHouseClient, clickhouse: ClickHouseResource, dagster_instance: DagsterInstance
) -> None:
    run(clickhouse, dagster_instance, ("2024-03-15", "2024-03-16"))
    sessions.command("DELETE FROM events WHERE toDate(timestamp) = '2024-03-15'")

    result = run(clickhouse, dagster_instance, "2024-03-15")

    for table in (STATS_TABLE, BOUNCES_TABLE):
        days = sessions.query_rows(f"SELECT DISTINCT toString(toDate(period_bucket)) AS day FROM {table} ORDER BY day")
        assert days == ([{"day": "2024-03-16"}] if table == STATS_TABLE else [])
        assert metadata(result, table)["days_emptied"] == ["2024-03-15"]
    assert all(evaluation.passed for evaluation in result.get_asset_check_evaluations())


def test_a_three_day_run_equals_three_one_day_runs(
    ch: ClickHouseClient, clickhouse: ClickHouseResource, dagster_instance: DagsterInstance
) -> None:
    generate_demo_events(ch, start_date=datetime(2024, 3, 1).date(), days=3, events=3_000, seed=3)
    result = run(clickhouse, dagster_instance, ("2024-03-01", "2024-03-03"))
    # One run, one computing query per table for the three days, each day recorded as its own partition.
    assert list(metadata_by_day(result, STATS_TABLE)) == ["2024-03-01", "2024-03-02", "2024-03-03"]
    three_days = {table: snapshot(ch, table) for table in (STATS_TABLE, BOUNCES_TABLE)}

    for table in (STATS_TABLE, BOUNCES_TABLE):
        ch.command(f"TRUNCATE TABLE {table}")
    for day in ("2024-03-01", "2024-03-02", "2024-03-03"):
        run(clickhouse, dagster_instance, day)
    assert {table: snapshot(ch, table) for table in (STATS_TABLE, BOUNCES_TABLE)} == three_days


def test_a_backfill_run_records_each_day_with_its_own_rows_and_each_check_passed_on_each_day(
    ch: ClickHouseClient, clickhouse: ClickHouseResource, dagster_instance: DagsterInstance
) -> None:
    days = ["2024-03-01", "2024-03-02", "2024-03-03"]
    for day, events, seed in zip(days, (600, 2_400, 1_200), (21, 22, 23), strict=True):
        generate_demo_events(ch, start_date=datetime.fromisoformat(day).date(), days=1, events=events, seed=seed)

    # One run over the three days, as a backfill launches it (from the UI or a job's partitions page).
    assert run(clickhouse, dagster_instance, (days[0], days[-1])).success

    pageviews = {
        row["day"]: row["pageviews"]
        for row in ch.query_rows(
            "SELECT toString(toDate(timestamp)) AS day, count() AS pageviews FROM events "
            "WHERE event = '$pageview' GROUP BY day"
        )
    }
    assert len({pageviews[day] for day in days}) == 3  # a run total repeated on each day cannot pass
    storage = dagster_instance.event_log_storage
    for table in (STATS_TABLE, BOUNCES_TABLE):
        key = AssetKey(table)
        rows = {
            row["day"]: row["rows"]
            for row in ch.query_rows(
                f"SELECT toString(toDate(period_bucket)) AS day, count() AS rows FROM {table} GROUP BY day"
            )
        }
        assert len({rows[day] for day in days}) == 3
        for day in days:
            recorded = partition_metadata(dagster_instance, key, day)
            assert recorded["rows_written"] == recorded["dagster/row_count"] == rows[day]
            assert recorded["rows_by_day"] == {day: rows[day]} and recorded["days_covered"] == [day]

        check_keys = [
            AssetCheckKey(key, name)
            for name in (CHECK_TOTALS_MATCH_EVENTS, CHECK_NO_EMPTY_DAYS, CHECK_NO_EVENTS_LEFT_OUT)
        ]
        # What the UI shows per partition: each check's latest result on that day, for its latest materialization.
        infos = {
            (info.check_key.name, info.partition_key): info
            for info in storage.get_asset_check_partition_info(check_keys)
        }
        assert set(infos) == {(check_key.name, day) for check_key in check_keys for day in days}
        for info in infos.values():
            assert info.latest_execution_status == AssetCheckExecutionRecordStatus.SUCCEEDED
            assert info.latest_target_materialization_storage_id == info.latest_materialization_storage_id
        for check_key in check_keys:
            history = storage.get_asset_check_execution_history(check_key, limit=10)
            assert sorted(record.partition for record in history) == days  # nothing unpartitioned, nothing skipped
        for day in days:
            [totals] = storage.get_asset_check_execution_history(
                check_keys[0], limit=1, partition_filter=PartitionKeyFilter(key=day)
            )
            evaluation = totals.event.dagster_event.event_specific_data
            assert evaluation.metadata["pageviews_in_events"].value == pageviews[day]
            if table == STATS_TABLE:
                assert evaluation.metadata["pageviews"].value == pageviews[day]


def test_a_backfill_run_of_one_day_records_its_checks_on_that_day(
    sessions: ClickHouseClient, clickhouse: ClickHouseResource, dagster_instance: DagsterInstance
) -> None:
    # README's concurrency walk-through: a backfill with one partition per run tags each run with a range.
    assert run(clickhouse, dagster_instance, ("2024-03-15", "2024-03-15")).success

    check_keys = [
        AssetCheckKey(AssetKey(table), name)
        for table in (STATS_TABLE, BOUNCES_TABLE)
        for name in (CHECK_TOTALS_MATCH_EVENTS, CHECK_NO_EMPTY_DAYS, CHECK_NO_EVENTS_LEFT_OUT)
    ]
    storage = dagster_instance.event_log_storage
    for check_key in check_keys:
        [record] = storage.get_asset_check_execution_history(check_key, limit=10)
        assert (record.partition, record.status) == ("2024-03-15", AssetCheckExecutionRecordStatus.SUCCEEDED)


def test_team_filter_replaces_only_those_teams_rows(
    sessions: ClickHouseClient, clickhouse: ClickHouseResource, dagster_instance: DagsterInstance
) -> None:
    run(clickhouse, dagster_instance, "2024-03-15")
    add_event(sessions, "$pageview", "2024-03-15 15:00:00", "H", PERSON_2, "/new", team=1)
    add_event(sessions, "$pageview", "2024-03-15 15:00:00", "I", PERSON_2, "/new", team=2)

    result = run(clickhouse, dagster_instance, "2024-03-15", config={"team_ids": [1]})

    pageviews = {
        row["team_id"]: row["pageviews"]
        for row in sessions.query_rows(
            f"SELECT team_id, sumMerge(pageviews_count_state) AS pageviews FROM {STATS_TABLE} "
            "WHERE toDate(period_bucket) = '2024-03-15' GROUP BY team_id"
        )
    }
    assert pageviews == {1: 9, 2: 1}  # team 1 recomputed (8 + 1), team 2 kept as it was (its new event not read)
    assert metadata(result, STATS_TABLE)["teams"] == [1]
    assert all(evaluation.passed for evaluation in result.get_asset_check_evaluations())


# --- Bad config and failures write nothing ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"team_ids": []}, "team_ids is empty"),
        ({"team_ids": [-3]}, "non-negative"),
        ({"extra_clickhouse_settings": {"no_such_setting": 1}}, "unknown ClickHouse settings: ['no_such_setting']"),
        ({"extra_clickhouse_settings": {"max_threads; DROP TABLE events": 1}}, "not ClickHouse settings"),
        ({"extra_clickhouse_settings": {"max_threads": "lots"}}, "ClickHouse rejected extra_clickhouse_settings"),
    ],
)
def test_bad_config_is_rejected_before_anything_is_written(
    sessions: ClickHouseClient,
    clickhouse: ClickHouseResource,
    dagster_instance: DagsterInstance,
    config: dict,
    message: str,
) -> None:
    run(clickhouse, dagster_instance, "2024-03-15")
    before = {table: snapshot(sessions, table) for table in (STATS_TABLE, BOUNCES_TABLE)}
    sessions.command("DELETE FROM events WHERE team_id = 1")  # a write would now change the tables

    result = run(clickhouse, dagster_instance, "2024-03-15", config=config, raise_on_error=False)

    assert not result.success
    failures = result.get_step_failure_events()
    assert failures and all(message in failure.step_failure_data.user_failure_data.description for failure in failures)
    assert not any(event.event_type_value == "STEP_UP_FOR_RETRY" for event in result.all_events)
    assert {table: snapshot(sessions, table) for table in (STATS_TABLE, BOUNCES_TABLE)} == before
    assert staging_tables(sessions) == []


@pytest.mark.parametrize("bad_asset", [STATS_TABLE, BOUNCES_TABLE])
def test_bad_config_of_either_asset_stops_the_run_before_either_table_is_rewritten(
    sessions: ClickHouseClient, clickhouse: ClickHouseResource, dagster_instance: DagsterInstance, bad_asset: str
) -> None:
    # The launchpad accepts team_ids: [-1] (Dagster's config schema has no "non-negative"): the run must not
    # rewrite one table and then fail on the other's config.
    run(clickhouse, dagster_instance, "2024-03-15")
    before = {table: snapshot(sessions, table) for table in (STATS_TABLE, BOUNCES_TABLE)}
    sessions.command("DELETE FROM events WHERE team_id = 1")  # a write would now change the tables

    result = materialize(
        ASSETS,
        partition_key="2024-03-15",
        resources={"clickhouse": clickhouse},
        run_config={"ops": {bad_asset: {"config": {"team_ids": [-1]}}}},
        instance=dagster_instance,
        raise_on_error=False,
    )

    assert not result.success
    failures = result.get_step_failure_events()
    assert {failure.step_key for failure in failures} == {STATS_TABLE, BOUNCES_TABLE}
    assert all("non-negative" in failure.step_failure_data.user_failure_data.description for failure in failures)
    assert {table: snapshot(sessions, table) for table in (STATS_TABLE, BOUNCES_TABLE)} == before


@pytest.mark.every_engine
def test_a_failing_computation_leaves_the_target_as_it_was_and_no_staging_table(
    sessions: ClickHouseClient, clickhouse: ClickHouseResource, dagster_instance: DagsterInstance
) -> None:
    run(clickhouse, dagster_instance, "2024-03-15")
    before = snapshot(sessions, BOUNCES_TABLE)
    sessions.command("DELETE FROM events WHERE team_id = 1")

    with pytest.raises(Exception, match="INSERT INTO"):
        refresh_window(
            sessions,
            BOUNCES,
            first_day=datetime(2024, 3, 15).date(),
            end_day=datetime(2024, 3, 16).date(),
            run_id="failing-run",
            extra_settings={"max_rows_to_read": 1},  # the computing query fails half-way
        )
    assert snapshot(sessions, BOUNCES_TABLE) == before
    assert staging_tables(sessions) == []


def test_staging_tables_left_by_killed_runs_are_dropped_once_old(ch: ClickHouseClient) -> None:
    create_web_preaggregated_tables(ch)
    ch.command(f"CREATE TABLE {STATS_TABLE}_staging_killedrun AS {STATS_TABLE}")
    assert drop_stale_staging_tables(ch, STATS) == []  # younger than any run may last: maybe still running
    assert drop_stale_staging_tables(ch, BOUNCES, older_than_seconds=0) == []  # another table's prefix
    assert drop_stale_staging_tables(ch, STATS, older_than_seconds=0) == [f"{STATS_TABLE}_staging_killedrun"]
    assert staging_tables(ch) == []


def test_missing_events_table_fails_with_what_to_do(
    clickhouse: ClickHouseResource, dagster_instance: DagsterInstance
) -> None:
    result = run(clickhouse, dagster_instance, "2024-03-15", raise_on_error=False)
    [failure, *_] = result.get_step_failure_events()
    assert "materialize demo_events" in failure.step_failure_data.user_failure_data.description


# --- Checks can fail ---------------------------------------------------------------------------------------------


def test_checks_catch_totals_that_differ_from_events_and_empty_days(
    sessions: ClickHouseClient, clickhouse: ClickHouseResource, dagster_instance: DagsterInstance
) -> None:
    run(clickhouse, dagster_instance, "2024-03-15")
    day, end = datetime(2024, 3, 15).date(), datetime(2024, 3, 16).date()
    add_event(sessions, "$pageview", "2024-03-15 16:00:00", "late", PERSON_1, "/late", team=2)

    totals, no_empty_days = check_totals(sessions, STATS, first_day=day, end_day=end)
    assert not totals.passed and no_empty_days.passed
    assert totals.metadata["mismatches"].value == [
        {"team_id": 2, "day": "2024-03-15", "pageviews": 1, "pageviews_in_events": 2, "sessions": 1,
         "sessions_in_events": 2}
    ]  # fmt: skip

    sessions.command(f"ALTER TABLE {STATS_TABLE} DROP PARTITION 20240315")
    _, no_empty_days = check_totals(sessions, STATS, first_day=day, end_day=end)
    assert not no_empty_days.passed and no_empty_days.metadata["empty_days"].value == ["2024-03-15"]


# --- Schedules, the pool, the backfill policy ---------------------------------------------------------------------


@pytest.fixture
def sqlite_instance(tmp_path: Path) -> Iterator[DagsterInstance]:
    """An instance on SQLite storage in a DAGSTER_HOME of its own, as the daemon and the UI use it."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    with DagsterInstance.from_config(str(home)) as instance:
        yield instance


def test_the_today_schedule_skips_midnight_when_the_new_day_has_no_events_yet(
    sqlite_instance: DagsterInstance,
) -> None:
    def evaluate(tick: datetime) -> RunRequest | SkipReason:
        return web_analytics_today_schedule(
            build_schedule_context(instance=sqlite_instance, scheduled_execution_time=tick)
        )

    midnight = evaluate(datetime(2024, 3, 16, 0, 0, tzinfo=UTC))
    assert isinstance(midnight, SkipReason) and "2024-03-16" in midnight.skip_message
    assert evaluate(datetime(2024, 3, 16, 0, 20, tzinfo=UTC)).partition_key == "2024-03-16"
    assert evaluate(datetime(2024, 3, 16, 23, 40, tzinfo=UTC)).partition_key == "2024-03-16"


def test_schedules_ask_for_yesterday_and_today_and_skip_while_a_run_is_queued_or_running(
    sqlite_instance: DagsterInstance,
) -> None:
    tick = datetime(2024, 3, 16, 0, 20, tzinfo=UTC)

    def evaluate(schedule) -> RunRequest | SkipReason:
        return schedule(build_schedule_context(instance=sqlite_instance, scheduled_execution_time=tick))

    assert evaluate(web_analytics_yesterday_schedule).partition_key == "2024-03-15"
    assert evaluate(web_analytics_today_schedule).partition_key == "2024-03-16"

    job = defs.resolve_job_def(JOB_NAME)
    location = InProcessCodeLocationOrigin(LoadableTargetOrigin(module_name="dags.locations.web_analytics"))
    origin = RemoteJobOrigin(RemoteRepositoryOrigin(location, "__repository__"), JOB_NAME)
    queued = sqlite_instance.create_run_for_job(job, status=DagsterRunStatus.QUEUED, remote_job_origin=origin)
    for schedule in (web_analytics_yesterday_schedule, web_analytics_today_schedule):
        skipped = evaluate(schedule)
        assert isinstance(skipped, SkipReason) and queued.run_id in skipped.skip_message
    sqlite_instance.report_run_canceled(queued)
    assert isinstance(evaluate(web_analytics_today_schedule), RunRequest)

    # An asset backfill run (`__ASSET_JOB`) that rewrites these tables counts too.
    asset_job = defs.resolve_implicit_global_asset_job_def()
    backfill_run = sqlite_instance.create_run_for_job(
        asset_job, status=DagsterRunStatus.STARTED, asset_selection=frozenset({AssetKey(BOUNCES_TABLE)})
    )
    assert backfill_run.job_name == "__ASSET_JOB"
    assert isinstance(evaluate(web_analytics_yesterday_schedule), SkipReason)


def test_pool_sensor_gives_the_pool_its_limit_once(sqlite_instance: DagsterInstance) -> None:
    storage = sqlite_instance.event_log_storage
    assert WEB_ANALYTICS_POOL not in {pool.name for pool in storage.get_pool_limits()}
    web_analytics_pool_limit_sensor(build_sensor_context(instance=sqlite_instance))
    assert storage.get_concurrency_info(WEB_ANALYTICS_POOL).slot_count == 1

    storage.set_concurrency_slots(WEB_ANALYTICS_POOL, 2)  # set by an operator: kept
    web_analytics_pool_limit_sensor(build_sensor_context(instance=sqlite_instance))
    assert storage.get_concurrency_info(WEB_ANALYTICS_POOL).slot_count == 2


def test_assets_share_the_pool_and_take_the_backfill_policy_from_the_environment() -> None:
    for asset in ASSETS:
        assert asset.op.pool == WEB_ANALYTICS_POOL
        assert asset.backfill_policy.max_partitions_per_run == load_web_analytics_settings().max_partitions_per_run
    job = defs.resolve_job_def(JOB_NAME)
    assert job.tags["dagster/max_runtime"] == str(3 * 3600) and job.tags["owner"] == "team-web-analytics"

    probe = (
        "from dags.web_analytics.assets import web_pre_aggregated_stats as a, WEB_ANALYTICS_DAILY_PARTITIONS as p;"
        "print(a.backfill_policy.max_partitions_per_run, p.start.date())"
    )
    output = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", probe],
        env={
            "PATH": "/usr/bin:/bin",
            "DAGSTER_WEB_PREAGGREGATED_MAX_PARTITIONS_PER_RUN": "7",
            "WEB_ANALYTICS_START_DATE": "2023-06-01",
        },
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert output == ["7", "2023-06-01"]
