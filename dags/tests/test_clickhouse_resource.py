"""The ClickHouse resource on each way in: the embedded engine, the native protocol, and the engine's lock."""

import ctypes
import os
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from dagster import AssetExecutionContext, DagsterInstance, MaterializeResult, asset, materialize
from dagster._core.instance.ref import InstanceRef

from dags.clickhouse.url import parse_clickhouse_url
from dags.common import (
    PROJECT_ROOT,
    ClickHouseBusyError,
    ClickHouseClient,
    ClickHouseError,
    ClickHouseNotRetryableError,
    ClickHouseResource,
    load_settings,
    redact_url,
)
from dags.exports.settings import load_export_settings

# --- Embedded engine: the project's real SQL ---------------------------------------------------------------


def test_arrow_round_trip_keeps_types_and_values(ch: ClickHouseClient) -> None:
    ch.command(
        "CREATE TABLE visits (id UInt64, name String, seen DateTime64(6, 'UTC'), price Decimal64(4), "
        "tags Array(String)) ENGINE = MergeTree ORDER BY id"
    )
    seen = datetime(2024, 3, 15, 12, 30, 45, 123456, tzinfo=UTC)
    table = pa.table(
        {
            "id": pa.array([1, 2, 3], pa.uint64()),
            "name": ["ä", "b", "c"],
            "seen": pa.array([seen, seen, seen], pa.timestamp("us", tz="UTC")),
            "price": pa.array([1, 2, 3], pa.decimal128(18, 4)),
            "tags": [["x"], [], ["y", "z"]],
        }
    )
    assert ch.insert_arrow("visits", table) == 3
    read = ch.query_arrow("SELECT id, name, seen, price, tags FROM visits ORDER BY id")
    assert read.column("id").to_pylist() == [1, 2, 3]
    assert read.column("name").to_pylist() == ["ä", "b", "c"]
    assert read.column("seen").to_pylist() == [seen] * 3
    assert [str(value) for value in read.column("price").to_pylist()] == ["1.0000", "2.0000", "3.0000"]
    assert read.column("tags").to_pylist() == [["x"], [], ["y", "z"]]


def test_stream_yields_bounded_batches_covering_every_row(ch: ClickHouseClient) -> None:
    with ch.query_arrow_stream(
        "SELECT number AS n FROM numbers({rows:UInt64})", {"rows": 250_000}, settings={"max_block_size": 10_000}
    ) as batches:
        sizes = []
        total = 0
        for batch in batches:
            sizes.append(batch.num_rows)
            total += pc.sum(batch.column("n")).as_py()
    assert sum(sizes) == 250_000 and len(sizes) >= 20 and max(sizes) <= 65_536
    assert total == sum(range(250_000))


def test_a_stream_with_batch_rows_yields_exact_contiguous_batches_whatever_the_blocks(ch: ClickHouseClient) -> None:
    sql = "SELECT number AS n, toString(number) AS s FROM numbers(2500)"
    with ch.query_arrow_stream(sql, settings={"max_block_size": 7, "max_threads": 1}, batch_rows=1_000) as batches:
        read = list(batches)
    assert [batch.num_rows for batch in read] == [1_000, 1_000, 500]
    assert all(len(batch.column("s").buffers()[2]) > 0 for batch in read)  # one buffer per column, not pieces
    table = pa.Table.from_batches(read)
    assert table.column("n").to_pylist() == list(range(2500))
    assert table.column("s").to_pylist() == [str(n) for n in range(2500)]


def test_streamed_batches_stay_valid_after_the_stream_is_closed(ch: ClickHouseClient) -> None:
    """The embedded engine's blocks are read in place: a batch must keep its block alive on its own."""
    sql = "SELECT number AS n, repeat(toString(number), 20) AS s FROM numbers(200000)"
    with ch.query_arrow_stream(sql, settings={"max_block_size": 50_000, "max_threads": 1}) as batches:
        kept = list(batches)
    with ch.query_arrow_stream(sql + " WHERE n % 2 = 0", settings={"max_threads": 1}) as batches:
        assert sum(batch.num_rows for batch in batches) == 100_000  # the engine reuses freed memory meanwhile
    table = pa.Table.from_batches(kept)
    assert table.column("n").to_pylist() == list(range(200_000))
    assert table.column("s").to_pylist() == [str(n) * 20 for n in range(200_000)]


