"""The ways into ClickHouse through clickhouse-connect: a server over HTTP, and the embedded engine (chDB)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from dags.clickhouse.url import quote_identifier

if TYPE_CHECKING:  # pandas and pyarrow load only when used: they would double a code server's start time
    import pandas as pd
    import pyarrow as pa


class ConnectBackend:
    """clickhouse-connect: the embedded engine (`chdb://`) and servers over HTTP."""

    def __init__(self, client: Any):
        self.client = client

    def command(self, sql: str, parameters: Mapping[str, Any] | None, settings: dict[str, Any]) -> Any:
        return self.client.command(sql, parameters=parameters, settings=settings)

    def query_arrow(self, sql: str, parameters: Mapping[str, Any] | None, settings: dict[str, Any]) -> pa.Table:
        return self.client.query_arrow(sql, parameters=parameters, settings=settings)

    @contextmanager
    def query_arrow_stream(
        self, sql: str, parameters: Mapping[str, Any] | None, settings: dict[str, Any]
    ) -> Iterator[Iterator[pa.RecordBatch]]:
        with self.client.query_arrow_stream(sql, parameters=parameters, settings=settings) as stream:
            yield iter(stream)

    def insert_arrow(self, table: str, data: pa.Table, settings: dict[str, Any]) -> int:
        self.client.insert_arrow(table, data, settings=settings)
        return data.num_rows

    def insert_df(self, table: str, data: pd.DataFrame, settings: dict[str, Any]) -> int:
        self.client.insert_df(table, data, settings=settings)
        return len(data)

    def close(self) -> None:
        self.client.close()


STREAM_BATCH_ROWS = 65_536


class EmbeddedBackend(ConnectBackend):
    """The embedded engine through clickhouse-connect, with a truly streamed Arrow path.

    clickhouse-connect's chDB backend reads a whole `ArrowStream` result (and any query with per-call
    settings) into memory before returning it. Streams therefore use a dedicated chDB handle on the same
    engine: settings go in with `SET` on that handle, and the engine's Arrow blocks are yielded as it
    produces them, so memory stays flat however large the result.
    """

    def __init__(self, client: Any, data_path: str, database: str | None, resource_settings: dict[str, Any]):
        super().__init__(client)
        self.data_path = data_path
        self.database = database
        self.resource_settings = resource_settings  # the client has them; the stream's own handle needs them too

    def command(self, sql: str, parameters: Mapping[str, Any] | None, settings: dict[str, Any]) -> Any:
        with self._settings_of_one_call(settings):
            return super().command(sql, parameters, {})

    def query_arrow(self, sql: str, parameters: Mapping[str, Any] | None, settings: dict[str, Any]) -> pa.Table:
        with self._settings_of_one_call(settings):
            return super().query_arrow(sql, parameters, {})

    def insert_arrow(self, table: str, data: pa.Table, settings: dict[str, Any]) -> int:
        with self._settings_of_one_call(settings):
            return super().insert_arrow(table, data, {})

    def insert_df(self, table: str, data: pd.DataFrame, settings: dict[str, Any]) -> int:
        with self._settings_of_one_call(settings):
            return super().insert_df(table, data, {})

    @contextmanager
    def _settings_of_one_call(self, settings: dict[str, Any]) -> Iterator[None]:
        """Apply a call's settings to the engine session for that call only.

        Given settings, clickhouse-connect first reads each one's current value from `system.settings` so it
        can restore it afterwards: 4 ms a statement, most of what a small statement costs. The session's values
        are known here (the resource's own settings, else the defaults), so they are restored without asking.
        """
        settings, _ = without_query_id(settings)
        applied: list[str] = []
        try:
            for name, value in settings.items():
                self.client.command(f"SET {quote_identifier(name)} = {setting_literal(value)}")
                applied.append(name)
            yield
        finally:
            for name in applied:
                value = self.resource_settings.get(name)
                restored = "DEFAULT" if value is None else setting_literal(value)
                self.client.command(f"SET {quote_identifier(name)} = {restored}")

    @contextmanager
    def query_arrow_stream(
        self, sql: str, parameters: Mapping[str, Any] | None, settings: dict[str, Any]
    ) -> Iterator[Iterator[pa.RecordBatch]]:
        import chdb
        from clickhouse_connect.driver.binding import bind_query

        query, bound = bind_query(sql, dict(parameters) if parameters else None)
        # The engine assigns its own ids (log_comment names ours).
        settings, _ = without_query_id({**self.resource_settings, **settings})
        handle = chdb.connect(self.data_path)
        stream = None
        try:
            if self.database:
                handle.query(f"USE {quote_identifier(self.database)}")
            for name, value in settings.items():
                handle.query(f"SET {quote_identifier(name)} = {setting_literal(value)}")
            params = {key.removeprefix("param_"): value for key, value in bound.items()}
            if "max_block_size" not in settings:
                handle.query(f"SET max_block_size = {STREAM_BATCH_ROWS}")
            # The blocks stay in this process: compressing them (the Arrow format's default, LZ4) only for
            # pyarrow to decompress them again was wasted work (with the copy below, fetching the 16x bench day
            # took 2.2 s against 1.6 s now).
            handle.query("SET output_format_arrow_compression_method = 'none'")
            stream = handle.send_query(query, "Arrow", params=params)
            yield _record_batches(stream)
        finally:
            if stream is not None:
                stream.close()
            handle.close()


def _record_batches(stream: Any) -> Iterator[pa.RecordBatch]:
    """The engine's blocks as they come: each chunk of the stream is an Arrow IPC file of one block
    (`max_block_size` rows at most), read in place, without a copy. chDB's own record-batch reader copies
    every chunk again and concatenates chunks into larger batches, which cost about a third of the stream's
    time; copying each chunk into `bytes` cost a fifth."""
    import pyarrow as pa

    while (chunk := stream.fetch()) is not None:
        size = chunk.size()
        if not size:
            continue
        view = chunk.get_memview()
        address = pa.py_buffer(view.view()).address
        # The batches point into the engine's chunk: the buffer keeps the chunk (and its view) alive.
        data = pa.foreign_buffer(address, size, base=(chunk, view))
        reader = pa.ipc.open_file(data)
        for index in range(reader.num_record_batches):
            yield reader.get_batch(index)


def setting_literal(value: Any) -> str:
    """A setting's value as a SQL literal for `SET` (numbers bare, anything else a quoted string)."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int | float):
        return str(value)
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


def without_query_id(settings: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    settings = dict(settings)
    return settings, settings.pop("query_id", None)
