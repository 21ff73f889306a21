"""Run every pipeline end to end on demo data: ``python -m dags.demo`` (what ``bin/demo`` calls).

Creates the tables, loads demo events for a recent date range, then materializes every daily
partitioned asset of every location for those days, in dependency order, as runs of the local Dagster
instance (so they show up in ``dagster dev``), and prints where the results are.
"""

import argparse
import os
import sys
import time
import warnings
from dataclasses import dataclass
from datetime import date

from dagster import (
    AssetKey,
    AssetsDefinition,
    BetaWarning,
    DagsterInstance,
    DailyPartitionsDefinition,
    PreviewWarning,
    materialize,
)
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from dags.common import clickhouse_resource, load_settings, quote_identifier, redact_url
from dags.events import create_events_table, recent_days
from dags.exports.settings import load_export_settings

DEMO_EVENTS_KEY = AssetKey("demo_events")


@dataclass
class Outcome:
    asset: str
    days: str
    seconds: float
    error: str | None = None


@dataclass
class DailyAsset:
    """A daily partitioned asset, with the assets whose outputs it loads as inputs (run beside it, unselected)."""

    key: AssetKey
    assets_def: AssetsDefinition
    upstream: list[AssetsDefinition]  # loaded as inputs: materialize() needs them beside the asset
    upstream_keys: list[AssetKey]  # every parent, inputs and deps


def daily_assets_in_dependency_order() -> list[DailyAsset]:
    from dags.definitions import defs

    graph = defs.resolve_asset_graph()
    ordered = []
    for key in graph.toposorted_asset_keys:
        node = graph.get(key)
        if node.is_materializable and isinstance(node.partitions_def, DailyPartitionsDefinition):
            parents = [graph.get(parent) for parent in node.parent_keys]
            upstream = [parent.assets_def for parent in parents if parent.is_materializable]
            ordered.append(DailyAsset(key, node.assets_def, upstream, sorted(node.parent_keys)))
    return ordered


