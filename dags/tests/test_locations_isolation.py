"""One team's broken setting or file leaves the other teams' jobs loading and running through README's
management commands (``dagster job ... -m dags.definitions``), each in a fresh process as a user runs them."""

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from dags.common import PROJECT_ROOT
from dags.tests.conftest import S3Server

DAGSTER = Path(sys.executable).parent / "dagster"
PLATFORM_JOBS = ("clickhouse_backup_job", "clickhouse_restore_job", "data_deletion_job", "request_data_deletion")
OTHER_TEAMS_JOBS = ("web_analytics_daily_job", "daily_exchange_rates_job")
# Variables of the test process that would change what the commands below load.
SCRUBBED = ("DEBUG", "BATCH_EXPORTS_FILE", "DAGSTER_HOME", "PYTHONPATH", "EXPORT_", "CLICKHOUSE_", "DATA_DELETION_")
CREATE_EVENTS = """
from dags.common import clickhouse_resource
with clickhouse_resource().get_client() as client:
    client.command("CREATE TABLE events (uuid UUID, team_id Int64, timestamp DateTime64(6, 'UTC')) "
                   "ENGINE = MergeTree ORDER BY (team_id, uuid)")
    client.command("INSERT INTO events SELECT generateUUIDv4(), number % 3 + 1, now64() FROM numbers(1000)")
"""


def bogus_write_method(tmp_path: Path) -> tuple[dict[str, str], str]:
    return {"EXPORT_WRITE_METHOD": "bogus"}, "EXPORT_WRITE_METHOD must be one of stream, clickhouse, got 'bogus'"


def invalid_batch_exports_file(tmp_path: Path) -> tuple[dict[str, str], str]:
    """A team's batch export whose team id is a yes/no instead of a number."""
    path = tmp_path / "batch_exports.yaml"
    export = {"name": "team_x", "team_id": True, "dataset": "events", "destination": f"file://{tmp_path}/x"}
    path.write_text(yaml.safe_dump({"exports": [{**export, "interval": "day", "start": "2024-01-01"}]}))
    return {"BATCH_EXPORTS_FILE": str(path)}, "exports[0] (team_x).team_id"


BROKEN = {"EXPORT_WRITE_METHOD=bogus": bogus_write_method, "invalid BATCH_EXPORTS_FILE": invalid_batch_exports_file}


@pytest.fixture
def environment(tmp_path: Path, s3_server: S3Server) -> dict[str, str]:
    """A deployment of its own: Dagster home (with the embedded ClickHouse in it) and a backup bucket, as README
    sets them."""
    bucket = s3_server.create_bucket("backups")
    inherited = {key: value for key, value in os.environ.items() if not key.startswith(SCRUBBED)}
    (tmp_path / "home").mkdir()
    return {
        **inherited,
        "PYTHONPATH": str(PROJECT_ROOT),
        "DAGSTER_HOME": str(tmp_path / "home"),
        "CLICKHOUSE_BACKUP_URL": f"s3://{bucket}/backups",
        "AWS_ACCESS_KEY_ID": s3_server.access_key,
        "AWS_SECRET_ACCESS_KEY": s3_server.secret_key,
        "AWS_ENDPOINT_URL": s3_server.endpoint_url,
        "AWS_REGION": s3_server.region,
    }


def run(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=300)


def dagster(env: dict[str, str], *arguments: str) -> subprocess.CompletedProcess[str]:
    return run([str(DAGSTER), "job", *arguments, "-m", "dags.definitions"], env)


def listed_jobs(listing: str) -> set[str]:
    return {line.removeprefix("Job: ").strip() for line in listing.splitlines() if line.startswith("Job: ")}