def test_stream_binds_parameters_and_applies_settings_and_log_comment(ch: ClickHouseClient) -> None:
    sql = "SELECT number, getSetting('max_threads') AS threads, getSetting('log_comment') AS comment, {x:String} AS x"
    with ch.query_arrow_stream(sql + " FROM numbers(3)", {"x": "it's"}, settings={"max_threads": 1}) as batches:
        rows = [row for batch in batches for row in batch.to_pylist()]
    assert [row["number"] for row in rows] == [0, 1, 2]
    assert str(rows[0]["threads"]) == "1" and rows[0]["x"] == "it's"
    assert '"statement": "SELECT number' in rows[0]["comment"]


def test_stream_applies_the_resources_own_settings(clickhouse: ClickHouseResource) -> None:
    single_threaded = clickhouse.model_copy(update={"settings": {"max_threads": 1}})
    with single_threaded.get_client() as client:
        with client.query_arrow_stream("SELECT getSetting('max_threads') AS threads") as batches:
            rows = [row for batch in batches for row in batch.to_pylist()]
    assert [str(row["threads"]) for row in rows] == ["1"]


def running_queries(client: ClickHouseClient, marker: str) -> list[dict]:
    return client.query_rows(
        "SELECT query_id FROM system.processes WHERE query LIKE {pattern:String} AND query NOT LIKE '%processes%'",
        {"pattern": f"%{marker}%"},
    )


def stream_readers() -> list[str]:
    return [thread.name for thread in threading.enumerate() if thread.name.startswith("clickhouse-stream")]


def test_a_stream_failing_midway_raises_in_the_consumer_after_the_rows_before_it(ch: ClickHouseClient) -> None:
    rows = 0
    with pytest.raises(ClickHouseError, match="failed while streaming"):
        with ch.query_arrow_stream(
            "SELECT throwIf(number >= 150000, 'no row past here') AS n FROM numbers(300000)",
            settings={"max_block_size": 10_000, "max_threads": 1},
        ) as batches:
            for batch in batches:
                rows += batch.num_rows
    assert 0 < rows <= 150_000
    assert stream_readers() == []


def test_leaving_a_stream_early_stops_its_query_and_its_reader(clickhouse: ClickHouseResource) -> None:
    marker = f"endless-{uuid.uuid4().hex[:8]}"
    with clickhouse.get_client() as client, clickhouse.get_client() as watcher:
        with client.query_arrow_stream(
            f"SELECT number FROM system.numbers WHERE NOT ignore('{marker}')", settings={"max_block_size": 1_000}
        ) as batches:
            assert next(batches).num_rows > 0
            assert running_queries(watcher, marker) != []
        assert running_queries(watcher, marker) == []
    assert stream_readers() == []


def test_interrupting_a_stream_consumer_kills_the_query_it_waits_for(clickhouse: ClickHouseResource) -> None:
    """A run's termination interrupts the thread that reads the stream; the engine's query must end too, even
    while the engine is still working towards its next block (here: an endless count that never sends one)."""
    marker = f"endless-{uuid.uuid4().hex[:8]}"
    outcome: dict[str, BaseException] = {}

    def consume(client: ClickHouseClient) -> None:
        try:
            with client.query_arrow_stream(
                f"SELECT count() FROM system.numbers WHERE NOT ignore(sipHash64(number), '{marker}')"
            ) as batches:
                list(batches)
        except BaseException as error:
            outcome["error"] = error

    with clickhouse.get_client() as client, clickhouse.get_client() as watcher:
        consumer = threading.Thread(target=consume, args=(client,), daemon=True)
        consumer.start()
        deadline = time.monotonic() + 60
        while not running_queries(watcher, marker) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert running_queries(watcher, marker) != [], "the query did not start"
        # What a run's termination does to the waiting thread: an interrupt (here KeyboardInterrupt) raised in it.
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(consumer.ident), ctypes.py_object(KeyboardInterrupt))
        consumer.join(60)
        assert not consumer.is_alive(), "the interrupted consumer is still waiting"
        assert isinstance(outcome.get("error"), KeyboardInterrupt)
        assert running_queries(watcher, marker) == []
    assert stream_readers() == []


