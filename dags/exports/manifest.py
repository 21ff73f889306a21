"""The manifest written beside each day's file: rows, bytes, checksum, schema and the run that wrote it."""

import json
from datetime import date, datetime

from dags.exports.parquet import ParquetFileInfo

DATA_FILE = "data.parquet"
MANIFEST_FILE = "_manifest.json"
MANIFEST_VERSION = 1


def manifest_json(
    *,
    dataset: str,
    day: date,
    info: ParquetFileInfo,
    run_id: str,
    write_method: str,
    exported_at: datetime,
    hour: int | None = None,
) -> bytes:
    """The manifest of one interval's file; `hour` only for an hourly interval (`hour=HH` folders)."""
    manifest = {
        "manifest_version": MANIFEST_VERSION,
        "dataset": dataset,
        "date": day.isoformat(),
        **({"hour": hour} if hour is not None else {}),
        "file": DATA_FILE,
        "format": "parquet",
        "compression": "zstd",
        "rows": info.rows,
        "bytes": info.bytes,
        "row_groups": info.row_groups,
        "checksum": info.checksum,
        "schema": info.schema,
        "run_id": run_id,
        "write_method": write_method,
        "exported_at": exported_at.isoformat(),
    }
    return (json.dumps(manifest, indent=2) + "\n").encode()
