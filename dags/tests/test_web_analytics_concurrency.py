"""One web analytics run at a time, on a real instance built from the project's dagster.yaml with the daemon.

Backfills are launched the way the UI launches them (the same GraphQL mutation): an asset backfill of both
pre-aggregates (its runs are `__ASSET_JOB` runs, without the job's tags) and a job backfill of
`web_analytics_daily_job`, five days each at one day per run. Run storage is polled while the daemon
works them off, and each run's start and end events are compared afterwards.
"""

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest
import yaml
from dagster import DagsterEventType, DagsterInstance, DagsterRun, DagsterRunStatus, RunsFilter
from dagster._core.storage.dagster_run import FINISHED_STATUSES
from dagster_graphql.client.query import LAUNCH_PARTITION_BACKFILL_MUTATION
from dagster_graphql.test.utils import define_out_of_process_context, execute_dagster_graphql

from dags.common import PROJECT_ROOT, ClickHouseResource
from dags.events import generate_demo_events
from dags.tests.conftest import stop_process, wait_until
from dags.web_analytics.assets import JOB_NAME, WEB_ANALYTICS_POOL
from dags.web_analytics.schema import BOUNCES_TABLE, STATS_TABLE

DAYS = ["2024-03-01", "2024-03-02", "2024-03-03", "2024-03-04", "2024-03-05"]
LOCATION = "dags.locations.web_analytics"
ACTIVE = [DagsterRunStatus.STARTING, DagsterRunStatus.STARTED]


@pytest.fixture
def instance_home(tmp_path: Path, clickhouse: ClickHouseResource, monkeypatch: pytest.MonkeyPatch) -> Path:
    """DAGSTER_HOME with the project's dagster.yaml (only the queue's poll made faster) and a workspace file."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    config = yaml.safe_load((PROJECT_ROOT / "dagster.yaml").read_text())
    config["run_coordinator"].setdefault("config", {})["dequeue_interval_seconds"] = 1
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    (home / "workspace.yaml").write_text(
        yaml.safe_dump(
            {"load_from": [{"python_module": {"module_name": LOCATION, "working_directory": str(PROJECT_ROOT)}}]}
        )
    )
    environment = {
        "DAGSTER_HOME": str(home),
        "CLICKHOUSE_URL": clickhouse.url,  # the test's own database on the embedded engine
        "WEB_ANALYTICS_START_DATE": DAYS[0],
        "DAGSTER_WEB_PREAGGREGATED_MAX_PARTITIONS_PER_RUN": "1",
        # No schedule tick may add runs while the test counts them.
        "WEB_ANALYTICS_YESTERDAY_CRON": "0 0 1 1 *",
        "WEB_ANALYTICS_TODAY_CRON": "0 0 1 1 *",
    }
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    with DagsterInstance.from_config(str(home)):
        pass  # create the storage now, not in the daemon and the test at the same moment
    return home


@pytest.fixture
def daemon(instance_home: Path) -> Iterator[subprocess.Popen]:
    log = open(instance_home / "daemon.log", "wb")  # noqa: SIM115 - the process owns it
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "dagster-daemon"), "run", "-w", str(instance_home / "workspace.yaml")],
        env=os.environ.copy(),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        yield process
    finally:
        stop_process(process, timeout=30)
        log.close()


def launch_backfill(context, params: dict) -> str:
    result = execute_dagster_graphql(context, LAUNCH_PARTITION_BACKFILL_MUTATION, {"backfillParams": params})
    launched = result.data["launchPartitionBackfill"]
    assert launched["__typename"] == "LaunchBackfillSuccess", launched
    return launched["backfillId"]


def partition_of(run: DagsterRun) -> str:
    """A run's one day: job runs carry `dagster/partition`, asset backfill runs a range of one."""
    if "dagster/partition" in run.tags:
        return run.tags["dagster/partition"]
    start, end = run.tags["dagster/asset_partition_range_start"], run.tags["dagster/asset_partition_range_end"]
    assert start == end, f"run {run.run_id} covers {start}...{end}, not one day"
    return start


def run_intervals(instance: DagsterInstance, run_ids: list[str]) -> list[tuple[float, float, str]]:
    """(launched, finished, run id) of each run, from its RUN_STARTING and final events."""
    intervals = []
    for run_id in run_ids:
        records = instance.get_records_for_run(run_id).records
        times = {
            record.event_log_entry.dagster_event.event_type: record.event_log_entry.timestamp
            for record in records
            if record.event_log_entry.dagster_event is not None
        }
        finished = times.get(DagsterEventType.RUN_SUCCESS) or times.get(DagsterEventType.RUN_FAILURE)
        intervals.append((times[DagsterEventType.RUN_STARTING], finished, run_id))
    return sorted(intervals)


