"""Parquet exports: each day once, read back equal to the source, on a folder, real S3 and GCS servers."""

import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute
import pyarrow.parquet as pq
import pytest
from dagster import DagsterInstance, materialize
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG
from dagster_aws.s3 import S3Resource
from dagster_gcp import GCSResource

from dags.clickhouse.read_ahead import batches_of_exactly
from dags.common import ClickHouseResource
from dags.events import generate_demo_events
from dags.exports.assets import events_export, web_pre_aggregated_bounces_export, web_pre_aggregated_stats_export
from dags.exports.manifest import DATA_FILE, MANIFEST_FILE
from dags.exports.parquet import write_parquet
from dags.exports.resource import ExportDestination, export_destination_from_env, parse_destination_url
from dags.tests.conftest import GCSServer, S3Server, partition_metadata, wait_until
from dags.web_analytics.assets import web_pre_aggregated_bounces, web_pre_aggregated_stats

pytestmark = pytest.mark.end_to_end  # see conftest: embedded only unless every_engine

DAY = date(2024, 3, 5)
EVENT_COLUMNS = "toString(uuid) AS uuid, event, properties, timestamp, team_id, distinct_id, " \
    "toString(person_id) AS person_id, `$session_id`, inserted_at"  # fmt: skip


def load_events(clickhouse: ClickHouseResource, day: date, events: int, seed: int = 1, days: int = 1) -> None:
    with clickhouse.get_client() as client:
        generate_demo_events(client, start_date=day, days=days, events=events, seed=seed)


def source_rows(clickhouse: ClickHouseResource, day: date) -> list[dict[str, Any]]:
    """The day's events as the export must hold them (UUIDs as canonical strings), in a fixed order."""
    with clickhouse.get_client() as client:
        return client.query_rows(
            f"SELECT {EVENT_COLUMNS} FROM events WHERE toDate(timestamp) = {{day:Date}} ORDER BY uuid", {"day": day}
        )


# --- Destinations as a user would set them up, and a way to read back what they hold -----------------------


@dataclass
class Bucket:
    """A destination under test: the resource the assets get and a reader for what landed there."""

    url: str
    resource: ExportDestination
    list_files: Callable[[], dict[str, bytes]]  # relative path -> content, for everything under the URL


def local_bucket(root: Path, **options: Any) -> Bucket:
    def list_files() -> dict[str, bytes]:
        return {str(path.relative_to(root)): path.read_bytes() for path in root.rglob("*") if path.is_file()}

    url = root.as_uri()
    return Bucket(url, ExportDestination(url=url, s3=S3Resource(), gcs=GCSResource(), **options), list_files)


def s3_resource(server: S3Server, secret_key: str | None = None) -> S3Resource:
    return S3Resource(
        endpoint_url=server.endpoint_url,
        region_name=server.region,
        aws_access_key_id=server.access_key,
        aws_secret_access_key=secret_key or server.secret_key,
        max_attempts=2,
    )


def s3_bucket(server: S3Server, secret_key: str | None = None, **options: Any) -> Bucket:
    name = server.create_bucket("exports")
    client = server.client()

    def list_files() -> dict[str, bytes]:
        listing = client.list_objects_v2(Bucket=name, Prefix="warehouse/").get("Contents", [])
        return {
            item["Key"].removeprefix("warehouse/"): client.get_object(Bucket=name, Key=item["Key"])["Body"].read()
            for item in listing
        }

    url = f"s3://{name}/warehouse"
    resource = ExportDestination(url=url, s3=s3_resource(server, secret_key), gcs=GCSResource(), **options)
    return Bucket(url, resource, list_files)


def gcs_bucket(server: GCSServer) -> Bucket:
    name = server.create_bucket("exports")
    bucket = server.client().bucket(name)

    def list_files() -> dict[str, bytes]:
        return {
            blob.name.removeprefix("warehouse/"): blob.download_as_bytes()
            for blob in bucket.list_blobs(prefix="warehouse/")
        }

    url = f"gs://{name}/warehouse"
    return Bucket(url, ExportDestination(url=url, s3=S3Resource(), gcs=GCSResource()), list_files)


@pytest.fixture(params=["file", "s3", "gcs"])
def bucket(request: pytest.FixtureRequest, tmp_path: Path) -> Bucket:
    if request.param == "file":
        return local_bucket(tmp_path / "exports")
    if request.param == "s3":
        return s3_bucket(request.getfixturevalue("s3_server"))
    return gcs_bucket(request.getfixturevalue("gcs_server"))


