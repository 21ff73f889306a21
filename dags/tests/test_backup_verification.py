"""`clickhouse_backup_job` proves every backup by restoring it: a backup that does not restore, or restores other
rows than the source held, fails the job with README's message and leaves no scratch database behind.

The damage is done from the test, between the backup and its verification (the backup's objects in the bucket,
or the source table between its fingerprint and ``BACKUP``); the job and its verification run unchanged."""

from collections.abc import Callable
from typing import Any

import pytest
from dagster import DagsterInstance, ExecuteInProcessResult

from dags.common import ClickHouseClient, ClickHouseResource
from dags.management.backups import backup as backup_module
from dags.management.backups import jobs
from dags.management.backups.jobs import clickhouse_backup_job
from dags.tests.conftest import S3Server

FAST = {"poll_interval_seconds": 0.05}
CREATE_EVENTS = """
CREATE TABLE events (uuid UUID, event String, timestamp DateTime64(6, 'UTC'), team_id Int64)
ENGINE = MergeTree PARTITION BY toYYYYMM(timestamp) ORDER BY (team_id, uuid)
"""
INSERT_EVENTS = """
INSERT INTO events
SELECT generateUUIDv4(), ['$pageview', '$autocapture', '$pageleave'][number % 3 + 1],
       toDateTime64('2026-11-01 00:00:00', 6, 'UTC') + toIntervalSecond(number * 37), number % 4 + 1
FROM numbers(5000)
"""
CONTENTS = "SELECT count() AS rows, sum(cityHash64(*)) AS checksum FROM events"


@pytest.fixture
def backup_url(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> str:
    """Backups go to a fresh bucket, configured the way production is: CLICKHOUSE_BACKUP_URL and AWS_*."""
    url = f"s3://{s3_server.create_bucket('backups')}/backups"
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_key)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server.endpoint_url)
    monkeypatch.setenv("AWS_REGION", s3_server.region)
    monkeypatch.setenv("CLICKHOUSE_BACKUP_URL", url)
    return url


@pytest.fixture
def events(ch: ClickHouseClient) -> ClickHouseClient:
    ch.command(CREATE_EVENTS)
    ch.command(INSERT_EVENTS)
    return ch


def run_backup_job(clickhouse: ClickHouseResource, instance: DagsterInstance) -> ExecuteInProcessResult:
    from dags.management.backups import backup_storage_from_env

    return clickhouse_backup_job.execute_in_process(
        run_config={
            "ops": {
                "take_clickhouse_backup": {"config": {"kind": "full", **FAST}},
                "verify_clickhouse_backup": {"config": FAST},
            }
        },
        resources={"clickhouse": clickhouse, "backup_storage": backup_storage_from_env()},
        instance=instance,
        raise_on_error=False,
    )


def failure(result: ExecuteInProcessResult) -> tuple[str, str]:
    """The failed step and its message, as the run's page shows them."""
    failed = [event for event in result.all_events if event.is_step_failure]
    assert not result.success and failed, "the backup job was expected to fail"
    data = failed[0].step_failure_data
    assert data.user_failure_data is not None, data.error.message  # a Failure raised by the op, not a crash
    return failed[0].step_key, data.user_failure_data.description


def backup_keys(s3_server: S3Server, backup_url: str) -> list[str]:
    bucket = backup_url.removeprefix("s3://").split("/")[0]
    listing = s3_server.client().list_objects_v2(Bucket=bucket, Prefix="backups/")
    return [item["Key"] for item in listing.get("Contents", [])]


def backup_name(keys: list[str]) -> str:
    names = {key.split("/")[1] for key in keys}
    assert len(names) == 1, names
    return names.pop()


def scratch_databases(ch: ClickHouseClient) -> list[str]:
    return [row["name"] for row in ch.query_rows("SELECT name FROM system.databases WHERE name LIKE 'backup_verify_%'")]


def contents(ch: ClickHouseClient) -> tuple[int, int]:
    row = ch.query_rows(CONTENTS)[0]
    return int(row["rows"]), int(row["checksum"])


