"""The native protocol (port 9000) through clickhouse-driver, for clusters that expose only it."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING, Any

from dags.clickhouse.backends import without_query_id
from dags.clickhouse.url import quote_identifier

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

# Settings of clickhouse-driver itself (it takes them out of `settings` before talking to the server).
# Without `server_side_params` the driver formats values into the text with `%` and leaves the
# project's `{day:Date}` placeholders unfilled; with it, the values travel beside the query and the
# server binds them, as it does over HTTP.
DRIVER_SETTINGS: dict[str, Any] = {
    "server_side_params": True,
    "use_numpy": False,  # rows and inserts as Python values; Arrow reads turn it on for themselves (`_read`)
    "insert_block_size": 100_000,  # rows per block an insert is sent in
}

# How long a stream left early may take to confirm its cancel before its connection is dropped (which the server
# also takes as a cancel).
CANCEL_SECONDS = 10.0

# Placeholders the server binds: {name:Type}. String literals and quoted names are matched first so that
# braces inside them are left alone.
_LITERAL_OR_PLACEHOLDER = re.compile(r"'(?:\\.|[^'\\])*'|`(?:\\.|[^`\\])*`|\{(\w+):\s*([^{}]+?)\s*\}")


class NativeBackend:
    """clickhouse-driver over the native protocol (port 9000), for clusters that expose only it.

    Queries bind their values on the server (`server_side_params`) and read results as Arrow record
    batches, one per block the server sends; inserts send columns, in blocks of `insert_block_size` rows.
    """

    def __init__(self, client: Any, connect: Callable[[], Any]):
        from clickhouse_driver.columns.boolcolumn import BoolColumn

        # The server sends a mostly-false Bool column sparse (only its true rows); clickhouse-driver 0.2.11 fills
        # the other rows with its generic default, the integer 0, which Arrow refuses in a boolean array.
        BoolColumn.null_value = False
        _read_sparse_numpy_columns_as_arrays()
        self.client = client
        self._connect = connect  # a new client on the same server, for a stream
        self._binds: bool | None = None

    @property
    def server_binds_parameters(self) -> bool:
        """Whether the server takes values beside the query (ClickHouse 22.8 and later over this protocol)."""
        from clickhouse_driver import defines

        if self._binds is None:
            connection = self.client.connection
            if not connection.connected or connection.server_info is None:
                # Through a statement: the driver's own connect marks the connection busy until a query ends it.
                self.client.execute("SELECT 1")
            revision = self.client.connection.server_info.used_revision
            self._binds = revision >= defines.DBMS_MIN_PROTOCOL_VERSION_WITH_PARAMETERS
        return self._binds

    def _bind(self, sql: str, parameters: Mapping[str, Any] | None) -> tuple[str, dict[str, Any] | None]:
        if not parameters:
            return sql, None
        if self.server_binds_parameters:
            return sql, dict(parameters)
        return self._render_for_old_server(sql, parameters), None

    def _render_for_old_server(self, sql: str, parameters: Mapping[str, Any]) -> str:
        """The statement with its values as typed literals, for servers too old to bind them (before 22.8).

        Values are escaped by clickhouse-driver, the way it formats them when it binds on the client.
        """
        from clickhouse_driver.util.escape import escape_param

        context = self.client.connection.context

        def literal(match: re.Match[str]) -> str:
            name, type_ = match.group(1), match.group(2)
            if name is None:
                return match.group(0)  # a string literal or a quoted name
            if name not in parameters:
                raise KeyError(f"No value for the query parameter {name!r}")
            value = parameters[name]
            if type_ == "Identifier":
                return quote_identifier(str(value))
            return f"CAST({escape_param(value, context)} AS {type_})"

        return _LITERAL_OR_PLACEHOLDER.sub(literal, sql)

    def command(self, sql: str, parameters: Mapping[str, Any] | None, settings: dict[str, Any]) -> Any:
        settings, query_id = without_query_id(settings)
        query, params = self._bind(sql, parameters)
        rows = self.client.execute(query, params, settings=settings, query_id=query_id)
        if isinstance(rows, list) and len(rows) == 1 and len(rows[0]) == 1:
            return rows[0][0]
        return rows

    def query_arrow(self, sql: str, parameters: Mapping[str, Any] | None, settings: dict[str, Any]) -> pa.Table:
        import pyarrow as pa

        batches = self._read(self.client, sql, parameters, settings)
        return pa.Table.from_batches(list(batches), schema=batches.schema)

    @contextmanager
    def query_arrow_stream(
        self, sql: str, parameters: Mapping[str, Any] | None, settings: dict[str, Any]
    ) -> Iterator[Iterator[pa.RecordBatch]]:
        """A stream on a connection of its own: the client's connection stays free for other statements while
        the stream is open, and a stream left early is cancelled on the server when it closes."""
        connection = self._connect()
        batches = None
        try:
            batches = self._read(connection, sql, parameters, settings)
            yield batches
        finally:
            try:
                if batches is not None and not batches.ended:
                    with suppress(Exception):  # the connection is dropped next, which the server takes as a cancel
                        _cancel(connection)
            finally:
                connection.disconnect()

    def _read(self, client: Any, sql: str, parameters: Mapping[str, Any] | None, settings: dict[str, Any]) -> _Batches:
        from dags.clickhouse.arrow_types import server_schema

        settings, query_id = without_query_id(settings)
        query, params = self._bind(sql, parameters)
        # One record batch per block the server sends, built column by column by the driver, then cast to the
        # types ClickHouse's own Arrow format gives (those of HTTP and the embedded engine). `use_numpy` for this
        # query only: the driver then reads columns into NumPy buffers Arrow takes as they are, instead of a
        # Python object per value (6 to 8 times faster on an export's day; `bench/RESULTS.md`).
        settings = {**settings, "use_numpy": True}
        reader = client.query_arrow_stream(query, params, settings=settings, query_id=query_id, field_metadata=True)
        return _Batches(reader, server_schema(reader.schema), client)

    def insert_arrow(self, table: str, data: pa.Table, settings: dict[str, Any]) -> int:
        settings, query_id = without_query_id(settings)
        columns = ", ".join(quote_identifier(name) for name in data.column_names)
        sql = f"INSERT INTO {table} ({columns}) VALUES"
        if data.num_rows == 0:
            return 0
        # Columns, not rows: the driver sends them in blocks of insert_block_size rows.
        data_columns = [column.to_pylist() for column in data.columns]
        self.client.execute(sql, data_columns, settings=settings, query_id=query_id, columnar=True)
        return data.num_rows

    def insert_df(self, table: str, data: pd.DataFrame, settings: dict[str, Any]) -> int:
        import pyarrow as pa

        return self.insert_arrow(table, pa.Table.from_pandas(data, preserve_index=False), settings)

    def close(self) -> None:
        self.client.disconnect()


class _Batches:
    """The driver's record batches cast to `schema`; `ended` once the server has sent the whole result
    (or an error: the query is over either way)."""

    def __init__(self, reader: Any, schema: pa.Schema, client: Any):
        self.reader = reader
        self.schema = schema
        self.client = client
        self.ended = False

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        from dags.clickhouse.arrow_types import conform

        try:
            for batch in self.reader:
                yield conform(batch, self.schema)
        except BaseException:
            self.ended = True
            # The driver would cancel this stream before the client's next statement and wait for an end the
            # server already sent (the error was it): the next statement then hangs. A new connection instead.
            self.client._pending_arrow_stream = None
            self.client.disconnect()
            raise
        self.ended = True


def _read_sparse_numpy_columns_as_arrays() -> None:
    """Make clickhouse-driver 0.2.11 rebuild a sparse column read into a NumPy array (as Arrow reads do, with
    `use_numpy`) as an array of the same type, zeros where the server sent nothing.

    The server sends a column of mostly default values sparse: only its other rows, and their positions. The
    driver fills the gaps with the column class's Python default (the integer 0, `np.datetime64(0, 'Y')`) in a
    list, which Arrow refuses for Bool, Date and DateTime columns. A type's default in ClickHouse is all zero
    bits (0, false, 1970-01-01), so a zeroed array of the read values' own type is that default. Columns read
    as Python objects (strings, UUIDs) keep the driver's own way, which is right for them.
    """
    import numpy as np
    from clickhouse_driver.columns.base import SparseSerialization

    if getattr(SparseSerialization.apply_sparse, "keeps_numpy_arrays", False):
        return
    apply_as_list = SparseSerialization.apply_sparse

    def apply_sparse(self: Any, items: Any) -> Any:
        if not isinstance(items, np.ndarray) or items.dtype == object or isinstance(items, np.ma.MaskedArray):
            return apply_as_list(self, items)
        rebuilt = np.zeros(self.items_total - 1, dtype=items.dtype)
        rebuilt[np.asarray(self.sparse_indexes, dtype=np.int64) - 1] = items
        return rebuilt

    apply_sparse.keeps_numpy_arrays = True  # type: ignore[attr-defined]
    SparseSerialization.apply_sparse = apply_sparse
    # The driver reads UUID, Array, Map, Decimal columns as Python objects under `use_numpy`, and warns about
    # it at every query; that is the intended way for them here, not something to fix.
    logging.getLogger("clickhouse_driver.columns.service").addFilter(
        lambda record: not record.getMessage().startswith("NumPy support is not implemented")
    )


def _cancel(client: Any) -> None:
    """Cancel the query running on `client`'s connection and read what the server still sends until it
    confirms the end (bounded by `CANCEL_SECONDS`); the connection is closed after this either way."""
    from clickhouse_driver.protocol import ServerPacketTypes

    connection = client.connection
    if not connection.connected:
        return
    connection.send_cancel()
    if connection.socket is not None:
        connection.socket.settimeout(CANCEL_SECONDS)
    while True:
        packet = connection.receive_packet()
        if packet is None or packet.type in (ServerPacketTypes.END_OF_STREAM, ServerPacketTypes.EXCEPTION):
            return