def test_pandas_insert_and_bound_parameters(ch: ClickHouseClient) -> None:
    import pandas as pd

    ch.command("CREATE TABLE notes (day Date, text String) ENGINE = MergeTree ORDER BY day")
    ch.insert_df("notes", pd.DataFrame({"day": [datetime(2024, 1, 2).date()], "text": ["it's'; DROP TABLE notes"]}))
    rows = ch.query_rows("SELECT text FROM notes WHERE day = {day:Date}", {"day": "2024-01-02"})
    assert rows == [{"text": "it's'; DROP TABLE notes"}]


def retries_announced(caplog: pytest.LogCaptureFixture, statement: str) -> int:
    """How many times the resource announced a retry of ``statement`` (one warning before each new attempt)."""
    return sum(
        1
        for record in caplog.records
        if "failed with a transient error" in record.getMessage() and statement in record.getMessage()
    )


def test_errors_name_the_statement_and_the_server_message(ch: ClickHouseClient) -> None:
    with pytest.raises(ClickHouseError) as raised:
        ch.command("SELECT no_such_column\nFROM system.one")
    message = str(raised.value)
    assert "'SELECT no_such_column'" in message
    assert "no_such_column" in message.split("failed:", 1)[1]
    assert "@ 0x" not in message and "Stack trace" not in message  # the server's stack trace is left out


def test_a_wrong_query_is_tried_once_and_never_retried(
    clickhouse: ClickHouseResource, caplog: pytest.LogCaptureFixture
) -> None:
    patient = clickhouse.model_copy(update={"max_attempts": 4, "retry_base_delay_seconds": 0.01})
    with patient.get_client() as client:
        with pytest.raises(ClickHouseError, match="no_such_column"):
            client.command("SELECT no_such_column FROM system.one")
        # The same resource does retry what is transient: the count below is not zero by construction.
        with pytest.raises(ClickHouseError, match="Too many simultaneous queries"):
            client.command(
                "SELECT throwIf(1, 'Too many simultaneous queries', toInt32(202))",
                settings={"allow_custom_error_code_in_throwif": 1},
            )
    assert retries_announced(caplog, "SELECT no_such_column") == 0
    assert retries_announced(caplog, "SELECT throwIf(1") == 3


def test_transient_server_errors_are_retried_until_they_pass(clickhouse: ClickHouseResource) -> None:
    # The server refuses with TOO_MANY_SIMULTANEOUS_QUERIES (202) until the deadline passes.
    patient = clickhouse.model_copy(update={"retry_base_delay_seconds": 0.3, "max_attempts": 6})
    deadline = (datetime.now(UTC) + timedelta(seconds=0.6)).strftime("%Y-%m-%d %H:%M:%S.%f")
    started = time.monotonic()
    with patient.get_client() as ch:
        result = ch.command(
            "SELECT throwIf(now64(6, 'UTC') < toDateTime64({deadline:String}, 6, 'UTC'), "
            "'Too many simultaneous queries', toInt32(202))",
            {"deadline": deadline},
            settings={"allow_custom_error_code_in_throwif": 1},
        )
    assert int(result) == 0
    assert time.monotonic() - started >= 0.5


def test_a_calls_settings_apply_to_that_call_only(clickhouse: ClickHouseResource) -> None:
    single_threaded = clickhouse.model_copy(update={"settings": {"max_threads": 1}})
    with single_threaded.get_client() as client:
        probe = "SELECT getSetting('max_threads') || ' ' || toString(getSetting('max_block_size'))"
        default_block = str(client.command("SELECT getSetting('max_block_size')"))
        assert str(client.command(probe, settings={"max_threads": 3, "max_block_size": 1234})) == "3 1234"
        assert str(client.query_rows(probe + " AS v", settings={"max_threads": 2})[0]["v"]) == f"2 {default_block}"
        assert str(client.command(probe)) == f"1 {default_block}"  # the resource's own, and the default
        with pytest.raises(ClickHouseError, match="no_such_setting"):
            client.command("SELECT 1", settings={"max_block_size": 99, "no_such_setting": 1})
        assert str(client.command(probe)) == f"1 {default_block}"


