"""One team's broken setting or file leaves the other teams' jobs loading and running through README's
management commands (``dagster job ... -m dags.definitions``), each in a fresh process as a user runs them."""

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
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
COUNT_RESTORED = """
from dags.common import clickhouse_resource
with clickhouse_resource().get_client() as client:
    print(client.command("SELECT count() FROM restored.events"))
"""
CREATE_EVENTS = """
from dags.common import clickhouse_resource
with clickhouse_resource().get_client() as client:
    client.command("CREATE TABLE events (uuid UUID, team_id Int64, timestamp DateTime64(6, 'UTC')) "
                   "ENGINE = MergeTree ORDER BY (team_id, uuid)")
    client.command("INSERT INTO events SELECT generateUUIDv4(), number % 3 + 1, now64() FROM numbers(1000)")
"""


@dataclass(frozen=True)
class Broken:
    """A broken setting or file, and what stands in for what it leaves out."""

    variables: dict[str, str]
    problem: str  # what the error says, naming the variable or the file's field
    left_out: str  # what the load's warning says is left out
    stand_in: str  # the job in its place, whose run fails naming the problem
    stand_in_says: str  # how that run's failure begins
    demo_says: str  # how bin/demo's line for it begins


def bogus_write_method(tmp_path: Path) -> Broken:
    """The deployment's own export setting: the whole data_exports location is left out."""
    return Broken(
        variables={"EXPORT_WRITE_METHOD": "bogus"},
        problem="EXPORT_WRITE_METHOD must be one of stream, clickhouse, got 'bogus'",
        left_out="Leaving out the data_exports location",
        stand_in="data_exports_failed_to_load",
        stand_in_says="The data_exports location did not load, so its jobs are missing: ",
        demo_says="data_exports location all days: did not load: ",
    )


def invalid_batch_exports_file(tmp_path: Path) -> Broken:
    """A team's batch export whose team id is a yes/no instead of a number: only the batch exports are left out."""
    path = tmp_path / "batch_exports.yaml"
    export = {"name": "team_x", "team_id": True, "dataset": "events", "destination": f"file://{tmp_path}/x"}
    path.write_text(yaml.safe_dump({"exports": [{**export, "interval": "day", "start": "2024-01-01"}]}))
    return Broken(
        variables={"BATCH_EXPORTS_FILE": str(path)},
        problem="exports[0] (team_x).team_id",
        left_out="Leaving out the batch exports",
        stand_in="batch_exports_failed_to_load",
        stand_in_says=f"The batch exports of {path} did not load, so their jobs are missing: ",
        demo_says=f"batch_exports_failed_to_load all days: The batch exports of {path} did not load",
    )


BROKEN = {"EXPORT_WRITE_METHOD=bogus": bogus_write_method, "invalid BATCH_EXPORTS_FILE": invalid_batch_exports_file}
DEPLOYMENT_EXPORT_JOBS = ("events_export_job", "web_pre_aggregated_exports_job")


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
    broken: Callable[[Path], Broken],
    environment: dict[str, str],
    s3_server: S3Server,
    tmp_path: Path,
) -> None:
    what = broken(tmp_path)
    env = {**environment, **what.variables}

    listing = dagster(env, "list")
    assert listing.returncode == 0, listing.stderr
    jobs = listed_jobs(listing.stdout)
    assert jobs >= {*PLATFORM_JOBS, *OTHER_TEAMS_JOBS, what.stand_in}
    said = listing.stdout + listing.stderr
    assert what.left_out in said and what.problem in said

    created = run([sys.executable, "-c", CREATE_EVENTS], env)
    assert created.returncode == 0, created.stderr
    backup = take_full_backup(env, tmp_path)
    assert backup.returncode == 0, backup.stdout[-3000:] + backup.stderr[-3000:]
    assert "RUN_SUCCESS" in backup.stdout + backup.stderr
    assert stored_full_backups(env, s3_server), "no finished full backup in the bucket"


