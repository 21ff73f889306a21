"""One day's events to a local Parquet file three ways, at 1x, 4x and 16x a day's size.

- **Arrow stream** (what `events_export` does): `dags.exports.publish.export_day` to a local folder, the real code
  path: Arrow record batches from ClickHouse, in the table's order, into a zstd Parquet writer, then fsync,
  checksum, rename and manifest.
- **ClickHouse's own writer** (the limit): `INSERT INTO FUNCTION file(..., 'Parquet')` with the same SELECT,
  compression and row group size; no data passes through Python.
- **JSONEachRow through pandas** (the naive baseline, what exports did before): the day as JSONEachRow,
  `pandas.read_json(lines=True)`, `DataFrame.to_parquet`.

On the bench's server the Arrow stream runs twice, over HTTP and over the native protocol, against the server
writing the same Parquet itself (`INSERT INTO FUNCTION file(...)` on the same disk) and JSONEachRow fetched
over HTTP into pandas. What crosses the wire is the server's own count of the bytes it sent for the export's
queries (`ProfileEvents['NetworkSendBytes']` in `system.query_log`, after any compression); `wire_bytes`
measures it per row for each protocol and compression.

Every measurement runs in a fresh process; its peak resident memory (the embedded engine runs in-process,
so the engine's buffers count) is read with `wait4` when it exits. Rows per second time the export only,
after the engine is open.
"""

import statistics
from datetime import date
from pathlib import Path
from typing import Any

from bench.common import (
    EMBEDDED,
    Engine,
    Row,
    Section,
    Workspace,
    call_in_worker,
    megabytes,
    per_second,
    worker_clickhouse,
)
from bench.dataset import Dataset

METHODS = {
    "arrow": "Arrow stream (events_export)",
    "engine": "ClickHouse Parquet writer",
    "pandas": "JSONEachRow + pandas",
}
# On the server, the stream is measured over each protocol (the worker's CLICKHOUSE_URL).
SERVER_METHODS = {
    "arrow": "Arrow stream (events_export) over HTTP",
    "arrow_native": "Arrow stream (events_export) over native",
    "engine": "the server's own Parquet writer",
    "pandas": "JSONEachRow over HTTP + pandas",
}
# The compression settings whose wire bytes are measured over HTTP: the Arrow format's own (the server's
# `output_format_arrow_compression_method`, lz4_frame unless set). The first is what the project uses. (HTTP's
# own response compression, clickhouse-connect's `compress` with `enable_http_compression`, changed no byte of
# an Arrow stream's NetworkSendBytes here: left out.)
HTTP_COMPRESSIONS = {
    "Arrow lz4_frame (the default)": ("lz4_frame", True),
    "Arrow zstd": ("zstd", False),
    "none": ("none", False),
}
TARGET_VS_PANDAS = 10.0
TARGET_VS_ENGINE = 1.2
# Peak memory counts as flat when 16 times the rows take at most this much more.
TARGET_MEMORY_GROWTH = 1.25
ROW_GROUP_ROWS = 100_000
# The naive baseline keeps the whole day in memory several times over: it is not run at a size whose projected
# peak would take more than this share of the machine's available memory (the machine is shared).
PANDAS_MEMORY_SHARE = 0.5


def export_once(method: str, day: str, folder: str, server_http_url: str | None = None) -> dict[str, Any]:
    """Worker: export `day` of `events` with `method` into `folder`; rows, bytes and seconds."""
    import resource
    import time
    import uuid

    import chdb

    clickhouse = worker_clickhouse()
    data_path = clickhouse.target.data_path
    # Every method opens its own connection; this one keeps the engine running meanwhile, so that the clock
    # measures the export, not the engine's start (which a closed last connection would make each open pay).
    keep_running = chdb.connect(data_path) if data_path else None
    if keep_running is not None:
        keep_running.query("SELECT count() FROM events")
    # Libraries load before the clock too: a run exporting several days loads them once.
    import clickhouse_connect  # noqa: F401
    import pyarrow.parquet  # noqa: F401

    if method == "pandas":
        import pandas  # noqa: F401
    with clickhouse.get_client() as client:
        client.command("SELECT 1")
    ready_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    Path(folder).mkdir(parents=True, exist_ok=True)
    query_log = ServerQueryLog(server_http_url) if server_http_url else None
    since = query_log.now() if query_log else None
    started = time.perf_counter()
    if method in ("arrow", "arrow_native"):
        rows, size = _export_arrow(clickhouse, date.fromisoformat(day), str(uuid.uuid4()))
    elif method == "engine":
        rows, size = _export_engine(clickhouse, date.fromisoformat(day), Path(folder) / f"{day}.parquet")
    else:
        url = f"chdb://{data_path}" if data_path else clickhouse.url
        rows, size = _export_pandas(url, date.fromisoformat(day), Path(folder) / f"{day}.parquet")
    elapsed = time.perf_counter() - started
    sent = query_log.bytes_sent_since(since) if query_log and since is not None else None
    if query_log is not None:
        query_log.close()
    if keep_running is not None:
        keep_running.close()
    return {"rows": rows, "bytes": size, "seconds": elapsed, "ready_rss": ready_rss, "bytes_sent": sent}