def run_asset(daily: DailyAsset, days: list[date], instance: DagsterInstance, run_config: dict) -> list[Outcome]:
    """Materialize one asset for the days its partitions cover: one run per range when its policy allows.

    The asset comes from the resolved definitions, so it already carries the location's resources.
    """
    key, assets_def = daily.key, daily.assets_def
    ops = run_config.get("ops", {})
    partitions_def = assets_def.partitions_def
    assert isinstance(partitions_def, DailyPartitionsDefinition)
    valid = set(partitions_def.get_partition_keys())
    keys = [day.isoformat() for day in days if day.isoformat() in valid]
    if not keys:
        return []
    policy = assets_def.backfill_policy
    per_run = len(keys) if policy is not None and policy.max_partitions_per_run is None else 1
    if policy is not None and policy.max_partitions_per_run:
        per_run = policy.max_partitions_per_run
    outcomes = []
    for start in range(0, len(keys), per_run):
        chunk = keys[start : start + per_run]
        tags = {ASSET_PARTITION_RANGE_START_TAG: chunk[0], ASSET_PARTITION_RANGE_END_TAG: chunk[-1]}
        started = time.monotonic()
        error = None
        try:
            result = materialize(
                [assets_def, *[upstream for upstream in daily.upstream if upstream is not assets_def]],
                selection=[key],
                instance=instance,
                tags=tags,
                run_config={
                    # One summary line per run here; the full event log (and any traceback) is in the UI.
                    "loggers": {"console": {"config": {"log_level": "CRITICAL"}}},
                    **(
                        {"ops": {key.to_user_string(): ops[key.to_user_string()]}}
                        if key.to_user_string() in ops
                        else {}
                    ),
                },
                raise_on_error=False,
            )
            if not result.success:
                failure = next((event for event in result.all_events if event.is_step_failure), None)
                error = failure.step_failure_data.error.message.strip() if failure else "the run failed"
        except Exception as exception:
            error = str(exception).strip()
        label = chunk[0] if len(chunk) == 1 else f"{chunk[0]}..{chunk[-1]}"
        outcomes.append(Outcome(key.to_user_string(), label, time.monotonic() - started, error))
        status = "ok  " if error is None else "FAIL"
        print(f"  {status} {key.to_user_string():40s} {label:24s} {outcomes[-1].seconds:6.1f}s")
    return outcomes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=int, default=7, help="how many recent days to fill (default 7)")
    parser.add_argument("--until", type=date.fromisoformat, default=None, help="last day (default yesterday)")
    parser.add_argument("--events-per-day", type=int, default=20_000, help="demo events per day (default 20000)")
    args = parser.parse_args(argv)
    # Beta and preview notices about Dagster's own APIs (backfill policies, pools) are for developers, not here.
    warnings.filterwarnings("ignore", category=BetaWarning)
    warnings.filterwarnings("ignore", category=PreviewWarning)

    os.environ.setdefault("DAGSTER_HOME", str(load_settings().dagster_home))
    os.makedirs(os.environ["DAGSTER_HOME"], exist_ok=True)
    settings = load_settings()
    days = recent_days(args.days, args.until)
    print(f"ClickHouse: {redact_url(settings.effective_clickhouse_url)}")
    print(f"Days: {days[0]} .. {days[-1]}; {args.events_per_day:,} demo events per day\n")

    # Outside a run, EnvVar settings (a server URL) must be resolved by hand.
    clickhouse = clickhouse_resource().process_config_and_initialize()
    with clickhouse.get_client(create_database=True) as client:
        create_events_table(client)

    run_config = {"ops": {"demo_events": {"config": {"events_per_day": args.events_per_day}}}}
    outcomes: list[Outcome] = []
    with DagsterInstance.get() as instance:
        # Demo events first: everything else reads them.
        ordered = sorted(daily_assets_in_dependency_order(), key=lambda daily: daily.key != DEMO_EVENTS_KEY)
        failed: set[AssetKey] = set()
        for daily in ordered:
            failed_upstream = [parent for parent in daily.upstream_keys if parent in failed]
            if failed_upstream:
                # As a Dagster backfill would: what reads a failed asset is not run.
                reason = f"skipped: upstream {failed_upstream[0].to_user_string()} failed"
                outcomes.append(Outcome(daily.key.to_user_string(), "all days", 0.0, reason))
                print(f"  skip {daily.key.to_user_string():40s} ({reason})")
                failed.add(daily.key)
                continue
            asset_outcomes = run_asset(daily, days, instance, run_config)
            if any(outcome.error for outcome in asset_outcomes):
                failed.add(daily.key)
            outcomes += asset_outcomes

    with clickhouse.get_client() as client:
        tables = client.query_rows(
            "SELECT name, formatReadableSize(total_bytes) AS size FROM system.tables "
            "WHERE database = currentDatabase() AND engine LIKE '%MergeTree' ORDER BY name"
        )
        # count(), not system.tables.total_rows: that still counts rows removed by a lightweight DELETE.
        for table in tables:
            table["rows"] = client.command(f"SELECT count() FROM {quote_identifier(table['name'])}")
    print("\nClickHouse tables:")
    for table in tables:
        print(f"  {table['name']:36s} {int(table['rows']):>12,} rows  {table['size']}")
    print(f"\nExports (if any): {redact_url(load_export_settings().effective_destination_url)}")
    print(f"Runs and logs: {os.environ['DAGSTER_HOME']}")
    print("\nOpen the UI:  DAGSTER_HOME=$PWD/.dagster_home .venv/bin/dagster dev -w workspace.yaml")

    failed = [outcome for outcome in outcomes if outcome.error]
    if failed:
        print(f"\n{len(failed)} of {len(outcomes)} runs failed or were skipped:", file=sys.stderr)
        for outcome in failed:
            print(f"  {outcome.asset} {outcome.days}: {outcome.error.splitlines()[0][:600]}", file=sys.stderr)
        return 1
    print(f"\nAll {len(outcomes)} runs succeeded.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