def take_full_backup(env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """``clickhouse_backup_job`` as README runs it, asking for a full backup."""
    config = tmp_path / "backup.yaml"
    fast = {"poll_interval_seconds": 0.05}
    ops = {"take_clickhouse_backup": {"config": {"kind": "full", **fast}}, "verify_clickhouse_backup": {"config": fast}}
    config.write_text(yaml.safe_dump({"ops": ops}))
    return dagster(env, "execute", "-j", "clickhouse_backup_job", "-c", str(config))


def stored_full_backups(env: dict[str, str], s3_server: S3Server) -> list[str]:
    """The finished full backups in the bucket (ClickHouse writes ``.backup`` last)."""
    bucket = env["CLICKHOUSE_BACKUP_URL"].removeprefix("s3://").split("/")[0]
    keys = [item["Key"] for item in s3_server.client().list_objects_v2(Bucket=bucket).get("Contents", [])]
    return [key.split("/")[-2] for key in keys if key.endswith("-full/.backup")]


def test_two_broken_locations_each_get_a_stand_in_and_the_others_still_load(environment: dict[str, str]) -> None:
    listing = dagster({**environment, "EXPORT_WRITE_METHOD": "bogus", "EXCHANGE_RATE_SOURCE": "bogus"}, "list")
    assert listing.returncode == 0, listing.stderr
    jobs = listed_jobs(listing.stdout)
    assert jobs >= {*PLATFORM_JOBS, "web_analytics_daily_job"}
    assert jobs >= {"data_exports_failed_to_load", "revenue_analytics_failed_to_load"}
    assert "daily_exchange_rates_job" not in jobs and "events_export_job" not in jobs


def test_an_invalid_batch_exports_file_leaves_out_only_the_batch_exports(
    environment: dict[str, str], tmp_path: Path
) -> None:
    what = invalid_batch_exports_file(tmp_path)
    listing = dagster({**environment, **what.variables}, "list")
    assert listing.returncode == 0, listing.stderr
    jobs = listed_jobs(listing.stdout)
    assert jobs >= {*DEPLOYMENT_EXPORT_JOBS, "batch_exports_failed_to_load"}
    assert "data_exports_failed_to_load" not in jobs and "batch_export_team_x_job" not in jobs
    assert "Leaving out the data_exports location" not in listing.stdout + listing.stderr


@pytest.mark.parametrize("broken", BROKEN.values(), ids=BROKEN.keys())
def test_the_stand_in_of_a_broken_location_fails_its_run_naming_the_problem(
    broken: Callable[[Path], Broken], environment: dict[str, str], tmp_path: Path
) -> None:
    what = broken(tmp_path)
    stand_in = dagster({**environment, **what.variables}, "execute", "-j", what.stand_in)
    output = stand_in.stdout + stand_in.stderr
    assert stand_in.returncode != 0 and "RUN_FAILURE" in output
    assert what.stand_in_says in output and what.problem in output


def test_a_bogus_export_write_method_fails_a_deletion_run_naming_the_variable(
    environment: dict[str, str], tmp_path: Path
) -> None:
    what = bogus_write_method(tmp_path)
    deletion = dagster({**environment, **what.variables}, "execute", "-j", "data_deletion_job")
    output = deletion.stdout + deletion.stderr
    assert deletion.returncode != 0 and "RUN_FAILURE" in output
    assert "export_destination" in output and what.problem in output


@pytest.mark.parametrize("broken", BROKEN.values(), ids=BROKEN.keys())
def test_the_demo_runs_every_other_pipeline_and_fails_naming_a_location_that_did_not_load(
    broken: Callable[[Path], Broken], environment: dict[str, str], tmp_path: Path
) -> None:
    what = broken(tmp_path)
    demo = run(
        [sys.executable, "-m", "dags.demo", "--days", "1", "--until", "2024-03-15", "--events-per-day", "300"],
        {**environment, **what.variables},
    )
    assert demo.returncode == 1, demo.stdout[-3000:] + demo.stderr[-3000:]
    summary = demo.stderr.split("runs failed or were skipped:\n")[-1]
    failed = [line.strip() for line in summary.splitlines() if line.startswith("  ")]
    assert len(failed) == 1 and failed[0].startswith(what.demo_says), failed
    assert what.problem in failed[0]
    # Every other pipeline ran: its tables hold the day's rows.
    tables = {line.split()[0]: line.split()[1] for line in demo.stdout.splitlines() if line.endswith(("B", "iB"))}
    assert {"events", "exchange_rate", "web_pre_aggregated_stats", "web_pre_aggregated_bounces"} <= tables.keys()
    assert all(rows != "0" for rows in tables.values()), tables


# --- A bad data platform setting fails only the step (or tick) that reads it -------------------------------------

BAD_DELETION_SETTINGS = {
    "DATA_DELETION_MAX_REQUESTS_PER_RUN=4294967296": (
        "DATA_DELETION_MAX_REQUESTS_PER_RUN", "4294967296",
        "DATA_DELETION_MAX_REQUESTS_PER_RUN must be a whole number from 1 to 4294967295, got '4294967296'",
    ),
    "DATA_DELETION_MAX_WAIT_HOURS=abc": (
        "DATA_DELETION_MAX_WAIT_HOURS", "abc",
        "DATA_DELETION_MAX_WAIT_HOURS must be a whole number from 1 to 878400, got 'abc'",
    ),
    "DATA_DELETION_MUTATION_TIMEOUT_SECONDS=-1": (
        "DATA_DELETION_MUTATION_TIMEOUT_SECONDS", "-1",
        "DATA_DELETION_MUTATION_TIMEOUT_SECONDS must be a number of seconds greater than 0, got '-1'",
    ),
}  # fmt: skip
BAD_RETENTION = (
    "CLICKHOUSE_BACKUP_RETENTION_DAYS",
    "1000000000",
    "CLICKHOUSE_BACKUP_RETENTION_DAYS must be a whole number from 1 to 36600, got '1000000000'",
)
BAD_PLATFORM_SETTINGS = {**BAD_DELETION_SETTINGS, "CLICKHOUSE_BACKUP_RETENTION_DAYS=1000000000": BAD_RETENTION}
COUNT_EVENTS_AND_REQUESTS = """
import json
from dags.common import clickhouse_resource
with clickhouse_resource().get_client() as client:
    events = client.query_rows("SELECT team_id, count() AS rows FROM events GROUP BY team_id ORDER BY team_id")
    requests = client.query_rows("SELECT team_id, key_type, status FROM data_deletion_requests FINAL")
print(json.dumps({"events": {row["team_id"]: row["rows"] for row in events}, "requests": requests}, default=str))
"""


def events_and_requests(env: dict[str, str]) -> dict:
    counted = run([sys.executable, "-c", COUNT_EVENTS_AND_REQUESTS], env)
    assert counted.returncode == 0, counted.stderr
    return json.loads(counted.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("bad", BAD_PLATFORM_SETTINGS.values(), ids=BAD_PLATFORM_SETTINGS.keys())
def test_with_a_bad_data_platform_setting_every_platform_job_still_loads(
    bad: tuple[str, str, str], environment: dict[str, str]
) -> None:
    variable, value, _ = bad
    listing = dagster({**environment, variable: value}, "list")
    assert listing.returncode == 0, listing.stderr
    jobs = listed_jobs(listing.stdout)
    assert jobs >= {*PLATFORM_JOBS, *OTHER_TEAMS_JOBS, "events_export_job"}
    assert "data_platform_failed_to_load" not in jobs
    assert "Leaving out" not in listing.stdout + listing.stderr


def test_a_backup_runs_and_is_stored_with_a_bad_deletion_setting(
    environment: dict[str, str], s3_server: S3Server, tmp_path: Path
) -> None:
    variable, value, _ = BAD_DELETION_SETTINGS["DATA_DELETION_MAX_REQUESTS_PER_RUN=4294967296"]
    env = {**environment, variable: value}
    created = run([sys.executable, "-c", CREATE_EVENTS], env)
    assert created.returncode == 0, created.stderr

    backup = take_full_backup(env, tmp_path)

    assert backup.returncode == 0, backup.stdout[-3000:] + backup.stderr[-3000:]
    assert "RUN_SUCCESS" in backup.stdout + backup.stderr
    assert stored_full_backups(env, s3_server), "no finished full backup in the bucket"


@pytest.mark.parametrize("bad", BAD_DELETION_SETTINGS.values(), ids=BAD_DELETION_SETTINGS.keys())
def test_a_bad_deletion_setting_fails_the_deletion_run_naming_it_and_deletes_nothing(
    bad: tuple[str, str, str], environment: dict[str, str], tmp_path: Path
) -> None:
    variable, value, problem = bad
    created = run([sys.executable, "-c", CREATE_EVENTS], environment)
    assert created.returncode == 0, created.stderr
    request = tmp_path / "request.yaml"
    request.write_text(
        yaml.safe_dump({"ops": {"insert_deletion_request": {"config": {"team_id": 1, "key_type": "team", "key": ""}}}})
    )
    requested = dagster(environment, "execute", "-j", "request_data_deletion", "-c", str(request))
    assert requested.returncode == 0, requested.stdout[-3000:] + requested.stderr[-3000:]
    before = events_and_requests(environment)
    assert before["requests"] == [{"team_id": 1, "key_type": "team", "status": "pending"}]

    deletion = dagster({**environment, variable: value}, "execute", "-j", "data_deletion_job")

    output = deletion.stdout + deletion.stderr
    assert deletion.returncode != 0 and "RUN_FAILURE" in output
    assert problem in output
    assert "STEP_UP_FOR_RETRY" not in output  # retrying cannot mend a setting
    assert events_and_requests(environment) == before  # every event kept, the request still pending


def test_a_bad_wait_setting_fails_the_overdue_sensor_tick_naming_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from dagster import DagsterInstance, build_sensor_context

    from dags.common import ClickHouseResource, SettingError
    from dags.management.deletion.schedules import data_deletion_overdue_sensor

    variable, value, problem = BAD_DELETION_SETTINGS["DATA_DELETION_MAX_WAIT_HOURS=abc"]
    monkeypatch.setenv(variable, value)
    clickhouse = ClickHouseResource(url=f"chdb://{tmp_path / 'clickhouse'}")
    with DagsterInstance.ephemeral() as instance:
        with (
            build_sensor_context(instance=instance, resources={"clickhouse": clickhouse}) as context,
            pytest.raises(SettingError) as failed,
        ):
            data_deletion_overdue_sensor(context)
    assert str(failed.value) == problem


def test_a_bad_retention_fails_only_the_retention_step_after_the_backup_is_stored_and_a_restore_runs(
    environment: dict[str, str], s3_server: S3Server, tmp_path: Path
) -> None:
    variable, value, problem = BAD_RETENTION
    env = {**environment, variable: value}
    created = run([sys.executable, "-c", CREATE_EVENTS], env)
    assert created.returncode == 0, created.stderr

    backup = take_full_backup(env, tmp_path)

    output = backup.stdout + backup.stderr
    assert backup.returncode != 0 and "RUN_FAILURE" in output
    assert problem in output
    assert re.findall(r" - (\w+) - STEP_FAILURE", output) == ["apply_backup_retention"]
    assert {"take_clickhouse_backup", "verify_clickhouse_backup"} <= set(re.findall(r" - (\w+) - STEP_SUCCESS", output))
    assert stored_full_backups(env, s3_server), "the backup was not kept"

    restore = tmp_path / "restore.yaml"
    ops = {"restore_clickhouse_backup": {"config": {"target_database": "restored", "poll_interval_seconds": 0.05}}}
    restore.write_text(yaml.safe_dump({"ops": ops}))
    restored = dagster(env, "execute", "-j", "clickhouse_restore_job", "-c", str(restore))
    assert restored.returncode == 0, restored.stdout[-3000:] + restored.stderr[-3000:]
    counted = run([sys.executable, "-c", COUNT_RESTORED], env)
    assert counted.returncode == 0, counted.stderr
    assert counted.stdout.strip().splitlines()[-1] == "1000"