class ServerQueryLog:
    """What the server sent for this worker's queries, from its own query log; one client for the worker."""

    def __init__(self, http_url: str) -> None:
        import clickhouse_connect

        self.client = clickhouse_connect.get_client(dsn=http_url)

    def now(self) -> str:
        """The server's clock now (microseconds), to find the queries that follow in its query log."""
        return str(self.client.command("SELECT toString(now64(6))"))

    def bytes_sent_since(self, since: str) -> int:
        """What the server sent to clients for the SELECTs from `events` since `since` (the log's own queries
        read `system.query_log`, not `events`, so they are not counted)."""
        self.client.command("SYSTEM FLUSH LOGS")
        return int(
            self.client.command(
                "SELECT sum(ProfileEvents['NetworkSendBytes']) FROM system.query_log "
                "WHERE type = 'QueryFinish' AND event_time_microseconds >= {since:DateTime64(6)} "
                "AND query_kind = 'Select' AND has(tables, currentDatabase() || '.events')",
                parameters={"since": since},
            )
            or 0
        )

    def close(self) -> None:
        self.client.close()


def _export_arrow(clickhouse: Any, day: date, run_id: str) -> tuple[int, int]:
    from dags.exports.datasets import EVENTS_DATASET
    from dags.exports.publish import export_day
    from dags.exports.resource import export_destination_from_env

    export_destination = export_destination_from_env()  # DEBUG=1: the folder under this run's DAGSTER_HOME
    destination = export_destination.open()
    destination.check_access()
    done = export_day(clickhouse.get_client, export_destination, destination, EVENTS_DATASET, day, run_id)
    return done.info.rows, done.info.bytes


def _export_engine(clickhouse: Any, day: date, path: Path) -> tuple[int, int]:
    import pyarrow.parquet as pq

    from dags.exports.datasets import EVENTS_DATASET, EVENTS_EXPORT_QUERY, ExportWindow

    with clickhouse.get_client() as client:
        client.command(
            "INSERT INTO FUNCTION file({path:String}, 'Parquet')\n" + EVENTS_EXPORT_QUERY,
            {"path": str(path), **EVENTS_DATASET.parameters(ExportWindow.of_day(day))},
            settings={
                "engine_file_truncate_on_insert": 1,
                "output_format_parquet_compression_method": "zstd",
                "output_format_parquet_row_group_size": ROW_GROUP_ROWS,
            },
        )
    return pq.read_metadata(path).num_rows, path.stat().st_size


def _export_pandas(url: str, day: date, path: Path) -> tuple[int, int]:
    import io

    import pandas as pd

    from dags.exports.datasets import EVENTS_DATASET, EVENTS_EXPORT_QUERY, ExportWindow

    parameters = EVENTS_DATASET.parameters(ExportWindow.of_day(day))
    if url.startswith("chdb:"):
        import chdb

        connection = chdb.connect(url.removeprefix("chdb://"))
        try:
            params = {name: str(value) if not isinstance(value, list) else value for name, value in parameters.items()}
            body = connection.query(EVENTS_EXPORT_QUERY, "JSONEachRow", params=params).bytes()
        finally:
            connection.close()
    else:
        import clickhouse_connect

        client = clickhouse_connect.get_client(dsn=url)
        try:
            body = client.raw_query(EVENTS_EXPORT_QUERY, parameters=parameters, fmt="JSONEachRow")
        finally:
            client.close()
    frame = pd.read_json(io.BytesIO(body), lines=True)
    frame.to_parquet(path, compression="zstd", index=False, row_group_size=ROW_GROUP_ROWS)
    return len(frame), path.stat().st_size


def _available_memory() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


def run(workspace: Workspace, dataset: Dataset, repeat: int, engines: tuple[Engine, ...] = (EMBEDDED,)) -> Section:
    sections = [_run_on(workspace, dataset, repeat, engine) for engine in engines]
    if any(engine.is_server for engine in engines):
        server = next(engine for engine in engines if engine.is_server)
        sections.append(_wire_section(workspace, dataset, server))
    return Section.joined(sections)