def change_source_after_its_fingerprint(monkeypatch: pytest.MonkeyPatch, statement: str) -> None:
    """Run ``statement`` on the source right after the job fingerprints it, before ``BACKUP`` reads it."""
    real = backup_module.fingerprint

    def fingerprint_then_change(client: ClickHouseClient, *args: Any) -> Any:
        taken = real(client, *args)
        client.command(statement)
        return taken

    monkeypatch.setattr(backup_module, "fingerprint", fingerprint_then_change)


def damage_before_verification(monkeypatch: pytest.MonkeyPatch, damage: Callable[[], None]) -> None:
    """Run ``damage`` once the backup is written, right before the job's verification starts."""
    real = jobs.verify_backup

    def damaged_then_verified(*args: Any, **kwargs: Any) -> Any:
        damage()
        return real(*args, **kwargs)

    monkeypatch.setattr(jobs, "verify_backup", damaged_then_verified)


@pytest.mark.parametrize(
    "change",
    [
        "INSERT INTO events SELECT generateUUIDv4(), '$pageview', now64(6, 'UTC'), 1 FROM numbers(3)",
        # As many rows as before, one of them different: only the checksum of whole rows sees it.
        "ALTER TABLE events UPDATE event = '$changed' WHERE event = '$pageleave' AND team_id = 2",
    ],
    ids=["rows added", "a row changed"],
)
def test_a_backup_that_restores_other_rows_than_its_fingerprint_fails_the_job_naming_the_numbers(
    change: str,
    clickhouse: ClickHouseResource,
    events: ClickHouseClient,
    backup_url: str,
    s3_server: S3Server,
    dagster_instance: DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    before = contents(events)
    change_source_after_its_fingerprint(monkeypatch, change)

    result = run_backup_job(clickhouse, dagster_instance)

    after = contents(events)
    assert after != before
    url = f"{backup_url}/{backup_name(backup_keys(s3_server, backup_url))}"
    assert failure(result) == (
        "verify_clickhouse_backup",
        f"Backup {url} restores different data: events: {after[0]} rows (checksum {after[1]}) restored, "
        f"{before[0]} rows (checksum {before[1]}) in the source at backup time",
    )
    assert scratch_databases(events) == []


def events_data_file(s3_server: S3Server, backup_url: str) -> str:
    return next(key for key in backup_keys(s3_server, backup_url) if "/events/" in key and key.endswith("data.bin"))


def delete(s3_server: S3Server, bucket: str, key: str) -> None:
    s3_server.client().delete_object(Bucket=bucket, Key=key)


def zero(s3_server: S3Server, bucket: str, key: str) -> None:
    """Overwrite the object with as many zero bytes: the size stays, the contents are gone."""
    size = s3_server.client().head_object(Bucket=bucket, Key=key)["ContentLength"]
    s3_server.client().put_object(Bucket=bucket, Key=key, Body=b"\x00" * size)


@pytest.mark.parametrize(
    ("damage", "message", "engine_says"),
    [
        (delete, "does not restore: Restore of {name} for verification failed: ", "HTTP response code: 404"),
        (zero, "restores unreadable data: ", "DB::Exception"),
    ],
    ids=["a missing file", "a zeroed file"],
)
def test_a_damaged_backup_fails_the_job_with_its_documented_message_and_leaves_no_scratch_database(
    damage: Callable[[S3Server, str, str], None],
    message: str,
    engine_says: str,
    clickhouse: ClickHouseResource,
    events: ClickHouseClient,
    backup_url: str,
    s3_server: S3Server,
    dagster_instance: DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bucket = backup_url.removeprefix("s3://").split("/")[0]
    damaged: list[str] = []

    def damage_the_events_data() -> None:
        damaged.extend(
            key for key in backup_keys(s3_server, backup_url) if "/events/" in key and key.endswith("data.bin")
        )
        for key in damaged:
            damage(s3_server, bucket, key)

    damage_before_verification(monkeypatch, damage_the_events_data)

    result = run_backup_job(clickhouse, dagster_instance)

    assert damaged, "the backup holds no data file of events to damage"
    name = backup_name(backup_keys(s3_server, backup_url))
    step, said = failure(result)
    expected = f"Backup {backup_url}/{name} {message.format(name=name)}"
    assert step == "verify_clickhouse_backup"
    assert said.startswith(expected) and engine_says in said.removeprefix(expected), said
    assert scratch_databases(events) == []