def export(
    clickhouse: ClickHouseResource,
    destination: ExportDestination,
    instance: DagsterInstance,
    first: date,
    last: date | None = None,
) -> Any:
    """Materialize events_export for one day, or for a range of days in one run (as a backfill does)."""
    last = last or first
    tags = {}
    if last != first:
        tags = {ASSET_PARTITION_RANGE_START_TAG: first.isoformat(), ASSET_PARTITION_RANGE_END_TAG: last.isoformat()}
    return materialize(
        [events_export],
        partition_key=first.isoformat() if last == first else None,
        tags=tags,
        resources={"clickhouse": clickhouse, "export_destination": destination},
        instance=instance,
        raise_on_error=False,
    )


def read_parquet(content: bytes) -> pa.Table:
    return pq.read_table(pa.BufferReader(content))


def data_files(files: dict[str, bytes]) -> list[str]:
    """What a reader globbing ``*/date=*/*.parquet`` sees."""
    return sorted(path for path in files if Path(path).match("*/date=*/*.parquet"))


def failure_message(result: Any) -> str:
    """What the UI shows for the failed step: the error and its causes (retries wrap the original error)."""
    messages = []
    for event in result.all_events:
        if event.is_step_failure:
            error = event.step_failure_data.error
            while error is not None:
                messages.append(error.message)
                error = error.cause
    return "\n".join(messages)


def assert_manifest_matches(files: dict[str, bytes], folder: str) -> dict[str, Any]:
    import hashlib

    manifest = json.loads(files[f"{folder}/{MANIFEST_FILE}"])
    content = files[f"{folder}/{DATA_FILE}"]
    table = read_parquet(content)
    assert manifest["rows"] == table.num_rows
    assert manifest["bytes"] == len(content)
    if manifest["checksum"]["algorithm"] == "sha256":
        assert manifest["checksum"]["value"] == hashlib.sha256(content).hexdigest()
    assert manifest["schema"] == [
        {"name": f.name, "type": str(f.type), "nullable": f.nullable} for f in pq.read_schema(pa.BufferReader(content))
    ]
    assert manifest["date"] == folder.rsplit("=", 1)[1]
    return manifest


# --- Tests ----------------------------------------------------------------------------------------------


@pytest.mark.every_engine
def test_a_day_exports_once_reads_back_equal_and_a_rerun_changes_only_the_manifest_times(
    clickhouse: ClickHouseResource, dagster_instance: DagsterInstance, bucket: Bucket
) -> None:
    load_events(clickhouse, DAY - timedelta(days=1), 6_000, days=3)  # the neighbouring days must stay out

    first = export(clickhouse, bucket.resource, dagster_instance, DAY)
    assert first.success, failure_message(first)

    files = bucket.list_files()
    folder = f"events/date={DAY}"
    assert data_files(files) == [f"{folder}/{DATA_FILE}"]
    assert set(files) == {f"{folder}/{DATA_FILE}", f"{folder}/{MANIFEST_FILE}"}
    table = read_parquet(files[f"{folder}/{DATA_FILE}"])
    expected = source_rows(clickhouse, DAY)
    assert 0 < table.num_rows == len(expected) < 6_000
    assert table.sort_by("uuid").to_pylist() == expected
    assert str(table.schema.field("uuid").type) == "string"
    assert str(table.schema.field("timestamp").type) == "timestamp[us, tz=UTC]"
    metadata = pq.read_metadata(pa.BufferReader(files[f"{folder}/{DATA_FILE}"]))
    assert metadata.row_group(0).column(0).compression == "ZSTD"
    manifest = assert_manifest_matches(files, folder)
    assert manifest["run_id"] == first.run_id

    materialization = first.asset_materializations_for_node("events_export")[0]
    assert materialization.metadata["rows"].value == len(expected)
    assert materialization.metadata["files"].value == 1
    assert materialization.metadata["destination"].value == bucket.url

    second = export(clickhouse, bucket.resource, dagster_instance, DAY)
    assert second.success, failure_message(second)
    again = bucket.list_files()
    assert set(again) == set(files)
    assert again[f"{folder}/{DATA_FILE}"] == files[f"{folder}/{DATA_FILE}"]
    changed = {key for key, value in json.loads(again[f"{folder}/{MANIFEST_FILE}"]).items() if value != manifest[key]}
    assert changed == {"run_id", "exported_at"}


