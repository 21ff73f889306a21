"""The ClickHouse resource on real servers: Debian's 18.16 over the native protocol (one server and a cluster
of two), the 26.9 server from the chdb-core wheel over HTTP and native (and ``CLICKHOUSE_TEST_URL``'s server),
and what must be the same on every engine.

18.16 cannot parse ``{name:Type}`` placeholders, so there the resource renders bound values as typed
literals; on a modern server the server binds them itself, as its ``system.query_log`` shows.
"""

import ctypes
import threading
import uuid
from datetime import UTC, date, datetime
from decimal import Decimal

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
        assert f"failed on 1 of 2 hosts: 127.0.0.1:{second.tcp_port} (shard 2, replica 1): " in message
        assert marks_on(first) == ["again", "reload"], "the host that answers still ran the statement"
    finally:
        second.start()


# --- A modern server (26.9, and CLICKHOUSE_TEST_URL's) ----------------------------------------------------------


def test_every_client_method_binds_parameters_on_a_modern_server(clickhouse_server_url: str) -> None:
    """The server's own ``system.query_log`` shows the substitution it made: a bound ``{day:Date}`` becomes
    ``_CAST(19724, 'Date')`` (the day's number), a form no client writes; a value the client spliced into the
    text would be logged as written (``'2024-01-02'``)."""
    resource = ClickHouseResource(url=clickhouse_server_url, retry_base_delay_seconds=0.1)
    tricky = "it's {not:String} 100% %(placeholder)s"
    day = date(2024, 1, 2)
    day_number = (day - date(1970, 1, 1)).days
    with resource.get_client() as client:
        client.command(
            "CREATE TABLE {table:Identifier} (day Date, team UInt64, text String) ENGINE = MergeTree ORDER BY day",
            {"table": "notes"},
        )
        client.insert_arrow("notes", pa.table({"day": [day], "team": pa.array([7], pa.uint64()), "text": [tricky]}))
        client.insert_df("notes", pd.DataFrame({"day": [date(2024, 1, 3)], "team": [8], "text": ["b"]}))
        marker = uuid.uuid4().hex[:8]
        probe = f"SELECT count() AS n_METHOD_{marker} FROM notes WHERE day = {{day:Date}} AND text = {{text:String}}"
        parameters = {"day": day, "text": tricky}
        assert client.command(probe.replace("METHOD", "command"), parameters) == 1
        assert client.query_arrow(probe.replace("METHOD", "query_arrow"), parameters).column(0).to_pylist() == [1]
        assert list(client.query_rows(probe.replace("METHOD", "query_rows"), parameters)[0].values()) == [1]
        with client.query_arrow_stream(probe.replace("METHOD", "stream"), parameters) as batches:
            assert [row for batch in batches for row in batch.column(0).to_pylist()] == [1]
        filtered = client.query_arrow(
            "SELECT text FROM notes WHERE (empty({teams:Array(UInt64)}) OR has({teams:Array(UInt64)}, team)) "
            "AND text LIKE '%100%'",
            {"teams": [7]},
        )
        assert filtered.column("text").to_pylist() == [tricky]
        client.command("SYSTEM FLUSH LOGS")
        logged = client.query_rows(
            "SELECT query FROM system.query_log WHERE type = 'QueryFinish' AND query LIKE {pattern:String} "
            "AND query NOT LIKE '%query_log%'",
            {"pattern": f"%_{marker} FROM notes%"},
        )
    methods = ["command", "query_arrow", "query_rows", "stream"]
    assert sorted(method for method in methods for row in logged if f"n_{method}_{marker}" in row["query"]) == sorted(
        methods
    )
    for row in logged:
        assert f"day = _CAST({day_number}, 'Date')" in row["query"], row["query"]
        assert "2024-01-02" not in row["query"] and "{day:Date}" not in row["query"]


def test_interrupting_a_long_select_on_a_modern_server_kills_it(clickhouse_server_url: str) -> None:
    interrupt_a_long_select_and_check_it_was_killed(ClickHouseResource(url=clickhouse_server_url))


# --- The same Arrow schema whatever the way in ------------------------------------------------------------------

TYPED_ROW = """
SELECT toUInt64(1) AS u64, toInt64(-2) AS i64, toUInt32(3) AS u32, toUInt8(4) AS u8, 'text' AS s,
       toDate('2024-01-02') AS d, toDateTime('2024-01-02 03:04:05', 'UTC') AS dt,
       toDateTime64('2024-01-02 03:04:05.123456', 6, 'UTC') AS dt64, true AS b, toFloat64(1.5) AS f,
       toUUID('01234567-89ab-cdef-0123-456789abcdef') AS id, ['x', 'y'] AS arr, CAST(NULL AS Nullable(String)) AS ns,
       toLowCardinality('l') AS lc, toDecimal64(1.5, 4) AS dec, map('k', toUInt64(7)) AS m
"""

