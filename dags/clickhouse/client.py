"""An open ClickHouse connection for one operation: named queries, retries, and kill on interrupt."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

from dagster import Failure, get_dagster_logger

from dags.clickhouse.errors import (
    ClickHouseError,
    ClickHouseNotRetryableError,
    first_line,
    is_transient,
    retry_with_backoff,
    server_message,
)
from dags.clickhouse.read_ahead import ReadAhead, batches_of_exactly

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

    from dags.clickhouse.backends import ConnectBackend
    from dags.clickhouse.native import NativeBackend
    from dags.clickhouse.resource import ClickHouseResource

T = TypeVar("T")

# While a statement runs, a line in the run log at least this often (seconds), so a wait never looks like a hang.
PROGRESS_SECONDS = 30.0
# Record batches a stream reads ahead of its consumer: memory holds this many more batches (plus the one being
# read), enough to keep the engine busy while the consumer encodes.
READ_AHEAD_BATCHES = 2
# Regrouped batches (`batch_rows`) are row groups, larger than blocks: one waiting while the next is cut keeps
# the consumer busy, and a second one would cost a sixth more peak memory on a large export for no speed.
READ_AHEAD_ROW_GROUPS = 1


def describe_context(context: Any) -> dict[str, Any]:
    """What a query's `log_comment` says about where it came from: run, job, asset and partition."""
    if context is None:
        return {}
    described: dict[str, Any] = {}
    try:
        described["run_id"] = context.run.run_id
        described["job"] = context.run.job_name
    except Exception:
        pass
    try:
        if getattr(context, "has_assets_def", False):
            described["asset"] = ",".join(key.to_user_string() for key in sorted(context.assets_def.keys))
    except Exception:
        pass
    try:
        if context.has_partition_key_range:
            window = context.partition_key_range
            described["partitions"] = window.start if window.start == window.end else f"{window.start}...{window.end}"
    except Exception:
        pass
    return described


