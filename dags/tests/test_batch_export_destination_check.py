"""Each batch export's "check destination" job (``batch_export_<name>_check_destination``) proves on the real
servers (a folder, SeaweedFS S3, fake-gcs-server, PostgreSQL 15) that the export's destination takes writes with
its own credentials, leaves nothing behind, and says what to fix when it does not."""

import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from dagster import DagsterEventType, DagsterInstance, ExecuteInProcessResult, JobDefinition
from dagster._serdes import serialize_value

from dags.exports.batch_assets import build_batch_exports
from dags.exports.destination_check import PROBE_FOLDER
from dags.tests.conftest import GCSServer, PostgresServer, S3Server
from dags.tests.test_batch_exports import entry, failure_message, postgres_rows, postgres_url, s3_credentials


def check_jobs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *entries: dict[str, Any]) -> dict[str, JobDefinition]:
    """Declare these exports in a batch exports file and build their check jobs, by export name."""
    path = tmp_path / "batch_exports.yaml"
    path.write_text(yaml.safe_dump({"exports": list(entries)}))
    monkeypatch.setenv("BATCH_EXPORTS_FILE", str(path))
    jobs = build_batch_exports().jobs
    suffix = "_check_destination"
    return {
        job.name.removeprefix("batch_export_").removesuffix(suffix): job for job in jobs if job.name.endswith(suffix)
    }


def check(job: JobDefinition, instance: DagsterInstance) -> ExecuteInProcessResult:
    return job.execute_in_process(instance=instance, raise_on_error=False)


def checked(result: ExecuteInProcessResult) -> dict[str, Any]:
    """The check step's output metadata: what it checked."""
    [output] = [event for event in result.all_events if event.is_successful_output]
    return {key: value.value for key, value in output.event_specific_data.metadata.items()}


def retries(result: ExecuteInProcessResult) -> int:
    return sum(event.event_type == DagsterEventType.STEP_UP_FOR_RETRY for event in result.all_events)


def tree(root: Path) -> list[str]:
    return sorted(str(path.relative_to(root)) for path in root.rglob("*"))


def s3_keys(server: S3Server, bucket: str) -> list[str]:
    return sorted(item["Key"] for item in server.client().list_objects_v2(Bucket=bucket).get("Contents", []))


def gcs_keys(server: GCSServer, bucket: str) -> list[str]:
    return sorted(blob.name for blob in server.client().list_blobs(bucket))


# --- Reachable and writable: success, nothing left behind -------------------------------------------------


