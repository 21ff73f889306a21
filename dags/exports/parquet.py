"""Writing a day's Arrow record batches as one zstd Parquet file, and describing a written file."""

import hashlib
from collections.abc import Callable, Collection, Iterator
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


def write_parquet(
    row_groups: "Iterator[pa.RecordBatch]",
    path: Path,
    empty_schema: "Callable[[], pa.Schema]",
    unique_valued_columns: Collection[str] = (),
) -> None:
    """Write each batch as one row group of a zstd Parquet file at `path`; a day without rows still gets a file.

    The batches come with contiguous columns and a fixed number of rows (`query_arrow_stream(batch_rows=...)`):
    page boundaries then depend on the rows alone, so the same rows always give the same bytes.
    `empty_schema` gives the columns when the stream has no batch at all; `unique_valued_columns` are
    written without a dictionary.
    """
    import pyarrow.parquet as pq

    def open_writer(schema: "pa.Schema") -> pq.ParquetWriter:
        dictionary = [name for name in schema.names if name not in unique_valued_columns]
        return pq.ParquetWriter(path, schema, compression="zstd", use_dictionary=dictionary)

    writer: pq.ParquetWriter | None = None
    try:
        for group in row_groups:
            if writer is None:
                writer = open_writer(group.schema)
            writer.write_batch(group, row_group_size=group.num_rows)
        if writer is None:
            writer = open_writer(empty_schema())
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
    """Describe a remote Parquet file from its footer alone (the last bytes: metadata, length, `PAR1`)."""
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
