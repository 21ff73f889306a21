"""The ClickHouse resource on real servers: Debian's 18.16 over the native protocol (one server and a cluster
of two), and a modern server when ``CLICKHOUSE_TEST_URL`` names one.

18.16 cannot parse ``{name:Type}`` placeholders, so there the resource renders bound values as typed
literals; the tests marked ``requires_clickhouse_server`` prove that a modern server binds them itself.
"""

import ctypes
import threading
import uuid
from datetime import date

import pandas as pd
import pyarrow as pa
import pytest

from dags.common import ClickHouseClient, ClickHouseError, ClickHouseResource
from dags.tests.conftest import CLUSTER_NAME, ClickHouseServer, free_port, wait_until


def native_resource(server: ClickHouseServer, **options: object) -> ClickHouseResource:
    return ClickHouseResource(url=server.native_url, **{"retry_base_delay_seconds": 0.1, **options})


# --- One 18.16 server over the native protocol -------------------------------------------------------------


def test_native_protocol_insert_select_and_settings(native_clickhouse_server: ClickHouseServer) -> None:
    with native_resource(native_clickhouse_server).get_client() as client:
        client.command("DROP TABLE IF EXISTS default.native_visits")
        client.command("CREATE TABLE default.native_visits (id UInt64, name String) ENGINE = MergeTree ORDER BY id")
        rows = pa.table({"id": pa.array([1, 2, 3], pa.uint64()), "name": ["a", "b", "c"]})
        assert client.insert_arrow("default.native_visits", rows) == 3
        assert client.insert_df("default.native_visits", pd.DataFrame({"id": [4], "name": ["d"]})) == 1
        read = client.query_arrow("SELECT id, name FROM default.native_visits ORDER BY id")
        assert read.schema.types == [pa.uint64(), pa.string()]
        assert read.to_pylist() == [
            {"id": 1, "name": "a"}, {"id": 2, "name": "b"}, {"id": 3, "name": "c"}, {"id": 4, "name": "d"},
        ]  # fmt: skip
        empty = client.query_arrow("SELECT id, name FROM default.native_visits WHERE id > 100")
        assert empty.num_rows == 0 and empty.column_names == ["id", "name"]
        setting = "SELECT value FROM system.settings WHERE name = 'max_threads'"
        assert client.command(setting, settings={"max_threads": 3}) == "3"
        with pytest.raises(ClickHouseError, match="'SELECT missing_column.*Unknown identifier: missing_column"):
            client.command("SELECT missing_column FROM default.native_visits")


def test_native_stream_yields_one_batch_per_block_covering_every_row(
    native_clickhouse_server: ClickHouseServer,
) -> None:
    with native_resource(native_clickhouse_server).get_client() as client:
        with client.query_arrow_stream(
            "SELECT number AS n FROM system.numbers LIMIT 100000", settings={"max_block_size": 10_000}
        ) as batches:
            sizes = []
            total = 0
            for batch in batches:
                sizes.append(batch.num_rows)
                total += pa.compute.sum(batch.column("n")).as_py()
    assert sum(sizes) == 100_000 and max(sizes) <= 10_000 and len(sizes) >= 10
    assert total == sum(range(100_000))


def test_values_reach_an_old_server_as_typed_literals(native_clickhouse_server: ClickHouseServer) -> None:
    tricky = "it's {not:String} a %(placeholder)s \\ ; DROP TABLE x"
    with native_resource(native_clickhouse_server).get_client() as client:
        client.command("DROP TABLE IF EXISTS {table:Identifier}", {"table": "notes"})
        client.command("CREATE TABLE {table:Identifier} (day Date, text String) ENGINE = Memory", {"table": "notes"})
        client.command("INSERT INTO notes SELECT {day:Date}, {text:String}", {"day": date(2024, 1, 2), "text": tricky})
        rows = client.query_rows(
            "SELECT toString(day) AS day_text, text, '{kept}' AS literal FROM notes "
            "WHERE day = {day:Date} AND has({days:Array(Date)}, day) AND text LIKE '%placeholder%'",
            {"day": "2024-01-02", "days": [date(2024, 1, 2)]},
        )
    assert rows == [{"day_text": "2024-01-02", "text": tricky, "literal": "{kept}"}]


