"""What every benchmark shares: timing helpers, fresh worker processes, the result row, the machine."""

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Row:
    """One line of the results table: a measurement, what it is compared with, and the target."""

    benchmark: str
    measured: str
    baseline: str
    ratio: float | None
    target: str
    met: bool | None

    def markdown(self) -> str:
        ratio = "" if self.ratio is None else f"{self.ratio:.2f}x"
        verdict = {True: "yes", False: "**no**", None: ""}[self.met]
        return f"| {self.benchmark} | {self.measured} | {self.baseline} | {ratio} | {self.target} | {verdict} |"


TABLE_HEADER = "| benchmark | measured | baseline | ratio | target | met |\n|---|---|---|---|---|---|"


@dataclass
class Section:
    """What one benchmark returns: its rows for the summary table, and optional detail (Markdown)."""

    rows: list[Row]
    detail: str = ""

    @staticmethod
    def joined(sections: Sequence["Section"]) -> "Section":
        """Several sections as one (one per engine, say): their rows in order, their details one after another."""
        return Section([row for section in sections for row in section.rows], "\n\n".join(s.detail for s in sections))


def median_seconds(operation: Callable[[], object], repeat: int) -> float:
    timings = []
    for _ in range(repeat):
        started = time.perf_counter()
        operation()
        timings.append(time.perf_counter() - started)
    return statistics.median(timings)


def interleaved_medians(operations: dict[str, Callable[[], object]], repeat: int) -> dict[str, float]:
    """Median seconds of each operation, run in turns (a, b, a, b, ...) so machine noise hits all alike."""
    timings: dict[str, list[float]] = {name: [] for name in operations}
    for _ in range(repeat):
        for name, operation in operations.items():
            started = time.perf_counter()
            operation()
            timings[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in timings.items()}


def run_python(code: str, env: dict[str, str] | None = None) -> None:
    subprocess.run([sys.executable, "-c", code], check=True, cwd=PROJECT_ROOT, env=env, capture_output=True)


# --- Which ClickHouse a measurement runs on ------------------------------------------------------------------


@dataclass(frozen=True)
class Engine:
    """The ClickHouse a measurement runs on: the embedded engine under the workspace, or the bench's server.

    The server's URLs (None for the embedded engine) reach the workers as `CLICKHOUSE_URL`, as a deployment
    configures it: HTTP unless a measurement asks for the native protocol.
    """

    name: str  # "embedded" or "server": what the results table says
    http_url: str | None = None
    native_url: str | None = None

    @property
    def is_server(self) -> bool:
        return self.http_url is not None

    def url(self, protocol: str = "HTTP") -> str | None:
        """The server's URL over `protocol` (`HTTP` or `native`); None for the embedded engine."""
        return self.native_url if protocol == "native" else self.http_url


EMBEDDED = Engine("embedded")


# --- Where a benchmark run keeps its data -------------------------------------------------------------------


@dataclass(frozen=True)
class Workspace:
    """A temporary folder holding one benchmark run's Dagster instance, embedded ClickHouse and exports."""

    root: Path

    @property
    def dagster_home(self) -> Path:
        return self.root / "dagster_home"

    @property
    def clickhouse_path(self) -> Path:
        return self.dagster_home / "clickhouse"  # where the local ClickHouse URL points for this DAGSTER_HOME

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @classmethod
    def create(cls) -> "Workspace":
        workspace = cls(Path(tempfile.mkdtemp(prefix="dags-bench-")))
        workspace.dagster_home.mkdir()
        workspace.logs.mkdir()
        # Runs are recorded in SQLite under this DAGSTER_HOME, as on a developer's machine; no telemetry.
        (workspace.dagster_home / "dagster.yaml").write_text("telemetry:\n  enabled: false\nnux:\n  enabled: false\n")
        return workspace

    def environment(self, engine: Engine = EMBEDDED, protocol: str = "HTTP", **extra: str) -> dict[str, str]:
        """The environment of every worker: the workspace's own resources, whatever the caller's shell says.

        The embedded engine under DAGSTER_HOME by default; the bench's server over `protocol` when `engine` is
        one. Exports go to the local folder under DAGSTER_HOME either way.
        """
        env = {
            name: value
            for name, value in os.environ.items()
            if not name.startswith(
                ("CLICKHOUSE_", "EXPORT_", "DAGSTER_", "WEB_ANALYTICS_", "EXCHANGE_RATE_", "DEBUG", "SLACK_")
            )
        }
        url = engine.url(protocol)
        if url is None:
            env["DEBUG"] = "1"  # the embedded ClickHouse and the local export folder, never production
        else:
            env["CLICKHOUSE_URL"] = url
        env.update(DAGSTER_HOME=str(self.dagster_home), PYTHONWARNINGS="ignore", **extra)
        return env