def _run_on(workspace: Workspace, dataset: Dataset, repeat: int, engine: Engine) -> Section:
    log = workspace.logs / f"exports-{engine.name}.log"
    methods_named = SERVER_METHODS if engine.is_server else METHODS
    results: dict[tuple[str, int], dict[str, float]] = {}
    skipped: dict[int, str] = {}
    for multiplier in dataset.export_multipliers:
        day = dataset.export_day(multiplier).isoformat()
        methods = list(methods_named)
        projected = _projected_pandas_peak(results, multiplier)
        if projected and projected > PANDAS_MEMORY_SHARE * _available_memory():
            methods.remove("pandas")
            skipped[multiplier] = f"not run: projected peak {megabytes(projected)}"
        runs: dict[str, list[dict[str, Any]]] = {method: [] for method in methods}
        for _ in range(repeat):
            for method in methods:  # in turns, so that noise hits every method alike
                folder = str(workspace.root / "exports" / engine.name / method)
                env = workspace.environment(engine, "native" if method == "arrow_native" else "HTTP")
                worker = call_in_worker(
                    "bench.exports:export_once",
                    env,
                    log,
                    method=method,
                    day=day,
                    folder=folder,
                    server_http_url=engine.url("HTTP"),
                )
                runs[method].append({**worker.value, "peak_rss": worker.peak_rss_bytes})
        for method, measurements in runs.items():
            results[(method, multiplier)] = {
                name: statistics.median(float(m[name]) for m in measurements)
                for name in ("rows", "bytes", "seconds", "ready_rss", "peak_rss")
            }
            if engine.is_server:
                results[(method, multiplier)]["bytes_sent"] = statistics.median(m["bytes_sent"] for m in measurements)
    return Section(
        _rows(dataset, results, skipped, engine), _detail(dataset, results, skipped, repeat, engine, methods_named)
    )


def _projected_pandas_peak(results: dict[tuple[str, int], dict[str, float]], multiplier: int) -> float | None:
    """The naive baseline's peak at `multiplier`, extrapolated from the largest size measured so far."""
    measured = [size for method, size in results if method == "pandas"]
    if not measured:
        return None
    largest = max(measured)
    result = results[("pandas", largest)]
    return result["ready_rss"] + (result["peak_rss"] - result["ready_rss"]) * multiplier / largest


def _rate(result: dict[str, float]) -> float:
    return result["rows"] / result["seconds"]


def _rows(
    dataset: Dataset, results: dict[tuple[str, int], dict[str, float]], skipped: dict[int, str], engine: Engine
) -> list[Row]:
    rows = []
    streams = {"arrow": "HTTP", "arrow_native": "native"} if engine.is_server else {"arrow": ""}
    for multiplier in dataset.export_multipliers:
        writer = results[("engine", multiplier)]
        for stream, protocol in streams.items():
            arrow = results[(stream, multiplier)]
            way = f"{engine.name}{' over ' + protocol if protocol else ''}"
            label = f"export of 1 day, {multiplier}x ({arrow['rows']:,.0f} rows), {way}"
            measured = f"{per_second(_rate(arrow))}, peak {megabytes(arrow['peak_rss'])}"
            if ("pandas", multiplier) in results:
                pandas = results[("pandas", multiplier)]
                ratio = _rate(arrow) / _rate(pandas)
                rows.append(
                    Row(
                        f"{label}: Arrow stream vs JSON+pandas",
                        measured,
                        f"JSONEachRow + pandas {per_second(_rate(pandas))}, peak {megabytes(pandas['peak_rss'])}",
                        ratio,
                        f">= {TARGET_VS_PANDAS:.0f}x rows/s",
                        ratio >= TARGET_VS_PANDAS,
                    )
                )
            else:
                rows.append(
                    Row(f"{label}: Arrow stream vs JSON+pandas", measured,
                        f"JSONEachRow + pandas {skipped[multiplier]}", None, f">= {TARGET_VS_PANDAS:.0f}x rows/s", None)
                )  # fmt: skip
            slower = _rate(writer) / _rate(arrow)
            rows.append(
                Row(
                    f"{label}: Arrow stream vs ClickHouse's writer",
                    measured,
                    f"ClickHouse Parquet writer {per_second(_rate(writer))}, peak {megabytes(writer['peak_rss'])}",
                    slower,
                    f"<= {TARGET_VS_ENGINE}x slower",
                    slower <= TARGET_VS_ENGINE,
                )
            )
    smallest, largest = min(dataset.export_multipliers), max(dataset.export_multipliers)
    if largest > smallest:
        # The engine's own writer measured the same way, for comparison: its target is not ours to meet.
        names = SERVER_METHODS if engine.is_server else METHODS
        for method in [*streams, "engine"]:
            target = method != "engine"
            small, big = results[(method, smallest)], results[(method, largest)]
            growth = big["peak_rss"] / small["peak_rss"]
            rows.append(
                Row(
                    f"export peak memory, {engine.name}, {names[method]}, {largest}x vs {smallest}x the rows",
                    megabytes(big["peak_rss"]),
                    megabytes(small["peak_rss"]),
                    growth,
                    f"<= {TARGET_MEMORY_GROWTH}x (flat)" if target else "(reported, for comparison)",
                    growth <= TARGET_MEMORY_GROWTH if target else None,
                )
            )
    return rows