def test_every_statement_runs_under_a_query_id_of_its_own(native_clickhouse_server: ClickHouseServer) -> None:
    probe = "SELECT query_id FROM system.processes WHERE query LIKE '%query-id-probe%'"
    with native_resource(native_clickhouse_server).get_client() as client:
        first, second = (client.command(probe) for _ in range(2))
    assert str(uuid.UUID(first)) == first and str(uuid.UUID(second)) == second
    assert first != second


def test_native_protocol_reconnects_after_the_server_restarts(native_clickhouse_server: ClickHouseServer) -> None:
    resource = native_resource(native_clickhouse_server, retry_base_delay_seconds=0.5, max_attempts=8)
    with resource.get_client() as client:
        assert client.command("SELECT 1") == 1
        native_clickhouse_server.stop()
        native_clickhouse_server.start()
        # The old socket is dead: the driver reconnects (or the resource retries) without the caller noticing.
        assert client.command("SELECT 2") == 2
    with resource.get_client() as client:
        assert client.command("SELECT 3") == 3


def interrupt_a_long_select_and_check_it_was_killed(resource: ClickHouseResource) -> None:
    """Run an endless SELECT through the client, interrupt the waiting thread as a run's termination does,
    and check that the statement was killed on the server by its query id."""
    outcome: dict[str, BaseException] = {}
    marker = f"kill-me-{uuid.uuid4().hex[:8]}"
    endless = f"SELECT count() FROM system.numbers WHERE NOT ignore(sipHash64(number), '{marker}')"

    def run_until_interrupted(client: ClickHouseClient) -> None:
        try:
            client.command(endless)
        except BaseException as error:  # the interrupt, handed back once the query was killed
            outcome["error"] = error

    def running(client: ClickHouseClient) -> list[dict]:
        return client.query_rows(
            "SELECT query_id FROM system.processes WHERE query LIKE {pattern:String} AND query NOT LIKE '%processes%'",
            {"pattern": f"%{marker}%"},
        )

    with resource.get_client() as client, resource.get_client() as watcher:
        caller = threading.Thread(target=run_until_interrupted, args=(client,), daemon=True)
        caller.start()
        wait_until(lambda: bool(running(watcher)), 30, "the SELECT to run on the server")
        query_id = running(watcher)[0]["query_id"]
        # What a run's termination does to the waiting thread: an interrupt (here KeyboardInterrupt) raised in it.
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(caller.ident), ctypes.py_object(KeyboardInterrupt))
        caller.join(60)
        assert not caller.is_alive(), "the interrupted statement is still waiting"
        assert isinstance(outcome.get("error"), KeyboardInterrupt)
        still_running = "SELECT query_id FROM system.processes WHERE query_id = {id:String}"
        assert watcher.query_rows(still_running, {"id": query_id}) == []


def test_interrupting_a_long_select_kills_it_on_the_server_by_its_query_id(
    native_clickhouse_server: ClickHouseServer,
) -> None:
    interrupt_a_long_select_and_check_it_was_killed(native_resource(native_clickhouse_server))


def test_unreachable_server_fails_with_a_clear_error_without_the_password() -> None:
    url = f"clickhouse://analyst:s3cret-pass@127.0.0.1:{free_port()}/default"
    resource = ClickHouseResource(
        url=url, retry_base_delay_seconds=0.05, connect_timeout_seconds=1, connect_retry_seconds=1
    )
    with pytest.raises(ClickHouseError) as raised:
        with resource.get_client():
            pass
    message = str(raised.value)
    assert "Could not reach ClickHouse at clickhouse://analyst:***@127.0.0.1" in message
    assert "s3cret-pass" not in message