@pytest.mark.slow
def test_asset_and_job_backfills_run_one_at_a_time_and_all_succeed(
    instance_home: Path, clickhouse: ClickHouseResource, daemon: subprocess.Popen
) -> None:
    with clickhouse.get_client() as client:
        generate_demo_events(client, start_date=date.fromisoformat(DAYS[0]), days=len(DAYS), events=1_500)

    with (
        DagsterInstance.from_config(str(instance_home)) as instance,
        define_out_of_process_context(str(instance_home / "workspace.yaml"), None, instance) as context,
    ):
        # The location's sensor writes the pool's limit when the daemon starts, before anything is queued.
        wait_until(
            lambda: WEB_ANALYTICS_POOL in {pool.name for pool in instance.event_log_storage.get_pool_limits()},
            120,
            "the web_analytics pool to get its limit",
            interval=0.2,
        )
        assert instance.event_log_storage.get_concurrency_info(WEB_ANALYTICS_POOL).slot_count == 1

        # From an asset's page: select both assets and five days.
        asset_backfill = launch_backfill(
            context,
            {
                "assetSelection": [{"path": [STATS_TABLE]}, {"path": [BOUNCES_TABLE]}],
                "partitionNames": DAYS,
            },
        )
        # From the job's partitions page.
        job_backfill = launch_backfill(
            context,
            {
                "selector": {
                    "partitionSetName": f"{JOB_NAME}_partition_set",
                    "repositorySelector": {"repositoryLocationName": LOCATION, "repositoryName": "__repository__"},
                },
                "partitionNames": DAYS,
            },
        )

        most_active, most_queued_behind_one, overlaps = 0, 0, []
        deadline = time.monotonic() + 420
        while True:
            assert daemon.poll() is None, (instance_home / "daemon.log").read_text()[-3000:]
            runs = instance.get_runs()
            active = [run for run in runs if run.status in ACTIVE]
            queued = [run for run in runs if run.status == DagsterRunStatus.QUEUED]
            most_active = max(most_active, len(active))
            if len(active) > 1:
                overlaps.append([(run.run_id[:8], run.job_name, run.status.value) for run in active])
            if active:
                most_queued_behind_one = max(most_queued_behind_one, len(queued))
            if len(runs) == 2 * len(DAYS) and all(run.status in FINISHED_STATUSES for run in runs):
                break
            assert time.monotonic() < deadline, f"runs not done: {[(run.job_name, run.status) for run in runs]}"
            time.sleep(0.05)

        assert most_active == 1, f"web analytics runs in progress at once: {overlaps[:5]}"
        assert most_queued_behind_one >= 2, "runs never waited in the queue: the limit was not exercised"
        runs = instance.get_runs()
        assert {run.status for run in runs} == {DagsterRunStatus.SUCCESS}
        by_backfill = {
            backfill: instance.get_runs(RunsFilter(tags={"dagster/backfill": backfill}))
            for backfill in (asset_backfill, job_backfill)
        }
        assert {run.job_name for run in by_backfill[asset_backfill]} == {"__ASSET_JOB"}
        assert {run.job_name for run in by_backfill[job_backfill]} == {JOB_NAME}
        for backfill in (asset_backfill, job_backfill):
            assert sorted(partition_of(run) for run in by_backfill[backfill]) == DAYS

        # Between polls too: each run was launched only after the previous one had finished.
        intervals = run_intervals(instance, [run.run_id for run in runs])
        for (_, previous_end, previous), (next_start, _, following) in zip(intervals, intervals[1:], strict=False):
            assert next_start >= previous_end, f"run {following} launched before {previous} finished"

    with clickhouse.get_client() as client:
        days = client.query_rows(
            f"SELECT toString(toDate(period_bucket)) AS day, sumMerge(pageviews_count_state) AS pageviews "
            f"FROM {STATS_TABLE} GROUP BY day ORDER BY day"
        )
        expected = client.query_rows(
            "SELECT toString(toDate(timestamp)) AS day, count() AS pageviews FROM events "
            "WHERE event = '$pageview' GROUP BY day ORDER BY day"
        )
    assert days == expected and [row["day"] for row in days] == DAYS
