"""The native protocol (port 9000) through clickhouse-driver, for clusters that expose only it."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from dags.clickhouse.backends import without_query_id
from dags.clickhouse.url import quote_identifier

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

# Settings of clickhouse-driver itself (it takes them out of ``settings`` before talking to the server).
# Without ``server_side_params`` the driver formats values into the text with ``%`` and leaves the
# project's ``{day:Date}`` placeholders unfilled; with it, the values travel beside the query and the
# server binds them, as it does over HTTP.
DRIVER_SETTINGS: dict[str, Any] = {
    "server_side_params": True,
    "use_numpy": False,  # results come out as Arrow through the driver's own columnar reader
    "insert_block_size": 100_000,  # rows per block an insert is sent in
}

# Placeholders the server binds: {name:Type}. String literals and quoted names are matched first so that
# braces inside them are left alone.
_LITERAL_OR_PLACEHOLDER = re.compile(r"'(?:\\.|[^'\\])*'|`(?:\\.|[^`\\])*`|\{(\w+):\s*([^{}]+?)\s*\}")


class NativeBackend:
    """clickhouse-driver over the native protocol (port 9000), for clusters that expose only it.

    Queries bind their values on the server (``server_side_params``) and read results as Arrow record
    batches, one per block the server sends; inserts send columns, in blocks of ``insert_block_size`` rows.
    """

    def __init__(self, client: Any):
        self.client = client

    @property
    def server_binds_parameters(self) -> bool:
        """Whether the server takes values beside the query (ClickHouse 22.8 and later over this protocol)."""
        from clickhouse_driver import defines

        connection = self.client.connection
        if not connection.connected:
            connection.force_connect()
        return connection.server_info.used_revision >= defines.DBMS_MIN_PROTOCOL_VERSION_WITH_PARAMETERS

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
        with self.query_arrow_stream(sql, parameters, settings) as batches:
            import pyarrow as pa

            reader_schema = getattr(batches, "schema", None)
            batch_list = list(batches)
        if not batch_list:
            return reader_schema.empty_table() if reader_schema is not None else pa.table({})
        return pa.Table.from_batches(batch_list)

    @contextmanager
    def query_arrow_stream(
        self, sql: str, parameters: Mapping[str, Any] | None, settings: dict[str, Any]
    ) -> Iterator[Iterator[pa.RecordBatch]]:
        settings, query_id = without_query_id(settings)
        query, params = self._bind(sql, parameters)
        # One record batch per block the server sends, built column by column by the driver.
        reader = self.client.query_arrow_stream(
            query, params, settings=settings, query_id=query_id, field_metadata=False
        )
        yield _BatchIterator(reader)

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


class _BatchIterator:
    """The driver's record batch reader as an iterator of batches that still knows the result's schema."""

    def __init__(self, reader: Any):
        self.reader = reader
        self.schema = reader.schema

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        return iter(self.reader)
