"""Batch exports users declare in BATCH_EXPORTS_FILE: each holds exactly its team's selected rows and columns,
on a folder, real S3 and GCS servers and a real PostgreSQL, exactly once per interval."""

import json
import os
import subprocess
import sys
import threading
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from dagster import AssetKey, AssetsDefinition, DagsterInstance, materialize
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG
from dagster._serdes import serialize_value

from dags.common import ClickHouseResource
from dags.events import generate_demo_events
from dags.exports.batch_assets import BatchExportDefinitions, batch_export_key, build_batch_exports
from dags.exports.datasets import DATASETS, ExportWindow
from dags.exports.declarations import BatchExportsFileError
from dags.exports.manifest import DATA_FILE, MANIFEST_FILE
from dags.tests.conftest import GCSServer, PostgresServer, S3Server, free_port, partition_metadata, wait_until
from dags.web_analytics.schema import create_web_preaggregated_tables

pytestmark = pytest.mark.end_to_end  # see conftest: embedded only unless every_engine

DAY = date(2024, 3, 5)
SOURCE_COLUMNS = {
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


# The data exports location loads; its batch exports stand in as one job whose description lists the problems.
STAND_IN_DESCRIPTION = (
    "from dags.locations.data_exports import defs\n"
    "print(defs.resolve_job_def('batch_exports_failed_to_load').description)"
)


def load_events(clickhouse: ClickHouseResource, day: date, events: int, seed: int = 1, days: int = 1) -> None:
    with clickhouse.get_client() as client:
        generate_demo_events(client, start_date=day, days=days, events=events, seed=seed)


def declare(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *entries: dict[str, Any]) -> dict[str, AssetsDefinition]:
    """Write a batch exports file with these entries, point BATCH_EXPORTS_FILE at it, build its assets."""
    path = tmp_path / "batch_exports.yaml"
    path.write_text(yaml.safe_dump({"exports": list(entries)}))
    monkeypatch.setenv("BATCH_EXPORTS_FILE", str(path))
    built: BatchExportDefinitions = build_batch_exports()
    return {asset.key.path[-1]: asset for asset in built.assets}


def entry(name: str, team_id: int, destination: str, **fields: Any) -> dict[str, Any]:
    return {
        "name": name,
        "team_id": team_id,
        "dataset": "events",
        "destination": destination,
        "interval": "day",
        "start": "2024-01-01",
        **fields,
    }


def run(
    asset: AssetsDefinition,
    clickhouse: ClickHouseResource,
    instance: DagsterInstance,
    partition: str | None = None,
    first: str | None = None,
    last: str | None = None,
) -> Any:
    """Materialize one partition, or a range of them in one run (as a backfill does)."""
    tags = {ASSET_PARTITION_RANGE_START_TAG: first, ASSET_PARTITION_RANGE_END_TAG: last} if first else {}
    return materialize(
        [asset],
        partition_key=partition,
        tags=tags,
        resources={"clickhouse": clickhouse},
        instance=instance,
        raise_on_error=False,
    )


def failure_message(result: Any) -> str:
    messages = []
    for event in result.all_events:
        if event.is_step_failure:
            error = event.step_failure_data.error
            while error is not None:
                messages.append(error.message)
                error = error.cause
    return "\n".join(messages)


def source_rows(
    clickhouse: ClickHouseResource,
    window: ExportWindow,
    team_id: int,
    columns: list[str],
    events: list[str] | None = None,
    exclude_events: list[str] | None = None,
) -> list[dict[str, Any]]:
    """What ClickHouse holds for the interval, the team and the events, in the columns asked for, sorted."""
    select = ", ".join(f"{SOURCE_COLUMNS[column]} AS `{column}`" for column in columns)
    with clickhouse.get_client() as client:
        rows = client.query_rows(
            f"SELECT {select} FROM events WHERE timestamp >= {{start:DateTime('UTC')}} "
            "AND timestamp < {end:DateTime('UTC')} AND team_id = {team:Int64} "
            "AND (empty({events:Array(String)}) OR event IN {events:Array(String)}) "
            "AND NOT has({exclude:Array(String)}, event)",
            {
                "start": window.start.replace(tzinfo=None),
                "end": window.end.replace(tzinfo=None),
                "team": team_id,
                "events": events or [],
                "exclude": exclude_events or [],
            },
        )
    return sorted(rows, key=lambda row: json.dumps(row, default=str, sort_keys=True))


def read_folder_file(root: Path, relative: str) -> pa.Table:
    return pq.read_table(root / relative / DATA_FILE)


def sorted_rows(table: pa.Table) -> list[dict[str, Any]]:
    return sorted(table.to_pylist(), key=lambda row: json.dumps(row, default=str, sort_keys=True))


# --- Folders, buckets ---------------------------------------------------------------------------------------


@pytest.mark.every_engine
def test_two_teams_exports_to_folders_hold_exactly_their_selected_rows_and_columns(
    clickhouse: ClickHouseResource, dagster_instance: DagsterInstance, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    load_events(clickhouse, DAY - timedelta(days=1), 9_000, days=3)
    acme, globex = tmp_path / "acme", tmp_path / "globex"
    pageview_columns = ["uuid", "event", "timestamp", "distinct_id", "properties"]
    assets = declare(
        tmp_path,
        monkeypatch,
        entry("acme_pageviews", 1, acme.as_uri(), events=["$pageview"], columns=pageview_columns),
        entry("globex_events", 2, globex.as_uri(), exclude_events=["$autocapture"]),
    )

    for name in ("acme_pageviews", "globex_events"):
        result = run(assets[name], clickhouse, dagster_instance, DAY.isoformat())
        assert result.success, failure_message(result)

    window = ExportWindow.of_day(DAY)
    acme_table = read_folder_file(acme, f"events/date={DAY}")
    assert acme_table.column_names == pageview_columns
    expected_acme = source_rows(clickhouse, window, 1, pageview_columns, events=["$pageview"])
    assert 0 < len(expected_acme) == acme_table.num_rows
    assert sorted_rows(acme_table) == expected_acme

    globex_table = read_folder_file(globex, f"events/date={DAY}")
    assert globex_table.column_names == list(SOURCE_COLUMNS)
    expected_globex = source_rows(clickhouse, window, 2, list(SOURCE_COLUMNS), exclude_events=["$autocapture"])
    assert sorted_rows(globex_table) == expected_globex
    assert set(globex_table["team_id"].to_pylist()) == {2}
    assert "$autocapture" not in set(globex_table["event"].to_pylist()) and len(expected_globex) > 0

    materialization = dagster_instance.get_latest_materialization_event(AssetKey(["batch_exports", "acme_pageviews"]))
    metadata = materialization.asset_materialization.metadata
    assert metadata["rows"].value == len(expected_acme) and metadata["destination"].value == acme.as_uri()
    assert metadata["files"].value == 1 and metadata["bytes"].value > 0 and "duration_seconds" in metadata


def test_an_hourly_export_writes_one_folder_per_hour_with_that_hours_rows(
    clickhouse: ClickHouseResource, dagster_instance: DagsterInstance, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    load_events(clickhouse, DAY, 6_000)
    root = tmp_path / "hourly"
    assets = declare(tmp_path, monkeypatch, entry("hourly_views", 1, root.as_uri(), interval="hour"))

    # Three hours in one run, as a backfill of a range does.
    result = run(assets["hourly_views"], clickhouse, dagster_instance, first=f"{DAY}-10:00", last=f"{DAY}-12:00")
    assert result.success, failure_message(result)

    folders = sorted(str(path.parent.relative_to(root)) for path in root.rglob(DATA_FILE))
    assert folders == [f"events/date={DAY}/hour={hour}" for hour in ("10", "11", "12")]
    total = 0
    for hour in (10, 11, 12):
        window = ExportWindow.of_hour(datetime(DAY.year, DAY.month, DAY.day, hour, tzinfo=UTC))
        table = read_folder_file(root, f"events/date={DAY}/hour={hour}")
        assert sorted_rows(table) == source_rows(clickhouse, window, 1, list(SOURCE_COLUMNS))
        assert {value.hour for value in table["timestamp"].to_pylist()} <= {hour}
        manifest = json.loads((root / f"events/date={DAY}/hour={hour}" / MANIFEST_FILE).read_text())
        assert (manifest["date"], manifest["hour"], manifest["rows"]) == (DAY.isoformat(), hour, table.num_rows)
        total += table.num_rows
    assert total > 0
    # Each hour is its own partition, recorded with that hour's own figures.
    for hour in (10, 11, 12):
        window = ExportWindow.of_hour(datetime(DAY.year, DAY.month, DAY.day, hour, tzinfo=UTC))
        recorded = partition_metadata(dagster_instance, batch_export_key("hourly_views"), f"{DAY}-{hour}:00")
        assert recorded["rows"] == len(source_rows(clickhouse, window, 1, list(SOURCE_COLUMNS)))
        assert (recorded["hours"], recorded["files"]) == (1, 1) and recorded["bytes"] > 0
        assert list(recorded["files_written"]) == [f"{DAY}T{hour}:00"]


def s3_credentials(monkeypatch: pytest.MonkeyPatch, server: S3Server, secret: str | None = None) -> dict[str, str]:
    """The export's own credentials in variables of its own; the file holds only their names."""
    monkeypatch.setenv("ACME_AWS_KEY_ID", server.access_key)
    monkeypatch.setenv("ACME_AWS_SECRET", secret or server.secret_key)
    monkeypatch.setenv("ACME_S3_ENDPOINT", server.endpoint_url)
    monkeypatch.setenv("AWS_REGION", server.region)
    return {
        "AWS_ACCESS_KEY_ID": "ACME_AWS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY": "ACME_AWS_SECRET",
        "AWS_ENDPOINT_URL": "ACME_S3_ENDPOINT",
    }


def test_each_day_of_a_backfill_run_records_that_days_own_rows(
    clickhouse: ClickHouseResource, dagster_instance: DagsterInstance, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    days = [DAY + timedelta(days=offset) for offset in range(3)]
    for day, events, seed in zip(days, (900, 2_700, 1_800), (7, 8, 9), strict=True):
        load_events(clickhouse, day, events, seed=seed)
    root = tmp_path / "acme"
    assets = declare(tmp_path, monkeypatch, entry("acme_days", 1, root.as_uri()))

    result = run(assets["acme_days"], clickhouse, dagster_instance, first=str(days[0]), last=str(days[-1]))
    assert result.success, failure_message(result)

    expected = [len(source_rows(clickhouse, ExportWindow.of_day(day), 1, list(SOURCE_COLUMNS))) for day in days]
    assert len(set(expected)) == 3  # a run total repeated on each day cannot pass
    for day, rows in zip(days, expected, strict=True):
        recorded = partition_metadata(dagster_instance, batch_export_key("acme_days"), day.isoformat())
        assert recorded["rows"] == recorded["dagster/row_count"] == rows
        assert rows == read_folder_file(root, f"events/date={day}").num_rows
        assert (recorded["days"], recorded["files"]) == (1, 1) and list(recorded["files_written"]) == [str(day)]


@pytest.mark.every_engine
def test_s3_and_gcs_exports_read_back_equal_to_the_source(
    clickhouse: ClickHouseResource,
    dagster_instance: DagsterInstance,
    s3_server: S3Server,
    gcs_server: GCSServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    load_events(clickhouse, DAY, 4_000)
    s3_name, gcs_name = s3_server.create_bucket("acme"), gcs_server.create_bucket("acme")
    columns = ["uuid", "event", "timestamp", "team_id"]
    assets = declare(
        tmp_path,
        monkeypatch,
        entry(
            "to_s3",
            3,
            f"s3://{s3_name}/posthog",
            credentials_env=s3_credentials(monkeypatch, s3_server),
            events=["$pageview"],
            columns=columns,
        ),
        entry("to_gcs", 3, f"gs://{gcs_name}/posthog", events=["$pageview"], columns=columns),
    )
    for name in ("to_s3", "to_gcs"):
        result = run(assets[name], clickhouse, dagster_instance, DAY.isoformat())
        assert result.success, failure_message(result)

    key = f"posthog/events/date={DAY}/{DATA_FILE}"
    s3_bytes = s3_server.client().get_object(Bucket=s3_name, Key=key)["Body"].read()
    gcs_bytes = gcs_server.client().bucket(gcs_name).blob(key).download_as_bytes()
    expected = source_rows(clickhouse, ExportWindow.of_day(DAY), 3, columns, events=["$pageview"])
    assert len(expected) > 0
    for content in (s3_bytes, gcs_bytes):
        assert sorted_rows(pq.read_table(pa.BufferReader(content))) == expected
    assert s3_bytes == gcs_bytes  # the same rows always give the same file


def test_a_credential_value_never_appears_in_the_event_log(
    clickhouse: ClickHouseResource,
    dagster_instance: DagsterInstance,
    s3_server: S3Server,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    load_events(clickhouse, DAY, 1_000)
    bucket = s3_server.create_bucket("acme")
    wrong_secret = "wrong-secret-never-shown-0001"
    good = entry("good", 1, f"s3://{bucket}/a", credentials_env=s3_credentials(monkeypatch, s3_server))
    bad = entry("bad", 1, f"s3://{bucket}/b", credentials_env={"AWS_ACCESS_KEY_ID": "ACME_AWS_KEY_ID",
                "AWS_SECRET_ACCESS_KEY": "BAD_SECRET", "AWS_ENDPOINT_URL": "ACME_S3_ENDPOINT"})  # fmt: skip
    monkeypatch.setenv("BAD_SECRET", wrong_secret)
    assets = declare(tmp_path, monkeypatch, good, bad)

    succeeded = run(assets["good"], clickhouse, dagster_instance, DAY.isoformat())
    failed = run(assets["bad"], clickhouse, dagster_instance, DAY.isoformat())

    assert succeeded.success, failure_message(succeeded)
    assert not failed.success
    message = failure_message(failed)
    assert "Failure: bad: S3 refused" in message and "AWS_SECRET_ACCESS_KEY in BAD_SECRET" in message
    for result in (succeeded, failed):
        logged = serialize_value(list(dagster_instance.all_logs(result.run_id)))
        logged += serialize_value(dagster_instance.get_run_by_id(result.run_id))
        assert "ACME_AWS_SECRET" in str(assets["good"].metadata_by_key)  # names are shown, values never
        for secret in (s3_server.secret_key, wrong_secret):
            assert secret not in logged


# --- Postgres -----------------------------------------------------------------------------------------------


def postgres_url(server: PostgresServer, database: str, table: str) -> str:
    return f"postgresql://{server.user}@127.0.0.1:{server.port}/{database}?table={table}"


def postgres_rows(server: PostgresServer, database: str, sql: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(host="127.0.0.1", port=server.port, user=server.user, dbname=database) as connection:
        return connection.execute(sql).fetchall()


def postgres_events(server: PostgresServer, database: str, table: str) -> list[dict[str, Any]]:
    rows = postgres_rows(
        server, database, f"SELECT uuid, event, properties, timestamp, team_id, distinct_id, person_id FROM {table}"
    )
    names = ["uuid", "event", "properties", "timestamp", "team_id", "distinct_id", "person_id"]
    return sorted(
        (dict(zip(names, (str(row[0]), *row[1:6], str(row[6])), strict=True)) for row in rows),
        key=lambda row: row["uuid"],
    )


def expected_postgres_events(clickhouse: ClickHouseResource, team_id: int) -> list[dict[str, Any]]:
    columns = ["uuid", "event", "properties", "timestamp", "team_id", "distinct_id", "person_id"]
    rows = source_rows(clickhouse, ExportWindow.of_day(DAY), team_id, columns)
    return sorted(({**row, "properties": json.loads(row["properties"])} for row in rows), key=lambda r: r["uuid"])


@pytest.mark.every_engine
def test_postgres_holds_the_source_rows_with_postgres_types_and_a_rerun_leaves_no_duplicates(
    clickhouse: ClickHouseResource,
    dagster_instance: DagsterInstance,
    postgres: PostgresServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    load_events(clickhouse, DAY - timedelta(days=1), 6_000, days=3)
    database = postgres.create_database("exports")
    assets = declare(tmp_path, monkeypatch, entry("to_pg", 2, postgres_url(postgres, database, "acme_events")))

    first = run(assets["to_pg"], clickhouse, dagster_instance, DAY.isoformat())
    assert first.success, failure_message(first)
    expected = expected_postgres_events(clickhouse, 2)
    assert 0 < len(expected) == len(postgres_events(postgres, database, "acme_events"))
    assert postgres_events(postgres, database, "acme_events") == expected

    types = dict(
        postgres_rows(
            postgres,
            database,
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'acme_events'",
        )
    )
    assert types == {
        "uuid": "uuid",
        "event": "text",
        "properties": "jsonb",
        "timestamp": "timestamp with time zone",
        "team_id": "bigint",
        "distinct_id": "text",
        "person_id": "uuid",
        "$session_id": "text",
        "inserted_at": "timestamp with time zone",
    }
    metadata = first.asset_materializations_for_node("batch_exports__to_pg")[0].metadata
    assert metadata["rows"].value == len(expected) and "acme_events" in metadata["destination"].value

    # The next day, then the first day again: each day once, nothing doubled.
    assert run(assets["to_pg"], clickhouse, dagster_instance, (DAY + timedelta(days=1)).isoformat()).success
    rerun = run(assets["to_pg"], clickhouse, dagster_instance, DAY.isoformat())
    assert rerun.success, failure_message(rerun)
    counts = postgres_rows(
        postgres,
        database,
        "SELECT (timestamp AT TIME ZONE 'UTC')::date, count(*), count(DISTINCT uuid) "
        "FROM acme_events GROUP BY 1 ORDER BY 1",
    )
    next_day = source_rows(clickhouse, ExportWindow.of_day(DAY + timedelta(days=1)), 2, ["uuid"])
    assert counts == [(DAY, len(expected), len(expected)), (DAY + timedelta(days=1), len(next_day), len(next_day))]
    assert [row for row in postgres_events(postgres, database, "acme_events") if row["uuid"] in
            {e["uuid"] for e in expected}] == expected  # fmt: skip


# Holds the COPY at its 100th row while stall.on is true, so the test can terminate the backend mid-COPY.
STALL_TRIGGER = """
CREATE TABLE stall (on_ boolean NOT NULL);
INSERT INTO stall VALUES (true);
CREATE FUNCTION stall_copy() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE copied int := coalesce(nullif(current_setting('stall.copied', true), ''), '0')::int + 1;
BEGIN
    PERFORM set_config('stall.copied', copied::text, true);
    IF copied = 100 THEN
        WHILE (SELECT on_ FROM stall) LOOP PERFORM pg_sleep(0.1); END LOOP;
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER stall_copy BEFORE INSERT ON acme_events FOR EACH ROW EXECUTE FUNCTION stall_copy();
"""


def test_a_copy_killed_mid_transaction_leaves_the_previous_rows_and_the_rerun_completes(
    clickhouse: ClickHouseResource,
    dagster_instance: DagsterInstance,
    postgres: PostgresServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    load_events(clickhouse, DAY, 3_000)
    database = postgres.create_database("exports")
    assets = declare(tmp_path, monkeypatch, entry("to_pg", 1, postgres_url(postgres, database, "acme_events")))
    assert run(assets["to_pg"], clickhouse, dagster_instance, DAY.isoformat()).success
    previous = postgres_events(postgres, database, "acme_events")
    load_events(clickhouse, DAY, 1_000, seed=2)  # new rows the killed run must not half-write
    with psycopg.connect(host="127.0.0.1", port=postgres.port, user=postgres.user, dbname=database) as connection:
        connection.execute(STALL_TRIGGER)

    outcome: dict[str, Any] = {}
    runner = threading.Thread(
        target=lambda: outcome.update(result=run(assets["to_pg"], clickhouse, dagster_instance, DAY.isoformat()))
    )
    runner.start()
    copying = (
        "SELECT pid FROM pg_stat_activity WHERE application_name = 'dagster-batch-export' "
        "AND query LIKE 'COPY%' AND wait_event = 'PgSleep'"
    )
    wait_until(lambda: postgres_rows(postgres, database, copying) != [], 120, "the COPY to stall mid-transaction")
    killed = postgres_rows(postgres, database, f"SELECT pg_terminate_backend(pid) FROM ({copying}) AS copying")
    assert killed == [(True,)]

    assert postgres_events(postgres, database, "acme_events") == previous  # readers still see the previous rows
    postgres_rows(postgres, database, "UPDATE stall SET on_ = false RETURNING on_")  # step retries may go on
    runner.join(timeout=300)
    assert not runner.is_alive()

    rerun = run(assets["to_pg"], clickhouse, dagster_instance, DAY.isoformat())
    assert rerun.success, failure_message(rerun)
    after = postgres_events(postgres, database, "acme_events")
    assert after == expected_postgres_events(clickhouse, 1) and len(after) > len(previous)


def test_an_unreachable_destination_fails_before_reading_clickhouse(
    clickhouse: ClickHouseResource, dagster_instance: DagsterInstance, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No events table at all in this database: a run that read ClickHouse would fail saying so.
    nobody = f"postgresql://exporter@127.0.0.1:{free_port()}/analytics?table=acme"
    assets = declare(
        tmp_path,
        monkeypatch,
        entry("unreachable_pg", 1, nobody, credentials_env={"PGPASSWORD": "ACME_PG_PASSWORD"}),
        entry("reachable", 1, (tmp_path / "out").as_uri()),
    )
    monkeypatch.setenv("ACME_PG_PASSWORD", "pg-secret-never-shown")

    result = run(assets["unreachable_pg"], clickhouse, dagster_instance, DAY.isoformat())

    assert not result.success
    message = failure_message(result)
    assert "Failure: unreachable_pg: Cannot connect to" in message and "ACME_PG_PASSWORD" in message
    assert "no table" not in message and "pg-secret-never-shown" not in message
    # One export failing never stops another: the folder export fails only on the missing table it reads.
    other = run(assets["reachable"], clickhouse, dagster_instance, DAY.isoformat())
    assert "there is no table 'events'" in failure_message(other)

    monkeypatch.delenv("ACME_PG_PASSWORD")
    unset = run(assets["unreachable_pg"], clickhouse, dagster_instance, DAY.isoformat())
    assert "The variable ACME_PG_PASSWORD" in failure_message(unset) and "not set" in failure_message(unset)


# --- The file ----------------------------------------------------------------------------------------------


def test_a_bad_file_is_rejected_with_every_problem_listed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    entries = [
        entry("ok_export", 1, "file:///tmp/x", colour="blue"),
        entry("ok_export", 2, "file:///tmp/y"),
        entry("Bad-Name", 1, "s3://bucket/p", interval="week", dataset="clicks"),
        entry("leaky", 1, "postgresql://writer:hunter2@db:5432/analytics?table=t"),
        entry("narrow", 1, "file:///tmp/z", columns=["uuid", "colour"], dataset="web_pre_aggregated_stats"),
        entry("pg_no_time", 1, "postgresql://writer@db/analytics?table=t", columns=["uuid", "event"]),
        entry("creds", 1, "s3://bucket/p", credentials_env={"AWS_SECRET_ACCESS_KEY": "abc/def+ghi="}),
    ]
    with pytest.raises(BatchExportsFileError) as raised:
        declare(tmp_path, monkeypatch, *entries)
    message = str(raised.value)
    problems = [line for line in message.splitlines() if line.startswith("- ")]
    for expected in [
        "exports[0] (ok_export).colour: unknown field; allowed: name, team_id, dataset",
        "exports[1] (ok_export).name: 'ok_export' is already the name of exports[0]",
        "exports[2] (Bad-Name).name: 'Bad-Name' must be lowercase letters",
        "exports[2] (Bad-Name).interval: 'week' is not allowed; input should be 'hour' or 'day'",
        "exports[2] (Bad-Name).dataset: 'clicks' is not allowed",
        "exports[3] (leaky).destination: a Postgres destination must not carry a password",
        "exports[4] (narrow).columns: web_pre_aggregated_stats has no column(s) uuid, colour",
        "exports[5] (pg_no_time).columns: a Postgres export must include timestamp",
        "exports[5] (pg_no_time).destination: overlaps the destination of exports[3] (leaky)",
        "exports[6] (creds).credentials_env: the value given for AWS_SECRET_ACCESS_KEY must be the name of an "
        "environment variable",
        # Bad-Name's type errors do not hide that its destination is also creds'.
        "exports[6] (creds).destination: overlaps the destination of exports[2] (Bad-Name)",
    ]:
        assert any(problem.startswith(f"- {expected}") for problem in problems), (expected, message)
    assert len(problems) == 11 and "hunter2" not in message and "abc/def" not in message

    # The data exports location leaves out the batch exports with the same list; the file's problems, not a
    # traceback.
    loaded = subprocess.run(
        [sys.executable, "-c", STAND_IN_DESCRIPTION],
        env={**os.environ, "BATCH_EXPORTS_FILE": str(tmp_path / "batch_exports.yaml")},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert loaded.returncode == 0, loaded.stderr
    assert "did not load" in loaded.stdout and all(problem in loaded.stdout for problem in problems)


@pytest.mark.every_engine
def test_the_declared_columns_are_the_columns_each_dataset_exports(clickhouse: ClickHouseResource) -> None:
    with clickhouse.get_client() as client:
        load_events(clickhouse, DAY, 10)
        create_web_preaggregated_tables(client)
        window = ExportWindow.of_day(DAY)
        for dataset in DATASETS.values():
            schema = client.query_arrow(f"SELECT * FROM ({dataset.query()}) LIMIT 0", dataset.parameters(window)).schema
            assert tuple(schema.names) == dataset.columns, dataset.name