def test_every_query_carries_a_log_comment_naming_run_job_and_asset(
    clickhouse: ClickHouseResource, dagster_instance: DagsterInstance
) -> None:
    @asset(partitions_def=None)
    def comment_probe(context: AssetExecutionContext, clickhouse: ClickHouseResource) -> MaterializeResult:
        with clickhouse.get_client(context) as client:
            comment = client.command("SELECT getSetting('log_comment')")
        return MaterializeResult(metadata={"log_comment": str(comment)})

    result = materialize([comment_probe], resources={"clickhouse": clickhouse}, instance=dagster_instance)
    assert result.success
    materialization = result.asset_materializations_for_node("comment_probe")[0]
    comment = materialization.metadata["log_comment"].value
    assert result.run_id in comment
    assert '"asset": "comment_probe"' in comment and '"job": "__ephemeral_asset_job__"' in comment


def test_database_in_the_url_is_used_but_created_only_by_the_local_setup(clickhouse_data_path: Path) -> None:
    resource = ClickHouseResource(url=f"chdb://{clickhouse_data_path}?database=analytics_url_test")
    with pytest.raises(ClickHouseNotRetryableError, match="has no database 'analytics_url_test'.*CLICKHOUSE_URL"):
        with resource.get_client():
            pass
    with ClickHouseResource(url=f"chdb://{clickhouse_data_path}").get_client() as client:
        assert not client.command("SELECT count() FROM system.databases WHERE name = 'analytics_url_test'")
    with resource.get_client(create_database=True) as client:  # what bin/demo and demo_events do
        assert client.database == "analytics_url_test"
    with resource.get_client() as client:
        assert client.database == "analytics_url_test"
        client.command("DROP DATABASE analytics_url_test")


# --- Configuration -------------------------------------------------------------------------------------------


def test_urls_are_parsed_and_passwords_never_shown() -> None:
    assert parse_clickhouse_url("chdb:///data/ch").kind == "embedded"
    assert parse_clickhouse_url("https://u:p@ch.example.com:8443/analytics").database == "analytics"
    assert parse_clickhouse_url("clickhouse://u:p@ch:9000/db").kind == "native"
    assert redact_url("https://user:hunter2@ch.example.com:8443/db") == "https://user:***@ch.example.com:8443/db"
    with pytest.raises(ValueError, match="must start with chdb://"):
        parse_clickhouse_url("mysql://user:hunter2@host/db")
    with pytest.raises(ValueError) as raised:
        parse_clickhouse_url("ftp://user:hunter2@host/db")
    assert "hunter2" not in str(raised.value)


def test_debug_forces_the_local_resources_even_with_production_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLICKHOUSE_URL", "https://user:secret@prod.example.com:8443/db")
    monkeypatch.setenv("EXPORT_DESTINATION_URL", "s3://prod-bucket/exports")
    production = load_settings()
    assert production.effective_clickhouse_url.startswith("https://")
    assert load_export_settings().effective_destination_url == "s3://prod-bucket/exports"
    monkeypatch.setenv("DEBUG", "1")
    local = load_settings()
    assert local.effective_clickhouse_url == f"chdb://{local.dagster_home / 'clickhouse'}"
    assert load_export_settings().effective_destination_url.startswith("file://")