def test_a_backfill_range_writes_one_folder_per_day_including_empty_days(
    clickhouse: ClickHouseResource, dagster_instance: DagsterInstance, tmp_path: Path
) -> None:
    load_events(clickhouse, DAY, 3_000, days=2)
    bucket = local_bucket(tmp_path / "exports")

    result = export(clickhouse, bucket.resource, dagster_instance, DAY, DAY + timedelta(days=2))
    assert result.success, failure_message(result)

    files = bucket.list_files()
    days = [DAY + timedelta(days=offset) for offset in range(3)]
    assert data_files(files) == [f"events/date={day}/{DATA_FILE}" for day in days]
    counts = [read_parquet(files[f"events/date={day}/{DATA_FILE}"]).num_rows for day in days]
    assert counts[0] + counts[1] == 3_000 and counts[0] > 0 and counts[1] > 0
    assert counts[2] == 0  # a day without events still has its (empty) file: "exported, nothing happened"
    empty = read_parquet(files[f"events/date={days[2]}/{DATA_FILE}"])
    assert empty.schema == read_parquet(files[f"events/date={days[0]}/{DATA_FILE}"]).schema
    for day in days:
        assert_manifest_matches(files, f"events/date={day}")


def test_each_day_of_a_backfill_run_records_its_own_rows_bytes_and_file(
    clickhouse: ClickHouseResource, dagster_instance: DagsterInstance, tmp_path: Path
) -> None:
    days = [DAY + timedelta(days=offset) for offset in range(3)]
    load_events(clickhouse, days[0], 1_000, seed=5)
    load_events(clickhouse, days[1], 3_000, seed=6)  # the third day has no events
    bucket = local_bucket(tmp_path / "exports")

    result = export(clickhouse, bucket.resource, dagster_instance, days[0], days[-1])
    assert result.success, failure_message(result)

    files = bucket.list_files()
    expected_rows = [len(source_rows(clickhouse, day)) for day in days]
    assert len(set(expected_rows)) == 3 and expected_rows[2] == 0  # a run total repeated on each day cannot pass
    for day, rows in zip(days, expected_rows, strict=True):
        recorded = partition_metadata(dagster_instance, events_export.key, day.isoformat())
        content = files[f"events/date={day}/{DATA_FILE}"]
        assert recorded["rows"] == recorded["dagster/row_count"] == read_parquet(content).num_rows == rows
        assert (recorded["days"], recorded["files"], recorded["bytes"]) == (1, 1, len(content))
        assert list(recorded["files_written"]) == [day.isoformat()] and recorded["duration_seconds"] > 0
        assert recorded["destination"] == bucket.url


def test_one_failing_day_does_not_stop_the_others(
    clickhouse: ClickHouseResource, dagster_instance: DagsterInstance, tmp_path: Path
) -> None:
    load_events(clickhouse, DAY, 3_000, days=3)
    root = tmp_path / "exports"
    (root / "events").mkdir(parents=True)
    (root / "events" / f"date={DAY + timedelta(days=1)}").write_text("a file where the day's folder should be")
    bucket = local_bucket(root)

    result = export(clickhouse, bucket.resource, dagster_instance, DAY, DAY + timedelta(days=2))

    assert not result.success
    assert f"1 of 3 day(s) failed to export: {DAY + timedelta(days=1)}" in failure_message(result)
    assert data_files(bucket.list_files()) == [
        f"events/date={DAY}/{DATA_FILE}",
        f"events/date={DAY + timedelta(days=2)}/{DATA_FILE}",
    ]


