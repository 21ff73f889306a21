"""A Postgres batch export never deletes another team's rows, whatever columns it exports, and one bad event
never blocks an interval: runs of the real asset on a real PostgreSQL, rows read back."""

from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from dagster import DagsterInstance

from dags.common import ClickHouseResource
from dags.exports.datasets import ExportWindow
from dags.tests.conftest import PostgresServer, wait_until
from dags.tests.test_batch_exports import (
    DAY,
    STALL_TRIGGER,
    declare,
    entry,
    failure_message,
    load_events,
    postgres_rows,
    postgres_url,
    run,
    source_rows,
)

NO_TEAM = ["uuid", "event", "timestamp"]  # an export's columns without team_id


def team_rows(server: PostgresServer, database: str, table: str, team: int | None) -> list[dict[str, Any]]:
    """The table's rows of one team (``None``: of unknown team), in the columns ``NO_TEAM``, sorted."""
    condition = "team_id IS NULL" if team is None else f"team_id = {int(team)}"
    rows = postgres_rows(server, database, f"SELECT uuid::text, event, timestamp FROM {table} WHERE {condition}")
    return [dict(zip(NO_TEAM, row, strict=True)) for row in rows]


def expected(clickhouse: ClickHouseResource, team: int) -> list[dict[str, Any]]:
    return sorted(source_rows(clickhouse, ExportWindow.of_day(DAY), team, NO_TEAM), key=lambda row: row["uuid"])