def _detail(
    dataset: Dataset,
    results: dict[tuple[str, int], dict[str, float]],
    skipped: dict[int, str],
    repeat: int,
    engine: Engine,
    names: dict[str, str],
) -> str:
    where = "the embedded engine" if not engine.is_server else "the bench's server"
    lines = [
        f"Export of one day of `events` from {where} to a local zstd Parquet file (medians of {repeat} fresh "
        "processes each; peak = the process's peak resident memory, the embedded engine included when it is the "
        "engine; at start = after imports and connecting, before the export; sent = what the server sent for "
        "the export's queries, per row, blank on the embedded engine, which sends nothing over a network):",
        "",
        "| size | method | rows | seconds | rows/s | bytes written | sent per row | peak memory | at start |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for multiplier in dataset.export_multipliers:
        for method, name in names.items():
            result = results.get((method, multiplier))
            if result is None:
                lines.append(f"| {multiplier}x | {name} | | | | | | {skipped.get(multiplier, '')} | |")
                continue
            lines.append(
                f"| {multiplier}x | {name} | {result['rows']:,.0f} | {result['seconds']:.2f} | "
                f"{_rate(result):,.0f} | {megabytes(result['bytes'])} | "
                f"{_sent_per_row(result)} | {megabytes(result['peak_rss'])} | "
                f"{megabytes(result['ready_rss'])} |"
            )
    return "\n".join(lines)


def _sent_per_row(result: dict[str, Any]) -> str:
    sent = result.get("bytes_sent")
    return "" if sent is None else f"{sent / max(result['rows'], 1):,.0f} B"


# --- Bytes on the wire per protocol and compression ------------------------------------------------------------


def wire_bytes(http_url: str, native_url: str, day: str) -> list[dict[str, Any]]:
    """Worker: fetch `day`'s export query as Arrow over HTTP with each compression, and over the native protocol
    (uncompressed: the driver compresses only with `clickhouse-cityhash`, not installed); bytes sent per row."""
    import time
    from functools import partial

    import clickhouse_connect

    from dags.common import ClickHouseResource
    from dags.exports.datasets import EVENTS_DATASET, EVENTS_EXPORT_QUERY, ExportWindow

    parameters = EVENTS_DATASET.parameters(ExportWindow.of_day(date.fromisoformat(day)))
    measured = []
    query_log = ServerQueryLog(http_url)

    def fetch(way: str, open_stream: Any) -> None:
        since, started, rows = query_log.now(), time.perf_counter(), 0
        with open_stream() as stream:
            for batch in stream:
                rows += batch.num_rows
        elapsed = time.perf_counter() - started
        sent = query_log.bytes_sent_since(since)
        measured.append({"way": way, "rows": rows, "bytes": sent, "seconds": elapsed})

    for name, (arrow_compression, http_compression) in HTTP_COMPRESSIONS.items():
        client = clickhouse_connect.get_client(dsn=http_url, compress=http_compression)
        settings: dict[str, Any] = {"output_format_arrow_compression_method": arrow_compression}
        if http_compression in ("lz4", "zstd"):
            settings["enable_http_compression"] = 1  # else the server ignores the client's Accept-Encoding
        try:
            query = partial(client.query_arrow_stream, EVENTS_EXPORT_QUERY, parameters=parameters, settings=settings)
            fetch(f"HTTP, {name}", query)
        finally:
            client.close()
    with ClickHouseResource(url=native_url).get_client() as client:
        fetch("native, none (the driver's default)", lambda: client.query_arrow_stream(EVENTS_EXPORT_QUERY, parameters))
    query_log.close()
    return measured


def _wire_section(workspace: Workspace, dataset: Dataset, server: Engine) -> Section:
    day = dataset.export_day(min(dataset.export_multipliers)).isoformat()
    measured = call_in_worker(
        "bench.exports:wire_bytes",
        workspace.environment(server),
        workspace.logs / "exports-wire.log",
        http_url=server.url("HTTP"),
        native_url=server.url("native"),
        day=day,
    ).value
    lines = [
        "Bytes the server sent per row of the 1x day's export query, as Arrow (one fresh process; "
        "`ProfileEvents['NetworkSendBytes']` of the query in `system.query_log`, after compression):",
        "",
        "| protocol, compression | rows | bytes sent | per row | seconds |",
        "|---|---|---|---|---|",
    ]
    for m in measured:
        lines.append(
            f"| {m['way']} | {m['rows']:,} | {megabytes(m['bytes'])} | {m['bytes'] / max(m['rows'], 1):,.0f} B | "
            f"{m['seconds']:.2f} |"
        )
    return Section([], "\n".join(lines))