@pytest.mark.every_engine
def test_clickhouse_writes_straight_to_s3_the_same_data_and_schema_as_streaming(
    clickhouse: ClickHouseResource, dagster_instance: DagsterInstance, s3_server: S3Server
) -> None:
    load_events(clickhouse, DAY, 4_000)
    direct = s3_bucket(s3_server, write_method="clickhouse")
    streamed = s3_bucket(s3_server)

    for bucket in (direct, streamed):
        result = export(clickhouse, bucket.resource, dagster_instance, DAY)
        assert result.success, failure_message(result)

    folder = f"events/date={DAY}"
    direct_files, streamed_files = direct.list_files(), streamed.list_files()
    assert data_files(direct_files) == [f"{folder}/{DATA_FILE}"]
    direct_table = read_parquet(direct_files[f"{folder}/{DATA_FILE}"])
    streamed_table = read_parquet(streamed_files[f"{folder}/{DATA_FILE}"])
    assert direct_table.schema.remove_metadata() == streamed_table.schema.remove_metadata()
    assert direct_table.sort_by("uuid").to_pylist() == source_rows(clickhouse, DAY)
    manifest = assert_manifest_matches(direct_files, folder)
    assert manifest["write_method"] == "clickhouse" and manifest["checksum"]["algorithm"] == "s3-etag"
    assert manifest["schema"] == json.loads(streamed_files[f"{folder}/{MANIFEST_FILE}"])["schema"]

    # Another Parquet reader, ClickHouse itself, reads the streamed file, and its UUID strings parse back.
    streamed_url = f"{s3_server.endpoint_url}/{streamed.url.removeprefix('s3://')}/{folder}/{DATA_FILE}"
    with clickhouse.get_client() as client:
        read_by_clickhouse = client.query_rows(
            "SELECT count() AS rows, uniqExact(toUUID(uuid)) AS uuids, max(timestamp) AS last "
            "FROM s3({url:String}, {key:String}, {secret:String}, 'Parquet')",
            {"url": streamed_url, "key": s3_server.access_key, "secret": s3_server.secret_key},
        )[0]
    assert read_by_clickhouse["rows"] == read_by_clickhouse["uuids"] == len(source_rows(clickhouse, DAY))
    assert read_by_clickhouse["last"] == max(streamed_table["timestamp"].to_pylist())

    rerun = export(clickhouse, direct.resource, dagster_instance, DAY)
    assert rerun.success, failure_message(rerun)
    assert set(direct.list_files()) == set(direct_files)


def event_log_text(instance: DagsterInstance, run_id: str) -> str:
    """Everything the run's event log holds (what the UI and its API show), as one text."""
    return "\n".join(repr(entry) for entry in instance.all_logs(run_id))


@pytest.mark.every_engine
@pytest.mark.parametrize("write_method", ["stream", "clickhouse"])
def test_refused_s3_credentials_fail_clearly_and_leave_the_previous_file(
    clickhouse: ClickHouseResource, dagster_instance: DagsterInstance, s3_server: S3Server, write_method: str
) -> None:
    load_events(clickhouse, DAY, 2_000)
    good = s3_bucket(s3_server)
    assert export(clickhouse, good.resource, dagster_instance, DAY).success
    before = good.list_files()
    load_events(clickhouse, DAY, 500, seed=2)  # new data the failed run must not half-write

    if write_method == "stream":  # a wrong secret: S3 refuses the first request, boto3's access check
        access_key, secret = s3_server.access_key, "wrong-secret-do-not-print"
    else:  # keys that may list the bucket but not write to it: the check passes, ClickHouse's own s3() write is refused
        access_key, secret = s3_server.read_only_access_key, s3_server.read_only_secret_key
    credentials = S3Resource(
        endpoint_url=s3_server.endpoint_url,
        region_name=s3_server.region,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret,
        max_attempts=2,
    )
    bad = ExportDestination(url=good.url, write_method=write_method, s3=credentials, gcs=GCSResource())
    result = export(clickhouse, bad, dagster_instance, DAY)

    assert not result.success
    assert not any(event.event_type_value == "STEP_UP_FOR_RETRY" for event in result.all_events), "not retried"
    message = failure_message(result)
    assert "S3 refused" in message and "AWS_SECRET_ACCESS_KEY" in message
    if write_method == "clickhouse":
        assert "S3 refused ClickHouse's write" in message and "Access Denied" in message, message
    assert secret not in message and s3_server.secret_key not in message
    assert secret not in event_log_text(dagster_instance, result.run_id)
    # A server keeps every statement in system.query_log (chDB keeps none); only the clickhouse method has
    # ClickHouse write to S3 with the secret bound into its s3() call.
    if write_method == "clickhouse" and not clickhouse.is_embedded:
        with clickhouse.get_client() as client:
            client.command("SYSTEM FLUSH LOGS")
            logged = client.query_rows(
                "SELECT query FROM system.query_log WHERE query LIKE '%INSERT INTO FUNCTION s3(%' "
                "AND current_database = currentDatabase()"
            )
        assert logged and not any(secret in row["query"] for row in logged)
    assert good.list_files() == before
    bucket_name = good.url.split("/")[2]
    assert s3_server.client().list_multipart_uploads(Bucket=bucket_name).get("Uploads", []) == []


