"""The benchmarks (``python -m bench``) still run: every one once, on tiny data. No speed is asserted."""

import re
import subprocess
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
RESULTS_FILE = PROJECT_ROOT / "bench" / "RESULTS.md"

EXPECTED_ROWS = [
    "code location load",
    "cost per day, default schedules, no batch exports",
    "cost per day, with the example batch exports",
    *[
        row.format(engine=engine)
        for engine in ("embedded", "server")
        for row in (
            "3-day pre-aggregate backfill, 3,000 events, {engine}: Dagster, 1 run of 3 partitions",
            "3-day pre-aggregate backfill, 3,000 events, {engine}: Dagster, 3 runs of 1 partition",
            "fixed cost per run, {engine}: a one-day web analytics run",
            "fixed cost per run, {engine}: the same one-day web analytics run, against Dagster's floor for its shape",
        )
    ],
    *[f"export of 1 day, {size}, embedded: Arrow stream vs {other}" for size in ("1x (1,044 rows)", "4x (4,000 rows)")
      for other in ("JSON+pandas", "ClickHouse's writer")],
    "export peak memory, embedded, Arrow stream (events_export), 4x vs 1x the rows",
    "export peak memory, embedded, ClickHouse Parquet writer, 4x vs 1x the rows",
    *[f"export of 1 day, {size}, server over {protocol}: Arrow stream vs {other}"
      for size in ("1x (1,044 rows)", "4x (4,000 rows)") for protocol in ("HTTP", "native")
      for other in ("JSON+pandas", "ClickHouse's writer")],
    "export peak memory, server, Arrow stream (events_export) over HTTP, 4x vs 1x the rows",
    "export peak memory, server, Arrow stream (events_export) over native, 4x vs 1x the rows",
    "export peak memory, server, the server's own Parquet writer, 4x vs 1x the rows",
    "deleting one person (",
    "squashing overrides for 1% of the distinct ids (",
    "last 20 days of the ECB history in one run",
    "last 20 days of the ECB history in one run",
    "last 20 days of the ECB history in one run",
]  # fmt: skip


def test_every_benchmark_runs_and_prints_its_table() -> None:
    results_before = RESULTS_FILE.read_bytes() if RESULTS_FILE.exists() else None

    completed = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )

    assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-4000:]
    lines = completed.stdout.splitlines()
    assert lines[:2] == ["| benchmark | measured | baseline | ratio | target | met |", "|---|---|---|---|---|---|"]
    table = lines[2 : lines.index("")]  # the summary table ends at the first blank line; details follow
    rows = [line.split(" | ") for line in table]
    for expected, row in zip(EXPECTED_ROWS, rows, strict=True):
        benchmark, measured, baseline, ratio = row[:4]
        assert benchmark.removeprefix("| ").startswith(expected), row
        assert re.search(r"\d", measured) and re.search(r"\d", baseline), row  # figures on both sides
        assert re.fullmatch(r"\d+\.\d\dx", ratio), row
    assert "Export of one day of `events` from the embedded engine" in completed.stdout  # per method and size
    assert "Export of one day of `events` from the bench's server" in completed.stdout
    assert "Bytes the server sent per row" in completed.stdout
    # A smoke run leaves the results of the last real run alone.
    assert (RESULTS_FILE.read_bytes() if RESULTS_FILE.exists() else None) == results_before
