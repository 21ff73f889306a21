"""A wrong setting never overwrites good data, and errors arrive fast and name what to fix.

One test per finding of the reliability review: each replays what a user did and checks what they would
see (the exit code and message, the file left in place, the run's steps, the rows in the pre-aggregates).
"""

import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from dagster import AssetKey, DagsterEventType, DagsterInstance, materialize
from dagster_aws.s3 import S3Resource

from dags.common import (
    PROJECT_ROOT,
    ClickHouseClient,
    ClickHouseNotRetryableError,
    ClickHouseResource,
    SettingError,
    load_settings,
)
from dags.events import create_events_table, generate_demo_events
from dags.exports.assets import events_export, web_pre_aggregated_stats_export
from dags.exports.resource import ExportDestination
from dags.tests.conftest import free_port
from dags.tests.test_web_preaggregated import PERSON_1, PERSON_2, add_event
from dags.web_analytics.assets import web_pre_aggregated_stats
from dags.web_analytics.refresh import refresh_window
from dags.web_analytics.schema import STATS_TABLE, create_web_preaggregated_tables
from dags.web_analytics.sql import STATS

DAY = date(2024, 3, 15)


def cli(*args: str, env: dict[str, str], timeout: float = 240) -> tuple[int, str, float]:
    """Run the dagster CLI as a user would; returns the exit code, everything it printed and the seconds taken."""
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "dagster", *args],
        cwd=PROJECT_ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return result.returncode, result.stdout + result.stderr, time.monotonic() - started


def step_retries(instance: DagsterInstance, run_id: str) -> int:
    return len(
        [
            record
            for record in instance.all_logs(run_id)
            if record.dagster_event and record.dagster_event.event_type == DagsterEventType.STEP_UP_FOR_RETRY
        ]
    )


def run_failure_text(result: Any) -> str:
    return " ".join(str(event.event_specific_data.error.message) for event in result.get_step_failure_events())


# --- 1. An export from a wrong database never replaces a good file ------------------------------------------


@pytest.mark.slow
def test_an_export_from_a_mistyped_database_fails_and_leaves_the_good_file_byte_identical(tmp_path: Path) -> None:
    exports = tmp_path / "exports"
    env = {
        "DAGSTER_HOME": str(tmp_path / "home"),
        "CLICKHOUSE_URL": f"chdb://{tmp_path / 'clickhouse'}?database=analytics",
        "EXPORT_DESTINATION_URL": exports.as_uri(),
        "CLICKHOUSE_CONNECT_RETRY_SECONDS": "5",
    }
    (tmp_path / "home").mkdir()
    select = ["asset", "materialize", "-m", "dags.definitions", "--partition", DAY.isoformat(), "--select"]
    code, output, _ = cli(*select, "demo_events", env=env)  # sets up the database, as bin/demo does
    assert code == 0, output
    code, output, _ = cli(*select, "events_export", env=env)
    assert code == 0, output
    good_file = exports / "events" / f"date={DAY}" / "data.parquet"
    good = good_file.read_bytes()

    typo = {**env, "CLICKHOUSE_URL": f"chdb://{tmp_path / 'clickhouse'}?database=analytcs_typo"}
    code, output, _ = cli(*select, "events_export", env=typo)

    assert code != 0
    assert "has no database 'analytcs_typo'" in output and "CLICKHOUSE_URL" in output
    assert good_file.read_bytes() == good
    assert "STEP_UP_FOR_RETRY" not in output  # a setting to fix: not tried again


def test_an_export_of_a_table_that_does_not_exist_fails_naming_the_url_and_publishes_nothing(
    clickhouse: ClickHouseResource, dagster_instance: DagsterInstance, tmp_path: Path
) -> None:
    destination = ExportDestination(url=(tmp_path / "exports").as_uri())
    result = materialize(
        [events_export],
        partition_key=DAY.isoformat(),
        resources={"clickhouse": clickhouse, "export_destination": destination},
        instance=dagster_instance,
        raise_on_error=False,
    )
    assert not result.success
    message = run_failure_text(result)
    assert "there is no table 'events'" in message and "CLICKHOUSE_URL" in message
    assert not any(path.is_file() for path in (tmp_path / "exports").rglob("*"))
    assert step_retries(dagster_instance, result.run_id) == 0