class ClickHouseClient:
    """An open connection for one operation. Values are bound by the server: `{name:Type}` placeholders."""

    def __init__(self, resource: ClickHouseResource, backend: ConnectBackend | NativeBackend, origin: dict[str, Any]):
        self._resource = resource
        self._backend = backend
        self.origin = origin

    @property
    def is_embedded(self) -> bool:
        return self._resource.is_embedded

    @property
    def database(self) -> str:
        """The database this connection works in (unqualified table names resolve here)."""
        return str(self.command("SELECT currentDatabase()"))

    def _settings(self, sql: str, extra: Mapping[str, Any] | None, query_id: str) -> dict[str, Any]:
        # The query id is in log_comment too: the embedded engine does not take a query_id of ours.
        origin = {"dagster": self.origin, "query_id": query_id, "statement": first_line(sql)[:80]}
        return {"log_comment": json.dumps(origin, sort_keys=True), "query_id": query_id, **(extra or {})}

    def _run(self, sql: str, operation: Callable[[str], T], interruptible: bool = True) -> T:
        """Run `operation(query_id)` with retries; each attempt gets a fresh query id.

        An interruptible statement runs in a worker thread while this thread waits, so that a run's
        termination (Dagster interrupts the run's main thread) kills the query on the server instead of
        waiting for it: see `_wait_or_kill`.
        """

        def attempt() -> T:
            query_id = str(uuid.uuid4())
            if not interruptible:
                return operation(query_id)
            return self._wait_or_kill(sql, query_id, lambda: operation(query_id))

        try:
            return retry_with_backoff(
                attempt,
                what=f"ClickHouse statement {first_line(sql)!r}",
                attempts=self._resource.max_attempts,
                base_delay=self._resource.retry_base_delay_seconds,
            )
        except (ClickHouseError, Failure):  # a Failure: the run was interrupted and the query killed
            raise
        except Exception as error:
            message = f"ClickHouse statement {first_line(sql)!r} failed: {server_message(error)}"
            if is_transient(error):  # still failing after the retries here: a step retry may outlast it
                raise ClickHouseError(message) from error
            raise ClickHouseNotRetryableError(message) from error

    def _wait_or_kill(self, sql: str, query_id: str, statement: Callable[[], T]) -> T:
        """Run `statement` in a worker thread; if this thread is interrupted meanwhile, kill the query.

        Terminating a run (from the UI, `dagster/max_runtime`, Ctrl-C) interrupts the run's main thread, but
        a thread blocked inside a driver call only notices when the server answers, which for a long
        INSERT ... SELECT may be hours later. Waiting here in short steps lets the interrupt arrive at once;
        the query is then killed by its id, so the server stops writing too.
        """
        outcome: dict[str, Any] = {}

        def work() -> None:
            try:
                outcome["result"] = statement()
            except BaseException as error:  # handed to the waiting thread
                outcome["error"] = error

        worker = threading.Thread(target=work, name=f"clickhouse-{query_id[:8]}", daemon=True)
        worker.start()
        started = next_report = time.monotonic()
        try:
            while worker.is_alive():
                worker.join(0.1)
                if time.monotonic() - next_report >= PROGRESS_SECONDS:
                    next_report = time.monotonic()
                    get_dagster_logger().info(
                        f"ClickHouse statement {first_line(sql)!r} still running after "
                        f"{next_report - started:.0f}s (query {query_id})"
                    )
        except BaseException as interrupt:
            self._kill_query(sql, query_id)
            worker.join(60)
            if "error" in outcome:
                get_dagster_logger().warning(f"ClickHouse query {query_id} ended: {server_message(outcome['error'])}")
            from dagster._core.errors import DagsterExecutionInterruptedError

            if not isinstance(interrupt, DagsterExecutionInterruptedError):
                raise  # Ctrl-C outside a Dagster run, or the interpreter exiting
            # Dagster retries an interrupted step that has a RetryPolicy, which would start the query again in
            # a run being terminated. Fail the step for good instead, and hand the interrupt back to the
            # executor so that it starts no further step and ends the run as canceled.
            _hand_interrupt_to_executor()
            raise Failure(
                description=f"The run was interrupted: ClickHouse query {query_id} ({first_line(sql)!r}) was killed.",
                allow_retries=False,
            ) from None
        if "error" in outcome:
            raise outcome["error"]
        return outcome["result"]

    def _kill_query(self, sql: str, query_id: str) -> None:
        """`KILL QUERY` the statement with this id, on a second connection (this one is busy with it)."""
        logger = get_dagster_logger()
        logger.warning(f"Interrupted: killing ClickHouse query {query_id} ({first_line(sql)!r})")
        if self.is_embedded:  # the embedded engine keeps ids of its own: find the query by its log_comment
            where = "position(Settings['log_comment'], {query_id:String}) > 0"
        else:
            where = "query_id = {query_id:String}"
        running = f"SELECT count() FROM system.processes WHERE {where}"
        parameters = {"query_id": query_id}
        try:
            with self._resource.get_client() as other:
                if not other._backend.command(running, parameters, {}):
                    logger.warning(f"KILL QUERY {query_id}: not running any more")
                    return
                other._backend.command(f"KILL QUERY WHERE {where} SYNC", parameters, {})
                outcome = "still running" if other._backend.command(running, parameters, {}) else "killed"
            logger.warning(f"KILL QUERY {query_id}: {outcome}")
        except Exception as error:
            logger.error(f"Could not kill ClickHouse query {query_id}: {server_message(error)}")

    def command(
        self, sql: str, parameters: Mapping[str, Any] | None = None, settings: Mapping[str, Any] | None = None
    ) -> Any:
        """Run a statement (DDL, INSERT ... SELECT, SYSTEM ...) or a query with a single value."""
        return self._run(
            sql, lambda query_id: self._backend.command(sql, parameters, self._settings(sql, settings, query_id))
        )

    def query_arrow(
        self, sql: str, parameters: Mapping[str, Any] | None = None, settings: Mapping[str, Any] | None = None
    ) -> pa.Table:
        """Run a query and return the whole result as an Arrow table (for small and medium results)."""
        return self._run(
            sql, lambda query_id: self._backend.query_arrow(sql, parameters, self._settings(sql, settings, query_id))
        )

    def query_rows(
        self, sql: str, parameters: Mapping[str, Any] | None = None, settings: Mapping[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        """Run a query and return its rows as dictionaries (for small results)."""
        return self.query_arrow(sql, parameters, settings).to_pylist()

    @contextmanager
    def query_arrow_stream(
        self,
        sql: str,
        parameters: Mapping[str, Any] | None = None,
        settings: Mapping[str, Any] | None = None,
        batch_rows: int | None = None,
    ) -> Iterator[Iterator[pa.RecordBatch]]:
        """Stream a large result as Arrow record batches; memory is bounded by the block size, not the result.

        With `batch_rows`, every batch but the last has exactly that many rows in contiguous columns (the
        same rows always give the same batches, whatever the engine's blocks), regrouped in the reader thread.
        """
        with ExitStack() as stack:
            opened: dict[str, str] = {}

            def open_stream(query_id: str) -> Iterator[pa.RecordBatch]:
                stream = self._backend.query_arrow_stream(sql, parameters, self._settings(sql, settings, query_id))
                batches = stack.enter_context(stream)
                opened["query_id"] = query_id
                return batches

            # Opening waits for the server's first answer, which over HTTP comes with the first block (or the
            # end, for an aggregate): wait for it interruptibly, so a run's termination kills the query then too.
            batches = self._run(sql, open_stream)
            if batch_rows is not None:
                batches = batches_of_exactly(batches, batch_rows)
            # The engine reads (and regroups) the next batches while the caller encodes the last ones; the
            # reader stops, and the stream closes, when the caller is done or interrupted.
            ahead = ReadAhead(
                batches,
                READ_AHEAD_BATCHES if batch_rows is None else READ_AHEAD_ROW_GROUPS,
                kill=lambda: self._kill_query(sql, opened["query_id"]),
                name=f"clickhouse-stream-{opened['query_id'][:8]}",
            )
            stack.callback(ahead.stop)
            yield _reraise_with_statement(sql, iter(ahead))

    def insert_arrow(self, table: str, data: pa.Table, settings: Mapping[str, Any] | None = None) -> int:
        """Insert an Arrow table (columns matched by name); returns rows inserted."""
        sql = f"INSERT INTO {table}"
        return self._run(
            sql, lambda query_id: self._backend.insert_arrow(table, data, self._settings(sql, settings, query_id))
        )

    def insert_df(self, table: str, data: pd.DataFrame, settings: Mapping[str, Any] | None = None) -> int:
        """Insert a pandas DataFrame (columns matched by name); returns rows inserted."""
        sql = f"INSERT INTO {table}"
        return self._run(
            sql, lambda query_id: self._backend.insert_df(table, data, self._settings(sql, settings, query_id))
        )


def _hand_interrupt_to_executor() -> None:
    """Record an interrupt the way Dagster's own SIGINT handler does outside user code (`capture_interrupts`)."""
    from dagster._utils import interrupts

    interrupts._received_interrupt["received"] = True


def _reraise_with_statement(sql: str, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    try:
        yield from batches
    except ClickHouseError:
        raise
    except Exception as error:
        raise ClickHouseError(
            f"ClickHouse statement {first_line(sql)!r} failed while streaming: {server_message(error)}"
        ) from error