def test_fresh_clone_defaults_to_the_embedded_engine_under_dagster_home(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    settings = load_settings()
    assert settings.effective_clickhouse_url == f"chdb://{PROJECT_ROOT / '.dagster_home' / 'clickhouse'}"
    assert load_export_settings().effective_destination_url == (PROJECT_ROOT / ".dagster_home" / "exports").as_uri()


def test_server_url_reaches_the_resource_through_an_env_var(monkeypatch: pytest.MonkeyPatch) -> None:
    from dagster import EnvVar

    from dags.common import clickhouse_resource_from_env

    monkeypatch.setenv("CLICKHOUSE_URL", "https://user:secret@prod.example.com:8443/db")
    monkeypatch.delenv("DEBUG", raising=False)
    resource = clickhouse_resource_from_env()
    # An EnvVar, so the UI and the stored run config show the variable's name, never the password.
    assert isinstance(resource._get_non_default_public_field_values()["url"], EnvVar)


def test_outside_runs_the_resource_holds_the_server_url_itself_with_the_same_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from dags.common import clickhouse_resource_from_env

    monkeypatch.setenv("CLICKHOUSE_URL", "http://default@127.0.0.1:8123/db")
    monkeypatch.setenv("CLICKHOUSE_LOCK_TIMEOUT_SECONDS", "7")
    monkeypatch.delenv("DEBUG", raising=False)
    resource = clickhouse_resource_from_env(outside_runs=True)
    assert resource.url == "http://default@127.0.0.1:8123/db"
    assert resource.lock_timeout_seconds == 7


# --- The embedded engine's lock: one process at a time ------------------------------------------------------

HOLDER = textwrap.dedent(
    """
    import sys, time
    from dags.common import ClickHouseResource
    resource = ClickHouseResource(url="chdb://" + sys.argv[1])
    with resource.get_client() as client:
        client.command("CREATE TABLE IF NOT EXISTS held (x UInt8) ENGINE = Memory")
        print("holding", flush=True)
        time.sleep(float(sys.argv[2]))
    print("released", flush=True)
    """
)


def hold_engine(path: Path, seconds: float) -> subprocess.Popen:
    process = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path), str(seconds)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=PROJECT_ROOT,
    )
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "holding"
    return process


def test_a_held_engine_is_waited_for(tmp_path: Path) -> None:
    path = tmp_path / "locked"
    holder = hold_engine(path, 2.0)
    started = time.monotonic()
    with ClickHouseResource(url=f"chdb://{path}", lock_timeout_seconds=60).get_client() as client:
        waited = time.monotonic() - started
        assert client.command("SELECT count() FROM held") == 0
    assert holder.wait(timeout=30) == 0
    assert waited >= 1.0, "the second process must wait for the first instead of failing"


def test_a_lock_held_too_long_fails_with_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "locked"
    holder = hold_engine(path, 30.0)
    try:
        with pytest.raises(ClickHouseBusyError) as raised:
            with ClickHouseResource(url=f"chdb://{path}", lock_timeout_seconds=1).get_client():
                pass
        message = str(raised.value)
        assert str(path) in message and "CLICKHOUSE_URL" in message and "in use by another process" in message
    finally:
        holder.kill()
        holder.wait()


def test_two_dagster_runs_at_once_on_the_embedded_engine_both_finish(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "CLICKHOUSE_URL": f"chdb://{tmp_path / 'clickhouse'}",
        "DAGSTER_HOME": str(tmp_path / "home"),
    }
    (tmp_path / "home").mkdir()
    # Create the instance's SQLite storage first: two CLIs creating it at the same moment race in Dagster itself.
    DagsterInstance.from_ref(InstanceRef.from_dir(str(tmp_path / "home"))).dispose()
    command = [
        sys.executable, "-m", "dagster", "asset", "materialize", "-m", "dags.definitions",
        "--select", "demo_events", "--partition",
    ]  # fmt: skip
    runs = [
        subprocess.Popen([*command, day], env=env, cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        for day in ("2024-03-14", "2024-03-15")
    ]
    outputs = [run.communicate(timeout=300)[0].decode() for run in runs]
    for run, output in zip(runs, outputs, strict=True):
        assert run.returncode == 0, output[-3000:]
        assert "RUN_SUCCESS" in output
    resource = ClickHouseResource(url=env["CLICKHOUSE_URL"])
    with resource.get_client() as client:
        days = client.query_rows("SELECT toString(toDate(timestamp)) AS day, count() AS n FROM events GROUP BY day")
    per_day = {row["day"]: row["n"] for row in days}
    assert per_day.get("2024-03-14", 0) > 0 and per_day.get("2024-03-15", 0) > 0