def by_uuid(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(rows, key=lambda row: row["uuid"])


def test_a_team_rewriting_its_interval_in_a_table_without_team_column_keeps_the_other_teams_rows(
    clickhouse: ClickHouseResource,
    dagster_instance: DagsterInstance,
    postgres: PostgresServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    load_events(clickhouse, DAY, 3_000)
    database = postgres.create_database("exports")
    shared = postgres_url(postgres, database, "shared_events")
    # Team 1's export fills the table; later the file hands the table to team 2's export (same columns).
    first = declare(tmp_path, monkeypatch, entry("team_one", 1, shared, columns=NO_TEAM))["team_one"]
    result = run(first, clickhouse, dagster_instance, DAY.isoformat())
    assert result.success, failure_message(result)
    second = declare(tmp_path, monkeypatch, entry("team_two", 2, shared, columns=NO_TEAM))["team_two"]
    for _ in range(2):  # the second run rewrites team 2's interval
        result = run(second, clickhouse, dagster_instance, DAY.isoformat())
        assert result.success, failure_message(result)

    team_one, team_two = expected(clickhouse, 1), expected(clickhouse, 2)
    assert team_one and team_two
    assert by_uuid(team_rows(postgres, database, "shared_events", 1)) == team_one
    assert by_uuid(team_rows(postgres, database, "shared_events", 2)) == team_two
    metadata = result.asset_materializations_for_node("batch_exports__team_two")[0].metadata
    repairs = ("nul_bytes_stripped", "invalid_json_wrapped", "invalid_utf8_replaced")
    assert {name: metadata[name].value for name in repairs} == dict.fromkeys(repairs, 0)  # nothing to change
    assert postgres_rows(postgres, database, "SELECT count(*) FROM shared_events") == [(len(team_one) + len(team_two),)]


def test_rows_already_in_a_table_without_team_id_are_kept_and_the_column_is_added(
    clickhouse: ClickHouseResource,
    dagster_instance: DagsterInstance,
    postgres: PostgresServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    load_events(clickhouse, DAY, 2_000)
    database = postgres.create_database("exports")
    someone_elses = {"uuid": "00000000-0000-0000-0000-000000000001", "event": "legacy", "timestamp": None}
    with psycopg.connect(host="127.0.0.1", port=postgres.port, user=postgres.user, dbname=database) as connection:
        connection.execute("CREATE TABLE legacy (uuid uuid, event text, timestamp timestamptz)")
        row = connection.execute(
            "INSERT INTO legacy VALUES (%s, 'legacy', %s) RETURNING timestamp",
            (someone_elses["uuid"], ExportWindow.of_day(DAY).start + timedelta(hours=12)),
        ).fetchone()
        someone_elses["timestamp"] = row[0]
    export = declare(tmp_path, monkeypatch, entry("team_two", 2, postgres_url(postgres, database, "legacy"),
                                                  columns=NO_TEAM))["team_two"]  # fmt: skip

    results = [run(export, clickhouse, dagster_instance, DAY.isoformat()) for _ in range(2)]
    assert all(result.success for result in results), failure_message(results[0]) + failure_message(results[1])

    warned = [event.message for event in dagster_instance.all_logs(results[0].run_id) if event.level >= 30]
    assert any("legacy had no team_id column: added; its 1 earlier row(s) have team_id NULL" in message
               for message in warned), warned  # fmt: skip
    assert team_rows(postgres, database, "legacy", None) == [someone_elses]
    assert by_uuid(team_rows(postgres, database, "legacy", 2)) == expected(clickhouse, 2)


def test_a_reader_during_a_load_sees_the_previous_rows_without_waiting(
    clickhouse: ClickHouseResource,
    dagster_instance: DagsterInstance,
    postgres: PostgresServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    load_events(clickhouse, DAY, 2_000)
    database = postgres.create_database("exports")
    export = declare(tmp_path, monkeypatch, entry("to_pg", 1, postgres_url(postgres, database, "acme_events"),
                                                  columns=NO_TEAM))["to_pg"]  # fmt: skip
    assert run(export, clickhouse, dagster_instance, DAY.isoformat()).success
    previous = team_rows(postgres, database, "acme_events", 1)
    with psycopg.connect(host="127.0.0.1", port=postgres.port, user=postgres.user, dbname=database) as connection:
        connection.execute(STALL_TRIGGER)
    outcome: dict[str, Any] = {}
    runner = threading.Thread(target=lambda: outcome.update(result=run(export, clickhouse, dagster_instance,
                                                                       DAY.isoformat())))  # fmt: skip
    runner.start()
    stalled = (
        "SELECT pid FROM pg_stat_activity WHERE application_name = 'dagster-batch-export' "
        "AND query LIKE 'COPY%' AND wait_event = 'PgSleep'"
    )
    try:
        wait_until(lambda: postgres_rows(postgres, database, stalled) != [], 120, "the COPY to stall mid-load")
        with psycopg.connect(
            host="127.0.0.1", port=postgres.port, user=postgres.user, dbname=database, options="-c lock_timeout=5s"
        ) as reader:
            seen = reader.execute("SELECT count(*) FROM acme_events").fetchone()[0]  # no lock timeout: not blocked
    finally:
        postgres_rows(postgres, database, "UPDATE stall SET on_ = false RETURNING on_")
        runner.join(timeout=300)
    assert seen == len(previous)
    assert outcome["result"].success, failure_message(outcome["result"])


# Events Postgres would refuse as they are, for team 2 on DAY: (uuid, event, properties, distinct_id, session).
BAD_EVENTS = r"""
INSERT INTO events (uuid, event, properties, timestamp, team_id, distinct_id, person_id, `$session_id`)
SELECT toUUID(u), e, p, toDateTime64('2024-03-05 12:00:00', 6, 'UTC'), 2, d, toUUID(u), s
FROM values('u String, e String, p String, d String, s String',
    ('00000000-0000-0000-0000-0000000000b1', 'broken', '{"a":1', 'd1', 's1'),
    ('00000000-0000-0000-0000-0000000000b2', 'nul', '{"k":"v\0x"}', 'user\0nul', 's2'),
    ('00000000-0000-0000-0000-0000000000b3', 'escaped', '{"k":"a\\u0000b","lit":"\\\\u0000"}', 'd3', 's3'),
    ('00000000-0000-0000-0000-0000000000b4', 'latin1', '{}', 'd4', unhex('ff41')),
    ('00000000-0000-0000-0000-0000000000b5', 'both\0', 'not json\0', 'd5', 's5'))
"""


def test_events_postgres_would_refuse_are_cleaned_counted_and_never_block_the_interval(
    clickhouse: ClickHouseResource,
    dagster_instance: DagsterInstance,
    postgres: PostgresServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    load_events(clickhouse, DAY, 2_000)
    with clickhouse.get_client() as client:
        client.command(BAD_EVENTS)
    database = postgres.create_database("exports")
    export = declare(tmp_path, monkeypatch, entry("to_pg", 2, postgres_url(postgres, database, "acme_events")))

    result = run(export["to_pg"], clickhouse, dagster_instance, DAY.isoformat())

    assert result.success, failure_message(result)
    cleaned = postgres_rows(
        postgres,
        database,
        'SELECT right(uuid::text, 2), event, properties, distinct_id, "$session_id" FROM acme_events '
        "WHERE uuid::text LIKE '00000000-0000-0000-0000-0000000000b%' ORDER BY uuid",
    )
    assert cleaned == [
        ("b1", "broken", '{"a":1', "d1", "s1"),  # not JSON: stored as a JSON string of its text
        ("b2", "nul", {"k": "vx"}, "usernul", "s2"),
        ("b3", "escaped", {"k": "ab", "lit": "\\u0000"}, "d3", "s3"),  # an escaped backslash is not a NUL
        ("b4", "latin1", {}, "d4", "\ufffdA"),
        ("b5", "both", "not json", "d5", "s5"),
    ]
    assert postgres_rows(postgres, database, "SELECT count(*) FROM acme_events") == [
        (len(source_rows(clickhouse, ExportWindow.of_day(DAY), 2, ["uuid"])),)
    ]
    metadata = result.asset_materializations_for_node("batch_exports__to_pg")[0].metadata
    counts = {
        name: metadata[name].value for name in ("nul_bytes_stripped", "invalid_json_wrapped", "invalid_utf8_replaced")
    }
    assert counts == {"nul_bytes_stripped": 5, "invalid_json_wrapped": 2, "invalid_utf8_replaced": 1}


def test_a_table_without_team_id_the_user_cannot_alter_fails_before_any_row_moves_saying_what_to_run(
    clickhouse: ClickHouseResource,
    dagster_instance: DagsterInstance,
    postgres: PostgresServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    load_events(clickhouse, DAY, 500)
    database = postgres.create_database("exports")
    role = f"writer_{database[-10:]}"
    with psycopg.connect(host="127.0.0.1", port=postgres.port, user=postgres.user, dbname=database) as connection:
        connection.execute("CREATE TABLE legacy (uuid uuid, event text, timestamp timestamptz)")
        kept = connection.execute(
            "INSERT INTO legacy VALUES (gen_random_uuid(), 'kept', now()) RETURNING uuid::text, event, timestamp"
        ).fetchall()
        connection.execute(f"CREATE ROLE {role} LOGIN")
        connection.execute(f"GRANT SELECT, INSERT, DELETE ON legacy TO {role}")
    url = f"postgresql://{role}@127.0.0.1:{postgres.port}/{database}?table=legacy"
    export = declare(tmp_path, monkeypatch, entry("team_two", 2, url, columns=NO_TEAM))["team_two"]

    result = run(export, clickhouse, dagster_instance, DAY.isoformat())

    assert not result.success
    message = failure_message(result)
    assert "public.legacy has no team_id column" in message, message
    assert "ALTER TABLE public.legacy ADD COLUMN team_id bigint" in message
    assert postgres_rows(postgres, database, "SELECT event FROM legacy") == [("kept",)]

    # Done as the message says, the same user (INSERT and DELETE only, no CREATE) loads the interval.
    with psycopg.connect(host="127.0.0.1", port=postgres.port, user=postgres.user, dbname=database) as connection:
        connection.execute("ALTER TABLE public.legacy ADD COLUMN team_id bigint")
    rerun = run(export, clickhouse, dagster_instance, DAY.isoformat())
    assert rerun.success, failure_message(rerun)
    assert team_rows(postgres, database, "legacy", None) == [dict(zip(NO_TEAM, kept[0], strict=True))]
    assert by_uuid(team_rows(postgres, database, "legacy", 2)) == expected(clickhouse, 2)
