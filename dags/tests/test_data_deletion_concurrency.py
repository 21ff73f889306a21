"""A deletion run never overlaps another deletion run or a run that rewrites the same tables, on a real
instance built from the project's dagster.yaml with the daemon.

Two deletion runs and a web analytics pre-aggregate run are launched the way the UI launches them (the
same GraphQL mutation) in the order deletion, pre-aggregates, deletion. Each deletion run pauses after its
delete (a test hook), so without the pools' limits they would overlap. Run storage is polled while the daemon
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
from dagster import DagsterInstance, DagsterRunStatus
from dagster._core.storage.dagster_run import FINISHED_STATUSES
from dagster_graphql.client.query import LAUNCH_PIPELINE_EXECUTION_MUTATION
from dagster_graphql.test.utils import define_out_of_process_context, execute_dagster_graphql

from dags.common import PROJECT_ROOT, ClickHouseResource
from dags.events import generate_demo_events
from dags.management.deletion.jobs import JOB_NAME
from dags.management.deletion.ops import POOLS
from dags.management.deletion.requests import TABLE, insert_request
from dags.tests.conftest import stop_process, wait_until
from dags.tests.test_web_analytics_concurrency import run_intervals

DAY = date(2024, 3, 4)
LOCATIONS = ["dags.locations.data_platform", "dags.locations.web_analytics"]
ACTIVE = [DagsterRunStatus.STARTING, DagsterRunStatus.STARTED]


@pytest.fixture
def instance_home(tmp_path: Path, clickhouse: ClickHouseResource, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "dagster_home"
    home.mkdir()
    config = yaml.safe_load((PROJECT_ROOT / "dagster.yaml").read_text())
    config["run_coordinator"].setdefault("config", {})["dequeue_interval_seconds"] = 1
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    (home / "workspace.yaml").write_text(
        yaml.safe_dump(
            {
                "load_from": [
                    {"python_module": {"module_name": module, "working_directory": str(PROJECT_ROOT)}}
                    for module in LOCATIONS
                ]
            }
        )
    )
    environment = {
        "DAGSTER_HOME": str(home),
        "CLICKHOUSE_URL": clickhouse.url,
        "EXPORT_DESTINATION_URL": (tmp_path / "exports").as_uri(),
        "WEB_ANALYTICS_START_DATE": DAY.isoformat(),
        "WEB_ANALYTICS_YESTERDAY_CRON": "0 0 1 1 *",
        "WEB_ANALYTICS_TODAY_CRON": "0 0 1 1 *",
        # Test hook: each deletion run pauses after deleting, long enough to overlap without the guard.
        "DATA_DELETION_TEST_HOOK_PAUSE_AFTER": "delete_requested_events",
        "DATA_DELETION_TEST_HOOK_PAUSE_SECONDS": "4",
    }
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    with DagsterInstance.from_config(str(home)):
        pass
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


def launch(context, location: str, job: str, tags: dict[str, str] | None = None) -> str:
    result = execute_dagster_graphql(
        context,
        LAUNCH_PIPELINE_EXECUTION_MUTATION,
        {
            "executionParams": {
                "selector": {"repositoryLocationName": location, "repositoryName": "__repository__", "jobName": job},
                "runConfigData": {},
                "executionMetadata": {"tags": [{"key": key, "value": value} for key, value in (tags or {}).items()]},
            }
        },
    )
    launched = result.data["launchPipelineExecution"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    return launched["run"]["runId"]


@pytest.mark.slow
def test_deletion_runs_wait_for_each_other_and_for_pre_aggregate_runs(
    instance_home: Path, clickhouse: ClickHouseResource, daemon: subprocess.Popen
) -> None:
    with clickhouse.get_client() as client:
        generate_demo_events(client, start_date=DAY, days=1, events=1_000)
        person = client.command("SELECT toString(any(person_id)) FROM events WHERE team_id = 1")
        insert_request(client, 1, "person", person)

    with (
        DagsterInstance.from_config(str(instance_home)) as instance,
        define_out_of_process_context(str(instance_home / "workspace.yaml"), None, instance) as context,
    ):
        wait_until(
            lambda: set(POOLS) <= {pool.name for pool in instance.event_log_storage.get_pool_limits()},
            120,
            "the deletion pools to get their limits",
            interval=0.2,
        )
        run_ids = [
            launch(context, "dags.locations.data_platform", JOB_NAME),
            launch(context, "dags.locations.web_analytics", "web_analytics_daily_job", {"dagster/partition": str(DAY)}),
            launch(context, "dags.locations.data_platform", JOB_NAME),
        ]

        most_active, most_queued_behind_one, overlaps = 0, 0, []
        deadline = time.monotonic() + 300
        while True:
            assert daemon.poll() is None, (instance_home / "daemon.log").read_text()[-3000:]
            runs = [instance.get_run_by_id(run_id) for run_id in run_ids]
            active = [run for run in runs if run.status in ACTIVE]
            most_active = max(most_active, len(active))
            if active:
                queued = [run for run in runs if run.status == DagsterRunStatus.QUEUED]
                most_queued_behind_one = max(most_queued_behind_one, len(queued))
            if len(active) > 1:
                overlaps.append([(run.run_id[:8], run.job_name) for run in active])
            if all(run.status in FINISHED_STATUSES for run in runs):
                break
            assert time.monotonic() < deadline, f"runs not done: {[(run.job_name, run.status) for run in runs]}"
            time.sleep(0.05)

        assert most_active == 1, f"runs in progress at once: {overlaps[:5]}"
        assert most_queued_behind_one == 2, "runs never waited in the queue: the guard was not exercised"
        assert [run.status for run in runs] == [DagsterRunStatus.SUCCESS] * 3
        intervals = run_intervals(instance, run_ids)
        for (_, previous_end, previous), (next_start, _, following) in zip(intervals, intervals[1:], strict=False):
            assert next_start >= previous_end, f"run {following} launched before {previous} finished"

    with clickhouse.get_client() as client:
        assert client.command("SELECT count() FROM events WHERE person_id = toUUID({p:String})", {"p": person}) == 0
        statuses = client.query_rows(f"SELECT status, run_id FROM {TABLE} FINAL")
    assert [row["status"] for row in statuses] == ["done"]