# --- Fresh worker processes ----------------------------------------------------------------------------------


@dataclass
class WorkerResult:
    value: Any  # what the function returned (JSON)
    peak_rss_bytes: int  # the worker process's peak resident memory, the embedded engine included


def call_in_worker(function: str, env: dict[str, str], log: Path, **kwargs: Any) -> WorkerResult:
    """Run `module:function(**kwargs)` in a fresh Python process; its output goes to `log`.

    The peak memory is the process's own (`wait4` rusage): the embedded ClickHouse runs in-process, so its
    buffers count too.
    """
    with tempfile.TemporaryDirectory(prefix="dags-bench-call-") as folder:
        arguments, result = Path(folder) / "arguments.json", Path(folder) / "result.json"
        arguments.write_text(json.dumps(kwargs, default=str))
        with open(log, "ab") as output:
            process = subprocess.Popen(
                [sys.executable, "-m", "bench.worker", function, str(arguments), str(result)],
                cwd=PROJECT_ROOT,
                env=env,
                stdout=output,
                stderr=subprocess.STDOUT,
            )
            _, status, usage = os.wait4(process.pid, 0)
            process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode != 0:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
            raise RuntimeError(f"{function} failed (exit {process.returncode}); end of {log}:\n{tail}")
        return WorkerResult(json.loads(result.read_text()), usage.ru_maxrss * 1024)


# --- Formatting -----------------------------------------------------------------------------------------------


def seconds(value: float) -> str:
    return f"{value:.2f}s" if value < 100 else f"{value:.0f}s"


def megabytes(value: float) -> str:
    return f"{value / 1e6:,.0f} MB" if value >= 10e6 else f"{value / 1e6:.2f} MB"


def start_engine(data_path: str) -> None:
    """Start the embedded engine once, untimed: the first start in a process costs more than later ones."""
    import chdb

    chdb.connect(data_path).close()


def per_second(value: float) -> str:
    return f"{value:,.0f} rows/s"


def spread(values: list[float]) -> str:
    """min-max of the repetitions, to show the noise next to the median."""
    return f"{min(values):.2f}-{max(values):.2f}s"


# --- The machine -------------------------------------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_total() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    return "unknown"


def load_average() -> str:
    try:
        one, five, fifteen = os.getloadavg()
        return f"{one:.1f} / {five:.1f} / {fifteen:.1f}"
    except OSError:
        return "unknown"


def machine_description() -> dict[str, str]:
    """CPU, cores, memory, OS and the versions that matter, for the results file."""
    from importlib.metadata import version

    import chdb

    engine = getattr(chdb, "engine_version", "") or "unknown"
    return {
        "CPU": _cpu_model(),
        "cores": str(os.cpu_count()),
        "memory": _memory_total(),
        "OS": platform.platform(),
        "Python": platform.python_version(),
        "chDB": f"{chdb.__version__} (ClickHouse {engine}, embedded)",
        "Dagster": version("dagster"),
        "pyarrow": version("pyarrow"),
        "pandas": version("pandas"),
    }


def worker_clickhouse() -> Any:
    """The ClickHouse resource a worker measures with, as the environment configures it."""
    from dags.common import clickhouse_resource_from_env

    return clickhouse_resource_from_env(outside_runs=True)