# --- A cluster of two 18.16 servers --------------------------------------------------------------------------


def marks_on(server: ClickHouseServer) -> list[str]:
    with native_resource(server).get_client() as client:
        return [row["mark"] for row in client.query_rows("SELECT mark FROM default.marks ORDER BY mark")]


def test_run_on_all_hosts_reaches_every_host_and_names_the_one_that_fails(
    native_clickhouse_cluster: list[ClickHouseServer],
) -> None:
    first, second = native_clickhouse_cluster
    for server in native_clickhouse_cluster:
        with native_resource(server).get_client() as client:
            client.command("DROP TABLE IF EXISTS default.marks")
            client.command("CREATE TABLE default.marks (mark String) ENGINE = Memory")
    resource = native_resource(first, cluster=CLUSTER_NAME, max_attempts=2, connect_timeout_seconds=1)

    assert resource.run_on_all_hosts("INSERT INTO default.marks SELECT {mark:String}", {"mark": "reload"}) == 2
    assert marks_on(first) == ["reload"] and marks_on(second) == ["reload"]

    second.stop()
    try:
        with pytest.raises(ClickHouseError) as raised:
            resource.run_on_all_hosts("INSERT INTO default.marks SELECT {mark:String}", {"mark": "again"})
        message = str(raised.value)
        assert f"failed on 1 of 2 hosts: ['127.0.0.1:{second.tcp_port}: " in message
        assert marks_on(first) == ["again", "reload"], "the host that answers still ran the statement"
    finally:
        second.start()


# --- A modern server (CLICKHOUSE_TEST_URL) --------------------------------------------------------------------


def test_every_client_method_binds_parameters_on_a_modern_server(clickhouse_server_url: str) -> None:
    resource = ClickHouseResource(url=clickhouse_server_url, retry_base_delay_seconds=0.1)
    tricky = "it's {not:String} 100% %(placeholder)s"
    with resource.get_client() as client:
        client.command(
            "CREATE TABLE {table:Identifier} (day Date, team UInt64, text String) ENGINE = MergeTree ORDER BY day",
            {"table": "notes"},
        )
        client.insert_arrow(
            "notes", pa.table({"day": [date(2024, 1, 2)], "team": pa.array([7], pa.uint64()), "text": [tricky]})
        )
        client.insert_df("notes", pd.DataFrame({"day": [date(2024, 1, 3)], "team": [8], "text": ["b"]}))
        assert client.command("SELECT count() FROM notes WHERE day = {day:Date}", {"day": date(2024, 1, 2)}) == 1
        filtered = client.query_arrow(
            "SELECT text FROM notes WHERE (empty({teams:Array(UInt64)}) OR has({teams:Array(UInt64)}, team)) "
            "AND text LIKE '%100%'",
            {"teams": [7]},
        )
        assert filtered.column("text").to_pylist() == [tricky]
        with client.query_arrow_stream(
            "SELECT toString(day) AS day_text FROM {table:Identifier} WHERE day >= {from:Date} ORDER BY day",
            {"table": "notes", "from": "2024-01-01"},
        ) as batches:
            days = [row["day_text"] for batch in batches for row in batch.to_pylist()]
        assert days == ["2024-01-02", "2024-01-03"]
        # The server saw the placeholder and bound the value itself: nothing was spliced into the text.
        seen = client.query_rows(
            "SELECT {probe:String} AS probe, query FROM system.processes WHERE query_id = queryID()", {"probe": tricky}
        )
        assert seen[0]["probe"] == tricky and "{probe:String}" in seen[0]["query"]


def test_interrupting_a_long_select_on_a_modern_server_kills_it(clickhouse_server_url: str) -> None:
    interrupt_a_long_select_and_check_it_was_killed(ClickHouseResource(url=clickhouse_server_url))
