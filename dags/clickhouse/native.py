"""The native protocol (port 9000) through clickhouse-driver, for clusters that expose only it."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from dags.clickhouse.backends import without_query_id

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa


class NativeBackend:
    """clickhouse-driver over the native protocol (port 9000), for clusters that expose only it."""

    def __init__(self, client: Any):
        self.client = client

    def _execute(self, sql: str, parameters: Mapping[str, Any] | None, settings: dict[str, Any], **kwargs: Any):
        settings, query_id = without_query_id(settings)
        return self.client.execute(
            sql, dict(parameters) if parameters else None, settings=settings, query_id=query_id, **kwargs
        )

    def command(self, sql: str, parameters: Mapping[str, Any] | None, settings: dict[str, Any]) -> Any:
        rows = self._execute(sql, parameters, settings)
        if isinstance(rows, list) and len(rows) == 1 and len(rows[0]) == 1:
            return rows[0][0]
        return rows

    def query_arrow(self, sql: str, parameters: Mapping[str, Any] | None, settings: dict[str, Any]) -> pa.Table:
        import pyarrow as pa

        with self.query_arrow_stream(sql, parameters, settings) as batches:
            batch_list = list(batches)
        if not batch_list:
            return pa.table({})
        return pa.Table.from_batches(batch_list)

    @contextmanager
    def query_arrow_stream(
        self, sql: str, parameters: Mapping[str, Any] | None, settings: dict[str, Any]
    ) -> Iterator[Iterator[pa.RecordBatch]]:
        settings, query_id = without_query_id(settings)
        rows = self.client.execute_iter(
            sql, dict(parameters) if parameters else None, settings=settings, query_id=query_id, with_column_types=True
        )

        def batches(batch_rows: int = 65_536) -> Iterator[pa.RecordBatch]:
            import pyarrow as pa

            names: list[str] | None = None
            chunk: list[tuple] = []
            for item in rows:
                if names is None:  # execute_iter yields the column names and types first
                    names = [name for name, _ in item]
                    continue
                chunk.append(item)
                if len(chunk) >= batch_rows:
                    yield pa.RecordBatch.from_pylist([dict(zip(names, row, strict=True)) for row in chunk])
                    chunk = []
            if chunk and names is not None:
                yield pa.RecordBatch.from_pylist([dict(zip(names, row, strict=True)) for row in chunk])

        yield batches()

    def insert_arrow(self, table: str, data: pa.Table, settings: dict[str, Any]) -> int:
        columns = ", ".join(f"`{name}`" for name in data.column_names)
        self.client.execute(f"INSERT INTO {table} ({columns}) VALUES", data.to_pylist(), settings=settings)
        return data.num_rows

    def insert_df(self, table: str, data: pd.DataFrame, settings: dict[str, Any]) -> int:
        import pyarrow as pa

        return self.insert_arrow(table, pa.Table.from_pandas(data, preserve_index=False), settings)

    def close(self) -> None:
        self.client.disconnect()