def test_a_folder_check_writes_and_removes_a_probe_and_never_creates_the_folder(
    dagster_instance: DagsterInstance, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    existing, missing = tmp_path / "acme", tmp_path / "later" / "globex"
    (existing / "events").mkdir(parents=True)
    (existing / "events" / "data.parquet").write_bytes(b"an earlier export")
    jobs = check_jobs(tmp_path, monkeypatch, entry("acme", 1, existing.as_uri()), entry("globex", 2, missing.as_uri()))
    before = tree(tmp_path)

    present, absent = check(jobs["acme"], dagster_instance), check(jobs["globex"], dagster_instance)

    assert present.success and absent.success, failure_message(present) + failure_message(absent)
    assert tree(tmp_path) == before  # no probe left, and the missing folder still missing
    assert checked(present)["folder"] == "exists" and checked(present)["destination"] == existing.as_uri()
    assert checked(absent)["folder"] == f"does not exist yet; the export creates it under {tmp_path}"


def test_s3_and_gcs_checks_put_and_delete_a_probe_object_under_the_prefix(
    dagster_instance: DagsterInstance,
    s3_server: S3Server,
    gcs_server: GCSServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    s3_bucket, gcs_bucket = s3_server.create_bucket("acme"), gcs_server.create_bucket("acme")
    s3_server.client().put_object(Bucket=s3_bucket, Key="posthog/events/date=2024-03-05/data.parquet", Body=b"x")
    gcs_server.client().bucket(gcs_bucket).blob("posthog/events/date=2024-03-05/data.parquet").upload_from_string("x")
    credentials = s3_credentials(monkeypatch, s3_server)
    jobs = check_jobs(
        tmp_path,
        monkeypatch,
        entry("to_s3", 3, f"s3://{s3_bucket}/posthog", credentials_env=credentials),
        entry("to_gcs", 3, f"gs://{gcs_bucket}/posthog"),
    )
    before = (s3_keys(s3_server, s3_bucket), gcs_keys(gcs_server, gcs_bucket))

    results = {name: check(jobs[name], dagster_instance) for name in ("to_s3", "to_gcs")}

    for name, result in results.items():
        assert result.success, (name, failure_message(result))
        assert checked(result)["checked"] == "put, listed and deleted a probe object"
    assert checked(results["to_s3"])["probe"].startswith(f"s3://{s3_bucket}/posthog/{PROBE_FOLDER}/")
    assert checked(results["to_gcs"])["probe"].startswith(f"gs://{gcs_bucket}/posthog/{PROBE_FOLDER}/")
    assert checked(results["to_s3"])["credentials_env"] == credentials  # the variables' names
    assert (s3_keys(s3_server, s3_bucket), gcs_keys(gcs_server, gcs_bucket)) == before
    logged = serialize_value(list(dagster_instance.all_logs(results["to_s3"].run_id)))
    assert s3_server.secret_key not in logged


def test_a_postgres_check_reads_privileges_and_writes_no_row(
    dagster_instance: DagsterInstance, postgres: PostgresServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    database = postgres.create_database("check")
    with psycopg.connect(host="127.0.0.1", port=postgres.port, user=postgres.user, dbname=database) as connection:
        connection.execute("CREATE TABLE acme_events (uuid uuid, timestamp timestamptz, team_id bigint)")
        connection.execute("INSERT INTO acme_events VALUES (gen_random_uuid(), now(), 1)")
    jobs = check_jobs(
        tmp_path,
        monkeypatch,
        entry("existing_table", 1, postgres_url(postgres, database, "acme_events")),
        entry("new_table", 1, postgres_url(postgres, database, "not_yet_made")),
    )

    existing, new = check(jobs["existing_table"], dagster_instance), check(jobs["new_table"], dagster_instance)

    assert existing.success and new.success, failure_message(existing) + failure_message(new)
    assert checked(existing)["checked"] == "connected; INSERT and DELETE on public.acme_events"
    assert checked(new)["checked"] == "connected; CREATE in schema public (the table not_yet_made does not exist yet)"
    assert checked(existing)["rows_written"] == 0 and "acme_events" in checked(existing)["destination"]
    assert postgres_rows(postgres, database, "SELECT count(*) FROM acme_events") == [(1,)]
    assert postgres_rows(postgres, database, "SELECT to_regclass('not_yet_made') IS NULL") == [(True,)]


# --- Refused: what to fix, no retry, no secret ------------------------------------------------------------


def test_a_bucket_that_does_not_exist_fails_naming_it_and_is_not_retried(
    dagster_instance: DagsterInstance, s3_server: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = f"missing-{uuid.uuid4().hex[:10]}"
    jobs = check_jobs(
        tmp_path,
        monkeypatch,
        entry("nowhere", 1, f"s3://{missing}/posthog", credentials_env=s3_credentials(monkeypatch, s3_server)),
    )

    result = check(jobs["nowhere"], dagster_instance)

    assert not result.success
    message = failure_message(result)
    assert f"Failure: nowhere: The bucket '{missing}' does not exist: create it" in message, message
    assert retries(result) == 0
    assert missing not in [bucket["Name"] for bucket in s3_server.client().list_buckets()["Buckets"]]


def test_wrong_s3_credentials_fail_naming_the_variable_and_never_showing_the_secret(
    dagster_instance: DagsterInstance, s3_server: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = s3_server.create_bucket("acme")
    wrong_secret = "wrong-secret-never-shown-0002"
    jobs = check_jobs(
        tmp_path,
        monkeypatch,
        entry(
            "wrong_keys", 1, f"s3://{bucket}/p", credentials_env=s3_credentials(monkeypatch, s3_server, wrong_secret)
        ),
    )

    result = check(jobs["wrong_keys"], dagster_instance)

    assert not result.success
    message = failure_message(result)
    assert "wrong_keys: The destination refused the credentials: check" in message, message
    assert "AWS_SECRET_ACCESS_KEY (in ACME_AWS_SECRET)" in message and retries(result) == 0
    logged = serialize_value(list(dagster_instance.all_logs(result.run_id)))
    logged += serialize_value(dagster_instance.get_run_by_id(result.run_id))
    assert wrong_secret not in message and wrong_secret not in logged
    assert s3_keys(s3_server, bucket) == []


def test_a_postgres_role_without_insert_fails_naming_the_privilege(
    dagster_instance: DagsterInstance, postgres: PostgresServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    database = postgres.create_database("check")
    role = f"reader_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(host="127.0.0.1", port=postgres.port, user=postgres.user, dbname=database) as connection:
        connection.execute(f"CREATE ROLE {role} LOGIN")
        connection.execute("CREATE TABLE acme_events (uuid uuid, timestamp timestamptz, team_id bigint)")
        connection.execute(f"GRANT SELECT, DELETE ON acme_events TO {role}")
    url = f"postgresql://{role}@127.0.0.1:{postgres.port}/{database}?table=acme_events"
    jobs = check_jobs(tmp_path, monkeypatch, entry("read_only", 1, url))

    result = check(jobs["read_only"], dagster_instance)

    assert not result.success
    message = failure_message(result)
    assert f"The Postgres user of postgresql://{role}@" in message, message
    assert "lacks INSERT on public.acme_events: grant it" in message and retries(result) == 0
    assert postgres_rows(postgres, database, "SELECT count(*) FROM acme_events") == [(0,)]


def test_each_export_has_a_check_job_with_its_owner_and_alert_channel_tags(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    jobs = check_jobs(
        tmp_path,
        monkeypatch,
        entry("routed", 1, (tmp_path / "a").as_uri(), alert_channel="#team-1-exports"),
        entry("plain", 2, (tmp_path / "b").as_uri()),
    )
    assert jobs["routed"].name == "batch_export_routed_check_destination"
    assert jobs["routed"].tags["owner"] == jobs["plain"].tags["owner"] == "team-data-exports"
    assert jobs["routed"].tags["alert_channel"] == "team-1-exports" and "alert_channel" not in jobs["plain"].tags