# What ClickHouse's own Arrow format writes for these types (DateTime as seconds in a uint32, UUID as the
# arrow.uuid extension, a column nullable only when its type is Nullable).
TYPED_SCHEMA = pa.schema(
    [
        pa.field("u64", pa.uint64(), nullable=False),
        pa.field("i64", pa.int64(), nullable=False),
        pa.field("u32", pa.uint32(), nullable=False),
        pa.field("u8", pa.uint8(), nullable=False),
        pa.field("s", pa.string(), nullable=False),
        pa.field("d", pa.date32(), nullable=False),
        pa.field("dt", pa.uint32(), nullable=False),
        pa.field("dt64", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("b", pa.bool_(), nullable=False),
        pa.field("f", pa.float64(), nullable=False),
        pa.field("id", pa.uuid(), nullable=False),
        pa.field("arr", pa.list_(pa.field("item", pa.string(), nullable=False)), nullable=False),
        pa.field("ns", pa.string(), nullable=True),
        pa.field("lc", pa.string(), nullable=False),
        pa.field("dec", pa.decimal128(18, 4), nullable=False),
        pa.field("m", pa.map_(pa.string(), pa.field("value", pa.uint64(), nullable=False)), nullable=False),
    ]
)


def test_arrow_results_have_the_same_schema_and_values_on_every_engine(ch: ClickHouseClient) -> None:
    whole = ch.query_arrow(TYPED_ROW)
    with ch.query_arrow_stream(TYPED_ROW) as batches:
        streamed = list(batches)
    empty = ch.query_arrow(TYPED_ROW + " WHERE 0")
    for schema in (whole.schema, streamed[0].schema, empty.schema):
        assert schema.remove_metadata().equals(TYPED_SCHEMA), schema
    epoch = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC).timestamp()
    assert whole.to_pylist() == [
        {
            "u64": 1, "i64": -2, "u32": 3, "u8": 4, "s": "text", "d": date(2024, 1, 2), "dt": int(epoch),
            "dt64": datetime(2024, 1, 2, 3, 4, 5, 123456, tzinfo=UTC), "b": True, "f": 1.5,
            "id": uuid.UUID("01234567-89ab-cdef-0123-456789abcdef"), "arr": ["x", "y"], "ns": None, "lc": "l",
            "dec": Decimal("1.5000"), "m": [("k", 7)],
        }
    ]  # fmt: skip
    assert pa.Table.from_batches(streamed).to_pylist() == whole.to_pylist()


def test_mostly_default_dates_and_times_read_back_as_stored_on_every_engine(ch: ClickHouseClient) -> None:
    """Sent sparse over native too: the rows left out are the type's default, 1970-01-01."""
    ch.command(
        "CREATE TABLE moments (n UInt32, day Date, at DateTime('UTC'), at_us DateTime64(6, 'UTC')) "
        "ENGINE = MergeTree ORDER BY n"
    )
    ch.command(
        "INSERT INTO moments SELECT number, if(number = 7, toDate('2024-03-01'), toDate(0)), "
        "if(number = 7, toDateTime('2024-03-01 12:00:00', 'UTC'), toDateTime(0, 'UTC')), "
        "if(number = 7, toDateTime64('2024-03-01 12:00:00.25', 6, 'UTC'), toDateTime64(0, 6, 'UTC')) "
        "FROM numbers(1000)"
    )
    read = ch.query_arrow("SELECT day, at, at_us FROM moments ORDER BY n")

    def seconds(value: datetime | int) -> float:  # ClickHouse's Arrow gives DateTime as seconds (uint32)
        return value.timestamp() if isinstance(value, datetime) else value

    assert read.column("day").to_pylist() == [date(2024, 3, 1) if n == 7 else date(1970, 1, 1) for n in range(1000)]
    noon = datetime(2024, 3, 1, 12, tzinfo=UTC).timestamp()
    assert [seconds(value) for value in read.column("at").to_pylist()] == [noon if n == 7 else 0 for n in range(1000)]
    at_us = [seconds(value) for value in read.column("at_us").to_pylist()]
    assert at_us == [noon + 0.25 if n == 7 else 0 for n in range(1000)]


def test_a_mostly_false_bool_column_reads_back_as_booleans_on_every_engine(ch: ClickHouseClient) -> None:
    """A column of mostly default values is stored (and sent over native) sparse: only its non-default rows."""
    ch.command("CREATE TABLE flags (n UInt32, flag Bool) ENGINE = MergeTree ORDER BY n")
    ch.command("INSERT INTO flags SELECT number, number = 7 FROM numbers(1000)")
    read = ch.query_arrow("SELECT flag FROM flags ORDER BY n")
    assert read.schema.field("flag").type == pa.bool_()
    assert read.column("flag").to_pylist() == [n == 7 for n in range(1000)]
