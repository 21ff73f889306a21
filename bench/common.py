"""What every benchmark shares: timing helpers, the result row, and the table it prints."""

import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

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