# --- 2. A pre-aggregate export of a day that was never computed ----------------------------------------------


def test_a_pre_aggregate_export_of_a_day_never_pre_aggregated_fails_instead_of_writing_an_empty_file(
    clickhouse: ClickHouseResource, ch: ClickHouseClient, dagster_instance: DagsterInstance, tmp_path: Path
) -> None:
    generate_demo_events(ch, start_date=DAY, days=1, events=2_000, seed=3)
    create_web_preaggregated_tables(ch)  # the table exists, the day was never computed
    destination = ExportDestination(url=(tmp_path / "exports").as_uri())

    def export(day: date) -> Any:
        return materialize(
            [web_pre_aggregated_stats_export],
            partition_key=day.isoformat(),
            resources={"clickhouse": clickhouse, "export_destination": destination},
            instance=dagster_instance,
            raise_on_error=False,
        )

    failed = export(DAY)
    assert not failed.success
    assert "never pre-aggregated" in run_failure_text(failed) and "Materialize web_pre_aggregated_stats" in (
        run_failure_text(failed)
    )
    day_file = tmp_path / "exports" / STATS_TABLE / f"date={DAY}" / "data.parquet"
    assert not day_file.exists()

    refresh_window(ch, STATS, first_day=DAY, end_day=date(2024, 3, 16), run_id="computed")
    assert export(DAY).success
    import pyarrow.parquet as pq

    assert pq.read_table(day_file).num_rows > 0
    # A day that was computed and truly has no pageviews is honestly empty.
    quiet_day = date(2024, 3, 20)
    assert export(quiet_day).success
    assert pq.read_table(tmp_path / "exports" / STATS_TABLE / f"date={quiet_day}" / "data.parquet").num_rows == 0


# --- 3. Failures that arrive fast and say what to change -----------------------------------------------------