# A run of events_export in its own process, killed by the test in the middle of its multipart upload.
KILLED_EXPORT_SCRIPT = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    import botocore.client
    from dagster import DagsterInstance, materialize
    from dagster_aws.s3 import S3Resource
    from dagster_gcp import GCSResource
    from dags.common import ClickHouseResource
    from dags.exports.assets import events_export
    from dags.exports.resource import ExportDestination

    clickhouse_url, endpoint, access_key, secret_key, url, day, marker = sys.argv[1:]
    original = botocore.client.BaseClient._make_api_call

    def stall_after_the_first_part(self, operation, params):
        if operation == "UploadPart" and params["PartNumber"] > 1:
            Path(marker).write_text("uploading")
            time.sleep(600)  # the test kills the process here
        return original(self, operation, params)

    botocore.client.BaseClient._make_api_call = stall_after_the_first_part
    destination = ExportDestination(
        url=url,
        part_size_bytes=5 * 1024 * 1024,
        s3=S3Resource(endpoint_url=endpoint, aws_access_key_id=access_key, aws_secret_access_key=secret_key),
        gcs=GCSResource(),
    )
    with DagsterInstance.ephemeral() as instance:
        materialize([events_export], partition_key=day, instance=instance,
                    resources={"clickhouse": ClickHouseResource(url=clickhouse_url), "export_destination": destination})
    """
)


def test_a_run_killed_mid_upload_leaves_the_previous_file_and_the_rerun_completes_it(
    clickhouse: ClickHouseResource, dagster_instance: DagsterInstance, s3_server: S3Server, tmp_path: Path
) -> None:
    load_events(clickhouse, DAY, 20_000)
    bucket = s3_bucket(s3_server, part_size_bytes=5 * 1024 * 1024)
    assert export(clickhouse, bucket.resource, dagster_instance, DAY).success
    previous = bucket.list_files()
    folder = f"events/date={DAY}"
    load_events(clickhouse, DAY, 120_000, seed=2)  # the new file is large enough for a multipart upload

    marker = tmp_path / "uploading"
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            KILLED_EXPORT_SCRIPT,
            clickhouse.url,
            s3_server.endpoint_url,
            s3_server.access_key,
            s3_server.secret_key,
            bucket.url,
            DAY.isoformat(),
            str(marker),
        ],
        env={**os.environ, "AWS_REGION": s3_server.region},
        start_new_session=True,
    )
    try:
        wait_until(lambda: marker.exists() or process.poll() is not None, 120, "the export to start uploading")
        assert process.poll() is None, "the export process ended before it was killed"
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)

    bucket_name = bucket.url.split("/")[2]
    uploads = s3_server.client().list_multipart_uploads(Bucket=bucket_name).get("Uploads", [])
    assert [upload["Key"] for upload in uploads] == [f"warehouse/{folder}/{DATA_FILE}"]
    after_kill = bucket.list_files()
    assert after_kill == previous  # readers still see the previous complete day
    assert read_parquet(after_kill[f"{folder}/{DATA_FILE}"]).num_rows == 20_000

    rerun = export(clickhouse, bucket.resource, dagster_instance, DAY)
    assert rerun.success, failure_message(rerun)
    assert s3_server.client().list_multipart_uploads(Bucket=bucket_name).get("Uploads", []) == []
    files = bucket.list_files()
    assert data_files(files) == [f"{folder}/{DATA_FILE}"]
    assert read_parquet(files[f"{folder}/{DATA_FILE}"]).num_rows == 140_000
    assert assert_manifest_matches(files, folder)["run_id"] == rerun.run_id
    logs = [record.user_message for record in dagster_instance.all_logs(rerun.run_id)]
    assert any("removed what an earlier run left" in message for message in logs)


def test_a_local_temporary_file_from_a_crashed_run_is_invisible_and_cleaned_up(
    clickhouse: ClickHouseResource, dagster_instance: DagsterInstance, tmp_path: Path
) -> None:
    load_events(clickhouse, DAY, 2_000)
    bucket = local_bucket(tmp_path / "exports")
    assert export(clickhouse, bucket.resource, dagster_instance, DAY).success
    folder = tmp_path / "exports" / "events" / f"date={DAY}"
    leftover = folder / ".data.parquet.0badc0de.inprogress"  # what a writer killed mid-file leaves
    leftover.write_bytes((folder / DATA_FILE).read_bytes()[:1000])
    assert data_files(bucket.list_files()) == [f"events/date={DAY}/{DATA_FILE}"]

    assert export(clickhouse, bucket.resource, dagster_instance, DAY).success
    assert not leftover.exists()
    assert sorted(path.name for path in folder.iterdir()) == [MANIFEST_FILE, DATA_FILE]


@pytest.mark.every_engine
def test_pre_aggregate_exports_hold_the_days_finalized_numbers_either_way_they_are_written(
    clickhouse: ClickHouseResource, dagster_instance: DagsterInstance, s3_server: S3Server, tmp_path: Path
) -> None:
    load_events(clickhouse, DAY - timedelta(days=1), 6_000, days=3)
    resources = {"clickhouse": clickhouse}
    upstream = materialize(
        [web_pre_aggregated_stats, web_pre_aggregated_bounces],
        partition_key=DAY.isoformat(),
        resources=resources,
        instance=dagster_instance,
    )
    assert upstream.success
    local, direct = local_bucket(tmp_path / "exports"), s3_bucket(s3_server, write_method="clickhouse")
    for bucket in (local, direct):
        result = materialize(
            [web_pre_aggregated_stats_export, web_pre_aggregated_bounces_export],
            partition_key=DAY.isoformat(),
            resources={**resources, "export_destination": bucket.resource},
            instance=dagster_instance,
            raise_on_error=False,
        )
        assert result.success, failure_message(result)

    with clickhouse.get_client() as client:
        pageviews = client.command(
            "SELECT count() FROM events WHERE event = '$pageview' AND toDate(timestamp) = {day:Date}", {"day": DAY}
        )
        sessions = client.query_rows(
            "SELECT count() AS rows, sumMerge(total_session_count_state) AS sessions, "
            "sumMerge(bounces_count_state) AS bounces, sumMerge(total_session_duration_state) AS duration "
            "FROM (SELECT * FROM web_pre_aggregated_bounces WHERE toDate(period_bucket) = {day:Date})",
            {"day": DAY},
        )[0]
    local_files, direct_files = local.list_files(), direct.list_files()
    assert data_files(local_files) == [
        f"web_pre_aggregated_bounces/date={DAY}/{DATA_FILE}",
        f"web_pre_aggregated_stats/date={DAY}/{DATA_FILE}",
    ]
    stats = read_parquet(local_files[f"web_pre_aggregated_stats/date={DAY}/{DATA_FILE}"])
    bounces = read_parquet(local_files[f"web_pre_aggregated_bounces/date={DAY}/{DATA_FILE}"])
    assert {"persons", "sessions", "pageviews", "pathname", "host", "team_id"} <= set(stats.column_names)
    assert not any(name.endswith("_state") for name in stats.column_names + bounces.column_names)
    assert pa.compute.sum(stats["pageviews"]).as_py() == pageviews > 0
    assert pa.compute.sum(bounces["total_session_count"]).as_py() == sessions["sessions"] > 0
    assert pa.compute.sum(bounces["bounces"]).as_py() == sessions["bounces"]
    assert pa.compute.sum(bounces["total_session_duration"]).as_py() == sessions["duration"]
    assert {value.date() for value in stats["period_bucket"].to_pylist()} == {DAY}
    assert str(stats.schema.field("period_bucket").type) == "timestamp[ms, tz=UTC]"
    for dataset in ("web_pre_aggregated_stats", "web_pre_aggregated_bounces"):
        folder = f"{dataset}/date={DAY}"
        assert_manifest_matches(local_files, folder)
        assert_manifest_matches(direct_files, folder)
        # ClickHouse's own Parquet writer and the streamed one give the same columns, types and rows.
        direct_table = read_parquet(direct_files[f"{folder}/{DATA_FILE}"])
        assert direct_table.equals(read_parquet(local_files[f"{folder}/{DATA_FILE}"]))


def test_the_file_does_not_depend_on_how_clickhouse_cuts_its_blocks(
    clickhouse: ClickHouseResource, dagster_instance: DagsterInstance, tmp_path: Path
) -> None:
    load_events(clickhouse, DAY, 6_000)
    small, large = local_bucket(tmp_path / "small", batch_rows=250), local_bucket(tmp_path / "large")
    for bucket in (small, large):
        result = export(clickhouse, bucket.resource, dagster_instance, DAY)
        assert result.success, failure_message(result)
    path = f"events/date={DAY}/{DATA_FILE}"
    small_table, large_table = read_parquet(small.list_files()[path]), read_parquet(large.list_files()[path])
    assert small_table.num_rows == large_table.num_rows == 6_000
    assert small_table.equals(large_table)
    assert small.list_files()[path] == large.list_files()[path]


def test_row_groups_do_not_depend_on_how_the_stream_was_cut(tmp_path: Path) -> None:
    table = pa.table({"n": pa.array(range(2_500), pa.int64()), "s": pa.array([f"row {i}" for i in range(2_500)])})
    files = []
    for cut in (7, 1_000, 2_500):
        path = tmp_path / f"cut-{cut}.parquet"
        write_parquet(batches_of_exactly(iter(table.to_batches(max_chunksize=cut)), 1_000), path, lambda: table.schema)
        files.append(path.read_bytes())
    assert files[0] == files[1] == files[2]
    metadata = pq.read_metadata(tmp_path / "cut-7.parquet")
    assert [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)] == [1_000, 1_000, 500]
    assert pq.read_table(tmp_path / "cut-7.parquet").equals(table)
    assert list(batches_of_exactly(iter([]), 10)) == []


def test_unique_valued_columns_are_written_without_a_dictionary(tmp_path: Path) -> None:
    table = pa.table({"uuid": [f"id-{i}" for i in range(3_000)], "event": ["$pageview", "$autocapture"] * 1_500})
    path = tmp_path / "day.parquet"
    write_parquet(batches_of_exactly(iter(table.to_batches()), 1_000), path, lambda: table.schema, {"uuid"})
    columns = pq.read_metadata(path).row_group(0)
    encodings = {columns.column(i).path_in_schema: columns.column(i).encodings for i in range(columns.num_columns)}
    assert "RLE_DICTIONARY" not in encodings["uuid"] and "RLE_DICTIONARY" in encodings["event"]
    assert pq.read_table(path).equals(table)


def test_destination_urls_are_checked_and_debug_forces_the_local_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse_destination_url("s3://bucket/some/prefix/") == ("s3", "bucket", "some/prefix")
    assert parse_destination_url("gs://bucket") == ("gs", "bucket", "")
    assert parse_destination_url("file:///data/exports") == ("file", "/data/exports", "")
    for bad, reason in [
        ("s3://AKIA:secret@bucket/prefix", "must not carry credentials"),
        ("ftp://host/path", "not supported"),
        ("s3:///prefix", "names no bucket"),
        ("file://relative/path", "absolute path"),
    ]:
        with pytest.raises(ValueError, match=reason):
            parse_destination_url(bad)

    monkeypatch.setenv("EXPORT_DESTINATION_URL", "s3://our-exports/warehouse")
    monkeypatch.setenv("EXPORT_WRITE_METHOD", "clickhouse")
    assert export_destination_from_env().url == "s3://our-exports/warehouse"
    assert export_destination_from_env().write_method == "clickhouse"
    monkeypatch.setenv("DEBUG", "1")
    local = export_destination_from_env()
    assert local.url.startswith("file://") and local.url.endswith("/exports") and local.write_method == "stream"
    monkeypatch.delenv("DEBUG")
    monkeypatch.setenv("EXPORT_WRITE_METHOD", "sideways")
    with pytest.raises(ValueError, match="EXPORT_WRITE_METHOD must be one of stream, clickhouse"):
        export_destination_from_env()


def test_clickhouse_write_method_on_a_folder_fails_before_writing(
    clickhouse: ClickHouseResource, dagster_instance: DagsterInstance, tmp_path: Path
) -> None:
    load_events(clickhouse, DAY, 100)
    bucket = local_bucket(tmp_path / "exports", write_method="clickhouse")
    result = export(clickhouse, bucket.resource, dagster_instance, DAY)
    assert not result.success
    assert "write_method=clickhouse writes to S3 only" in failure_message(result)
    assert bucket.list_files() == {}
