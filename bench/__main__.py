"""`python -m bench`: the project's speed and memory, each figure next to its limit or naive baseline.

Loads `--events` demo events into a temporary embedded ClickHouse (never `.dagster_home`) and into a
ClickHouse 26.9 server started for the run on loopback (`bench.server`), runs the benchmarks on each engine
(`--engine`) with a temporary DAGSTER_HOME, prints a Markdown table of medians and ratios and writes it with
the machine's description to `bench/RESULTS.md` (a full run only: `--only` prints its rows and leaves the
file alone). `--smoke` runs every benchmark once on tiny data (what CI runs) and writes nothing.
"""

import argparse
import shutil
import sys
import time
from contextlib import ExitStack
from datetime import UTC, datetime

from bench import code_location_load, cost_per_day, exchange_rates, exports, management, preaggregates
from bench.common import (
    EMBEDDED,
    PROJECT_ROOT,
    TABLE_HEADER,
    Engine,
    Section,
    Workspace,
    call_in_worker,
    load_average,
    machine_description,
    seconds,
)
from bench.dataset import Dataset
from bench.server import running_server

BENCHMARKS = ("code_location_load", "cost_per_day", "preaggregates", "exports", "management", "exchange_rates")
NEEDS_EVENTS = {"preaggregates", "exports"}
NEEDS_SERVER = {"preaggregates", "exports", "management"}
ENGINES = ("embedded", "server")
RESULTS_FILE = PROJECT_ROOT / "bench" / "RESULTS.md"
SMOKE_EVENTS = 3_000
SMOKE_ECB_DAYS = 20
# Each repetition of the management jobs rewrites a month of events four times: three are enough for a median.
MAX_REPEAT_MANAGEMENT = 3
# A Dagster run of 30 one-day runs, or of the whole ECB history, takes minutes: those repeat less (see each module).
# Everything from this heading on in RESULTS.md is written by people and survives a new run.
ANALYSIS_HEADING = "## Analysis"


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--events", type=int, default=5_000_000, help="demo events over the 30-day window")
    parser.add_argument("--repeat", type=int, default=5, help="repetitions of each measurement (medians)")
    parser.add_argument("--only", choices=BENCHMARKS, action="append", help="run only this benchmark (repeatable)")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, one repetition, write no results file")
    parser.add_argument(
        "--management-events",
        type=int,
        default=management.DEFAULT_EVENTS,
        help="events in the month the management jobs run on (server only)",
    )
    parser.add_argument(
        "--engine", choices=ENGINES, action="append", help="run on this ClickHouse only (repeatable; default: both)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (data, logs) afterwards")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if args.smoke:
        args.repeat = 1
        args.events = min(args.events, SMOKE_EVENTS)
        args.management_events = min(args.management_events, management.SMOKE_EVENTS)
    if not 30 <= args.events <= 20_000_000:
        parser.error("--events must be between 30 and 20,000,000 (the 64x export day holds 64/30 of them)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv)
    selected = args.only or list(BENCHMARKS)
    dataset = Dataset(args.events, window_days=3, export_multipliers=(1, 4)) if args.smoke else Dataset(args.events)
    engine_names = args.engine or list(ENGINES)
    workspace = Workspace.create()
    machine = machine_description()
    load_before = load_average()
    started = time.perf_counter()
    sections: dict[str, Section] = {}
    notes = []
    try:
        with ExitStack() as running:
            engines = [EMBEDDED] if "embedded" in engine_names else []
            if "server" in engine_names and NEEDS_SERVER & set(selected):
                progress("starting the bench's ClickHouse server")
                engines.append(running.enter_context(running_server(workspace)))
            if NEEDS_EVENTS & set(selected):
                for engine in engines:
                    notes.append(load_dataset(workspace, dataset, engine))
            for name in selected:
                if name == "management" and not any(engine.is_server for engine in engines):
                    continue  # measured on the server only
                progress(f"running {name}")
                sections[name] = run_benchmark(name, workspace, dataset, engines, args)
    finally:
        if args.keep:
            progress(f"kept {workspace.root}")
        else:
            shutil.rmtree(workspace.root, ignore_errors=True)
    elapsed = time.perf_counter() - started
    table = "\n".join([TABLE_HEADER, *(row.markdown() for section in sections.values() for row in section.rows)])
    details = [section.detail for section in sections.values() if section.detail]
    print(table)
    print()
    print("\n\n".join([*details, *notes]))
    if args.smoke or args.only:
        progress(f"{'smoke' if args.smoke else 'partial'} run: {RESULTS_FILE.relative_to(PROJECT_ROOT)} left as it was")
    else:
        generated = results_markdown(args, dataset, machine, load_before, elapsed, table, details, notes)
        RESULTS_FILE.write_text(generated + kept_analysis())
        progress(f"wrote {RESULTS_FILE.relative_to(PROJECT_ROOT)}")
    return 0


def load_dataset(workspace: Workspace, dataset: Dataset, engine: Engine) -> str:
    """Load the demo events into `engine`; a line for the results' details."""
    progress(
        f"loading {dataset.events:,} demo events over {dataset.window_days} days and the export days ({engine.name})"
    )
    loaded = call_in_worker(
        "bench.dataset:build",
        workspace.environment(engine),
        workspace.logs / f"dataset-{engine.name}.log",
        events=dataset.events,
        window_start=dataset.window_start.isoformat(),
        window_days=dataset.window_days,
        extra_days=dataset.extra_days(),
    ).value
    return f"Demo events loaded into the {engine.name} engine in {seconds(loaded['seconds'])}."


def run_benchmark(
    name: str, workspace: Workspace, dataset: Dataset, engines: list[Engine], args: argparse.Namespace
) -> Section:
    if name == "code_location_load":
        return code_location_load.run(workspace, args.repeat)
    if name == "cost_per_day":
        return cost_per_day.run(workspace, args.repeat)
    if name == "preaggregates":
        return preaggregates.run(workspace, dataset, args.repeat, tuple(engines))
    if name == "exports":
        return exports.run(workspace, dataset, args.repeat, tuple(engines))
    if name == "management":
        server = next(engine for engine in engines if engine.is_server)
        return management.run(workspace, min(args.repeat, MAX_REPEAT_MANAGEMENT), server, args.management_events)
    return exchange_rates.run(workspace, args.repeat, SMOKE_ECB_DAYS if args.smoke else None)


def kept_analysis() -> str:
    """The hand-written analysis at the end of the results file (profiles, why a target is missed): kept as is."""
    if not RESULTS_FILE.exists():
        return ""
    text = RESULTS_FILE.read_text()
    return "\n" + text[text.index(ANALYSIS_HEADING) :] if ANALYSIS_HEADING in text else ""


def progress(message: str) -> None:
    print(f"[bench {datetime.now(UTC):%H:%M:%S}] {message}", file=sys.stderr, flush=True)


def results_markdown(
    args: argparse.Namespace,
    dataset: Dataset,
    machine: dict[str, str],
    load_before: str,
    elapsed: float,
    table: str,
    details: list[str],
    notes: list[str],
) -> str:
    command = "python -m bench" + (f" --events {args.events}" if args.events != 5_000_000 else "")
    command += f" --repeat {args.repeat}" if args.repeat != 5 else ""
    machine_lines = "\n".join(f"- {name}: {value}" for name, value in machine.items())
    return f"""# Benchmark results

Written by `{command}` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC in {seconds(elapsed)}. Medians of
{args.repeat} repetitions unless the details say otherwise, each figure measured in the same run as its
baseline, in turns. {dataset.events:,} demo events over {dataset.window_days} days; the export's "1x" day
is one day of that window ({dataset.day_events:,} events on average), 4x and 16x are days of their own.

## Machine

{machine_lines}
- load average (1/5/15 min) at start: {load_before}; at the end: {load_average()}

The machine is shared with other engineers' test runs: expect noise of tens of percent in single figures;
ratios measured in turns are steadier than absolute seconds.

## Results

{table}

## Details

{chr(10).join(chr(10) + detail for detail in [*details, *notes]).strip()}
"""


if __name__ == "__main__":
    sys.exit(main())
