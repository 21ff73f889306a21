"""Writing a day's Arrow record batches as one zstd Parquet file, and describing a written file."""

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # loaded when used: pyarrow would add a second to a code server's start
    import pyarrow as pa


@dataclass(frozen=True)
class ParquetFileInfo:
    """What the manifest says about a written file."""

    rows: int
    bytes: int
    row_groups: int
    checksum: dict[str, str]
    schema: list[dict[str, Any]]


def schema_description(schema: "pa.Schema") -> list[dict[str, Any]]:
    return [{"name": f.name, "type": str(f.type), "nullable": f.nullable} for f in schema]


def fixed_size_row_groups(batches: "Iterator[pa.RecordBatch]", rows_per_group: int) -> "Iterator[pa.Table]":
    """Regroup record batches into tables of exactly ``rows_per_group`` rows (the last may be shorter).

    Row groups then do not depend on how ClickHouse happened to cut its blocks, so the same rows always
    give the same file; memory holds at most one row group plus one batch.
    """
    import pyarrow as pa

    pending: list[pa.RecordBatch] = []
    pending_rows = 0
    for batch in batches:
        if batch.num_rows == 0:
            continue
        pending.append(batch)
        pending_rows += batch.num_rows
        while pending_rows >= rows_per_group:
            table = pa.Table.from_batches(pending)
            yield table.slice(0, rows_per_group)
            rest = table.slice(rows_per_group)
            pending, pending_rows = rest.to_batches(), rest.num_rows
    if pending_rows:
        yield pa.Table.from_batches(pending)


def write_parquet(
    batches: "Iterator[pa.RecordBatch]", path: Path, rows_per_group: int, empty_schema: "Callable[[], pa.Schema]"
) -> None:
    """Write the batches as one zstd Parquet file at ``path``; a day without rows still gets a file.

    ``empty_schema`` gives the columns when the stream has no batch at all.
    """
    import pyarrow.parquet as pq

    writer: pq.ParquetWriter | None = None
    try:
        for group in fixed_size_row_groups(batches, rows_per_group):
            if writer is None:
                writer = pq.ParquetWriter(path, group.schema, compression="zstd")
            # One contiguous chunk per column: page boundaries then depend on the rows alone, not on where
            # ClickHouse's blocks happened to end, so the same rows always give the same bytes.
            writer.write_table(group.combine_chunks(), row_group_size=rows_per_group)
        if writer is None:
            writer = pq.ParquetWriter(path, empty_schema(), compression="zstd")
    finally:
        if writer is not None:
            writer.close()


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def describe_parquet_file(path: Path) -> ParquetFileInfo:
    import pyarrow.parquet as pq

    metadata = pq.read_metadata(path)
    return ParquetFileInfo(
        rows=metadata.num_rows,
        bytes=path.stat().st_size,
        row_groups=metadata.num_row_groups,
        checksum={"algorithm": "sha256", "value": sha256_of(path)},
        schema=schema_description(metadata.schema.to_arrow_schema()),
    )


def describe_parquet_footer(footer: bytes, size: int, checksum: dict[str, str]) -> ParquetFileInfo:
    """Describe a remote Parquet file from its footer alone (the last bytes: metadata, length, ``PAR1``)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    metadata = pq.read_metadata(pa.BufferReader(b"PAR1" + footer))
    return ParquetFileInfo(
        rows=metadata.num_rows,
        bytes=size,
        row_groups=metadata.num_row_groups,
        checksum=checksum,
        schema=schema_description(metadata.schema.to_arrow_schema()),
    )