def test_an_unreachable_server_is_reported_at_the_first_attempt_and_fails_within_its_wait(
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = f"http://analyst:s3cret-pass@127.0.0.1:{free_port()}/analytics"
    resource = ClickHouseResource(url=url, connect_retry_seconds=4, retry_base_delay_seconds=0.2)
    first_warning_at: list[float] = []

    class FirstWarning(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if not first_warning_at and "Cannot reach ClickHouse" in record.getMessage():
                first_warning_at.append(time.monotonic())

    handler = FirstWarning(level=logging.WARNING)
    logging.getLogger().addHandler(handler)
    started = time.monotonic()
    try:
        with pytest.raises(ClickHouseNotRetryableError) as raised:
            with resource.get_client():
                pass
    finally:
        logging.getLogger().removeHandler(handler)
    elapsed = time.monotonic() - started

    assert first_warning_at and first_warning_at[0] - started < 2  # at once, not after the whole wait
    assert 4 <= elapsed < 15
    message = str(raised.value)
    assert "Could not reach ClickHouse at http://analyst:***@127.0.0.1" in message
    assert "CLICKHOUSE_URL" in message and "CLICKHOUSE_CONNECT_RETRY_SECONDS" in message
    assert "s3cret-pass" not in message + caplog.text


@pytest.mark.slow
def test_a_cli_materialization_against_a_dead_address_ends_after_one_wait_not_one_per_step_retry(
    tmp_path: Path,
) -> None:
    env = {
        "DAGSTER_HOME": str(tmp_path),
        "CLICKHOUSE_URL": f"http://127.0.0.1:{free_port()}/analytics",
        "CLICKHOUSE_CONNECT_RETRY_SECONDS": "6",
    }
    code, output, seconds = cli(
        "asset", "materialize", "-m", "dags.definitions", "--select", "web_pre_aggregated_stats",
        "--partition", DAY.isoformat(), env=env,
    )  # fmt: skip
    assert code != 0
    assert "Cannot reach ClickHouse at http://127.0.0.1" in output and "CLICKHOUSE_CONNECT_RETRY_SECONDS" in output
    assert "STEP_UP_FOR_RETRY" not in output
    assert seconds < 60, f"took {seconds:.0f}s"


def test_a_malformed_url_is_a_configuration_error_that_is_tried_once(dagster_instance: DagsterInstance) -> None:
    result = materialize(
        [web_pre_aggregated_stats],
        partition_key=DAY.isoformat(),
        resources={"clickhouse": ClickHouseResource(url="foo://x")},
        instance=dagster_instance,
        raise_on_error=False,
    )
    assert not result.success
    errors = [
        record.dagster_event.event_specific_data.error.to_string()
        for record in dagster_instance.all_logs(result.run_id)
        if record.dagster_event and getattr(record.dagster_event.event_specific_data, "error", None)
    ]
    logs = " ".join(errors)
    assert "CLICKHOUSE_URL must start with chdb://, http://, https:// or clickhouse://" in logs
    assert step_retries(dagster_instance, result.run_id) == 0


# --- 4. No hang: the engine's own S3 write is bounded and reports while it waits ----------------------------


class FailingS3:
    """An S3 stand-in that lists an empty bucket and answers every upload with 500, slowly."""

    LISTING = (
        '<?xml version="1.0" encoding="UTF-8"?><ListBucketResult><Name>exports</Name><KeyCount>0</KeyCount>'
        "<IsTruncated>false</IsTruncated></ListBucketResult>"
    )
    UPLOADS = (
        '<?xml version="1.0" encoding="UTF-8"?><ListMultipartUploadsResult><Bucket>exports</Bucket>'
        "<IsTruncated>false</IsTruncated></ListMultipartUploadsResult>"
    )

    def __init__(self, delay_seconds: float) -> None:
        self.puts = 0
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _answer(self, status: int, body: str) -> None:
                payload = body.encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(payload)))
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(payload)

            def do_GET(self) -> None:
                self._answer(200, stand_in.UPLOADS if "uploads" in self.path else stand_in.LISTING)

            def do_PUT(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                stand_in.puts += 1
                time.sleep(delay_seconds)
                self._answer(500, "<Error><Code>InternalError</Code><Message>disk on fire</Message></Error>")

            do_HEAD = do_POST = do_PUT

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def failing_s3() -> Iterator[FailingS3]:
    stand_in = FailingS3(delay_seconds=0.4)
    yield stand_in
    stand_in.server.shutdown()


def test_the_clickhouse_write_method_fails_within_its_bound_against_a_store_answering_500(
    clickhouse: ClickHouseResource,
    ch: ClickHouseClient,
    dagster_instance: DagsterInstance,
    failing_s3: FailingS3,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("dags.clickhouse.client.PROGRESS_SECONDS", 1.0)
    generate_demo_events(ch, start_date=DAY, days=1, events=500, seed=1)
    s3 = S3Resource(
        endpoint_url=failing_s3.url, region_name="us-east-1", aws_access_key_id="key", aws_secret_access_key="secret"
    )
    destination = ExportDestination(url="s3://exports/warehouse", write_method="clickhouse", s3=s3)
    started = time.monotonic()
    result = materialize(
        [events_export],
        partition_key=DAY.isoformat(),
        resources={"clickhouse": clickhouse, "export_destination": destination},
        instance=dagster_instance,
        raise_on_error=False,
    )
    elapsed = time.monotonic() - started

    assert not result.success
    assert "disk on fire" in run_failure_text(result)
    assert elapsed < 60 and failing_s3.puts <= 30, f"{elapsed:.0f}s, {failing_s3.puts} PUTs"
    progress = [
        record.user_message
        for record in dagster_instance.all_logs(result.run_id)
        if "still running after" in (record.user_message or "")
    ]
    assert progress, "no progress line while ClickHouse was writing"


# --- 5. Every variable read one way ---------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["abc", "-5", "0", "nan"])
def test_a_bad_lock_timeout_is_rejected_naming_the_variable(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLICKHOUSE_LOCK_TIMEOUT_SECONDS", value)
    with pytest.raises(SettingError, match=f"CLICKHOUSE_LOCK_TIMEOUT_SECONDS must be a number of seconds greater "
                       f"than 0, got '{value}'"):  # fmt: skip
        load_settings()


def test_a_good_lock_timeout_is_taken(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLICKHOUSE_LOCK_TIMEOUT_SECONDS", "90")
    assert load_settings().clickhouse_lock_timeout_seconds == 90.0


# --- 6. Data quirks: decided, documented and checked -----------------------------------------------------------


def test_odd_events_are_counted_as_documented_and_the_check_reports_them(
    clickhouse: ClickHouseResource, ch: ClickHouseClient, dagster_instance: DagsterInstance
) -> None:
    create_events_table(ch)
    add_event(ch, "$pageview", "2024-03-15 10:00:00", "S1", PERSON_1, "/home", team=1)
    add_event(ch, "$pageview", "2024-03-15 10:05:00", "S2", PERSON_2, "/home", team=-5)  # no such team
    at = {"at": "2024-03-15 11:00:00", "person": PERSON_2}
    for properties in ("[1,2,3]", '"just a string"', '{"$pathname": "/broken'):  # array, scalar, invalid JSON
        ch.command(
            "INSERT INTO events (uuid, event, properties, timestamp, team_id, distinct_id, person_id, `$session_id`) "
            "VALUES (generateUUIDv4(), '$pageview', {properties:String}, {at:DateTime64(6, 'UTC')}, 2, "
            "{person:String}, {person:UUID}, 'S3')",
            {"properties": properties, **at},
        )

    result = materialize(
        [web_pre_aggregated_stats],
        partition_key=DAY.isoformat(),
        resources={"clickhouse": clickhouse},
        instance=dagster_instance,
        raise_on_error=False,
    )

    assert result.success
    rows = ch.query_rows(
        f"SELECT team_id, pathname, host, sumMerge(pageviews_count_state) AS pageviews FROM {STATS_TABLE} "
        "GROUP BY team_id, pathname, host ORDER BY team_id"
    )
    # Team 1 as usual; the three pageviews with unreadable properties count, with empty dimensions (never the
    # array's elements read by position); the negative team is left out, not wrapped into a huge team id.
    assert rows == [
        {"team_id": 1, "pathname": "/home", "host": "www.example.com", "pageviews": 1},
        {"team_id": 2, "pathname": "", "host": "", "pageviews": 3},
    ]
    checks = {
        evaluation.check_name: evaluation
        for evaluation in result.get_asset_check_evaluations()
        if evaluation.asset_key == AssetKey(STATS_TABLE)
    }
    assert checks["totals_match_events"].passed, checks["totals_match_events"].metadata
    left_out = checks["no_events_left_out"]
    assert not left_out.passed
    assert {name: value.value for name, value in left_out.metadata.items()} == {
        "negative_team_id": 1,
        "properties_not_an_object": 2,
        "properties_not_valid_json": 1,
    }
    stats = result.asset_materializations_for_node(STATS_TABLE)[0].metadata
    assert stats["pageviews_left_out_negative_team_id"].value == 1


# --- 7. Partition keys out of range: each asset says its range ---------------------------------------------------


def test_every_partitioned_asset_says_its_range_and_the_variable_that_sets_it() -> None:
    from dags.definitions import defs

    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        if node.partitions_def is None or node.is_external:
            continue
        description = " ".join((node.description or "").split())
        assert "Partitions: one per" in description, f"{key.to_user_string()} does not say its partitions"
        if key.to_user_string() != "demo_events":
            assert "_START_DATE" in description or "BATCH_EXPORTS_FILE" in description, (
                f"{key.to_user_string()} does not name what sets its first partition"
            )