@pytest.mark.parametrize("broken", BROKEN.values(), ids=BROKEN.keys())
def test_with_a_broken_export_setting_the_backup_and_restore_jobs_load_and_a_backup_runs(
    broken: Callable[[Path], tuple[dict[str, str], str]],
    environment: dict[str, str],
    s3_server: S3Server,
    tmp_path: Path,
) -> None:
    variables, problem = broken(tmp_path)
    env = {**environment, **variables}

    listing = dagster(env, "list")
    assert listing.returncode == 0, listing.stderr
    jobs = listed_jobs(listing.stdout)
    assert jobs >= {*PLATFORM_JOBS, *OTHER_TEAMS_JOBS, "data_exports_failed_to_load"}
    assert "events_export_job" not in jobs  # the broken location is left out, and says why
    said = listing.stdout + listing.stderr
    assert "Leaving out the data_exports location" in said and problem in said

    created = run([sys.executable, "-c", CREATE_EVENTS], env)
    assert created.returncode == 0, created.stderr
    config = tmp_path / "backup.yaml"
    fast = {"poll_interval_seconds": 0.05}
    ops = {"take_clickhouse_backup": {"config": {"kind": "full", **fast}}, "verify_clickhouse_backup": {"config": fast}}
    config.write_text(yaml.safe_dump({"ops": ops}))
    backup = dagster(env, "execute", "-j", "clickhouse_backup_job", "-c", str(config))
    assert backup.returncode == 0, backup.stdout[-3000:] + backup.stderr[-3000:]
    assert "RUN_SUCCESS" in backup.stdout + backup.stderr
    bucket = env["CLICKHOUSE_BACKUP_URL"].removeprefix("s3://").split("/")[0]
    keys = [item["Key"] for item in s3_server.client().list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert any(key.endswith("-full/.backup") for key in keys), keys


def test_two_broken_locations_each_get_a_stand_in_and_the_others_still_load(environment: dict[str, str]) -> None:
    listing = dagster({**environment, "EXPORT_WRITE_METHOD": "bogus", "EXCHANGE_RATE_SOURCE": "bogus"}, "list")
    assert listing.returncode == 0, listing.stderr
    jobs = listed_jobs(listing.stdout)
    assert jobs >= {*PLATFORM_JOBS, "web_analytics_daily_job"}
    assert jobs >= {"data_exports_failed_to_load", "revenue_analytics_failed_to_load"}
    assert "daily_exchange_rates_job" not in jobs and "events_export_job" not in jobs


@pytest.mark.parametrize("broken", BROKEN.values(), ids=BROKEN.keys())
def test_the_stand_in_of_a_broken_location_fails_its_run_naming_the_problem(
    broken: Callable[[Path], tuple[dict[str, str], str]], environment: dict[str, str], tmp_path: Path
) -> None:
    variables, problem = broken(tmp_path)
    stand_in = dagster({**environment, **variables}, "execute", "-j", "data_exports_failed_to_load")
    output = stand_in.stdout + stand_in.stderr
    assert stand_in.returncode != 0 and "RUN_FAILURE" in output
    assert "The data_exports location did not load, so its jobs are missing: " in output and problem in output


def test_a_bogus_export_write_method_fails_a_deletion_run_naming_the_variable(
    environment: dict[str, str], tmp_path: Path
) -> None:
    variables, problem = bogus_write_method(tmp_path)
    deletion = dagster({**environment, **variables}, "execute", "-j", "data_deletion_job")
    output = deletion.stdout + deletion.stderr
    assert deletion.returncode != 0 and "RUN_FAILURE" in output
    assert "export_destination" in output and problem in output


@pytest.mark.parametrize("broken", BROKEN.values(), ids=BROKEN.keys())
def test_the_demo_runs_every_other_pipeline_and_fails_naming_a_location_that_did_not_load(
    broken: Callable[[Path], tuple[dict[str, str], str]], environment: dict[str, str], tmp_path: Path
) -> None:
    variables, problem = broken(tmp_path)
    demo = run(
        [sys.executable, "-m", "dags.demo", "--days", "1", "--until", "2024-03-15", "--events-per-day", "300"],
        {**environment, **variables},
    )
    assert demo.returncode == 1, demo.stdout[-3000:] + demo.stderr[-3000:]
    summary = demo.stderr.split("runs failed or were skipped:\n")[-1]
    failed = [line.strip() for line in summary.splitlines() if line.startswith("  ")]
    assert len(failed) == 1 and failed[0].startswith("data_exports location all days: did not load: "), failed
    assert problem in failed[0]
    # Every other pipeline ran: its tables hold the day's rows.
    tables = {line.split()[0]: line.split()[1] for line in demo.stdout.splitlines() if line.endswith(("B", "iB"))}
    assert {"events", "exchange_rate", "web_pre_aggregated_stats", "web_pre_aggregated_bounces"} <= tables.keys()
    assert all(rows != "0" for rows in tables.values()), tables
