"""Data deletion requests, carried through events, the pre-aggregates and the exports, on the embedded
ClickHouse with exports to a local folder, SeaweedFS (S3) and fake-gcs-server."""

import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from dagster import DagsterInstance, ExecuteInProcessResult
from dagster_aws.s3 import S3Resource
from dagster_gcp import GCSResource

from dags.common import ClickHouseClient, ClickHouseResource
from dags.events import generate_demo_events
from dags.exports.datasets import (
    EVENTS_DATASET,
    WEB_BOUNCES_DATASET,
    WEB_STATS_DATASET,
    ExportDataset,
    ExportWindow,
)
from dags.exports.manifest import DATA_FILE, MANIFEST_FILE
from dags.exports.publish import export_day
from dags.exports.resource import ExportDestination
from dags.management.deletion.jobs import data_deletion_job, request_data_deletion
from dags.management.deletion.requests import TABLE, create_requests_table, insert_request
from dags.tests.conftest import GCSServer, S3Server, wait_until
from dags.web_analytics.refresh import refresh_window
from dags.web_analytics.sql import PRE_AGGREGATES

pytestmark = pytest.mark.end_to_end  # see conftest: embedded only unless every_engine

DAYS = [date(2024, 3, 4), date(2024, 3, 5), date(2024, 3, 6)]
DATASETS: tuple[ExportDataset, ...] = (EVENTS_DATASET, WEB_STATS_DATASET, WEB_BOUNCES_DATASET)
EVENT_COLUMNS = "toString(uuid) AS uuid, event, properties, timestamp, team_id, distinct_id, " \
    "toString(person_id) AS person_id, `$session_id`, inserted_at"  # fmt: skip


@pytest.fixture(autouse=True)
def no_batch_exports(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No batch exports here (test_data_deletion_copies.py has them): the project's own batch_exports.yaml
    writes under the developer's .dagster_home, which a test must never rewrite."""
    path = tmp_path / "no_batch_exports.yaml"
    path.write_text("exports: []\n")
    monkeypatch.setenv("BATCH_EXPORTS_FILE", str(path))


# --- A warehouse with pre-aggregates and exports, and ways to look at it ------------------------------------


@dataclass
class Exports:
    """The destination the job gets, and everything it holds (relative path -> bytes)."""

    resource: ExportDestination
    list_files: Callable[[], dict[str, bytes]]


def local_exports(root: Path) -> Exports:
    def list_files() -> dict[str, bytes]:
        return {str(path.relative_to(root)): path.read_bytes() for path in root.rglob("*") if path.is_file()}

    return Exports(ExportDestination(url=root.as_uri()), list_files)


def s3_exports(server: S3Server) -> Exports:
    name = server.create_bucket("deletion")
    client = server.client()

    def list_files() -> dict[str, bytes]:
        listing = client.list_objects_v2(Bucket=name, Prefix="warehouse/").get("Contents", [])
        return {
            item["Key"].removeprefix("warehouse/"): client.get_object(Bucket=name, Key=item["Key"])["Body"].read()
            for item in listing
        }

    s3 = S3Resource(
        endpoint_url=server.endpoint_url,
        region_name=server.region,
        aws_access_key_id=server.access_key,
        aws_secret_access_key=server.secret_key,
    )
    return Exports(ExportDestination(url=f"s3://{name}/warehouse", s3=s3), list_files)


def gcs_exports(server: GCSServer) -> Exports:
    name = server.create_bucket("deletion")
    bucket = server.client().bucket(name)

    def list_files() -> dict[str, bytes]:
        return {
            blob.name.removeprefix("warehouse/"): blob.download_as_bytes()
            for blob in bucket.list_blobs(prefix="warehouse/")
        }

    return Exports(ExportDestination(url=f"gs://{name}/warehouse", gcs=GCSResource()), list_files)


@pytest.fixture(params=["file", "s3", "gcs"])
def exports(request: pytest.FixtureRequest, tmp_path: Path) -> Exports:
    if request.param == "file":
        return local_exports(tmp_path / "exports")
    if request.param == "s3":
        return s3_exports(request.getfixturevalue("s3_server"))
    return gcs_exports(request.getfixturevalue("gcs_server"))


def build_warehouse(clickhouse: ClickHouseResource, exports: Exports, export_days: list[date] = DAYS) -> None:
    """Three days of demo events of teams 1-3, both pre-aggregates computed and every dataset exported."""
    with clickhouse.get_client() as client:
        generate_demo_events(client, start_date=DAYS[0], days=len(DAYS), events=4_000, seed=7)
        for pre_aggregate in PRE_AGGREGATES:
            refresh_window(
                client, pre_aggregate, first_day=DAYS[0], end_day=DAYS[-1] + timedelta(days=1), run_id="setup"
            )
    destination = exports.resource.open()
    for dataset in DATASETS:
        for day in export_days:
            export_day(lambda: clickhouse.get_client(), exports.resource, destination, dataset, day, "setup-run")


def person_of_one_day(client: ClickHouseClient, day: date) -> tuple[int, str]:
    """(team, person) of the person with the most pageviews among those seen on ``day`` only."""
    row = client.query_rows(
        "SELECT team_id, toString(person_id) AS person FROM events GROUP BY team_id, person "
        "HAVING min(toDate(timestamp)) = {day:Date} AND max(toDate(timestamp)) = {day:Date} "
        "ORDER BY countIf(event = '$pageview') DESC, person LIMIT 1",
        {"day": day},
    )[0]
    return row["team_id"], row["person"]


def person_deletion_requested(clickhouse: ClickHouseResource, tmp_path: Path) -> tuple[Exports, int, str, str]:
    """A warehouse exported to a folder and a pending deletion of a person seen on ``DAYS[1]`` only: the
    exports, the team, the person and the request's id."""
    exports = local_exports(tmp_path / "exports")
    build_warehouse(clickhouse, exports)
    with clickhouse.get_client() as client:
        team, person = person_of_one_day(client, DAYS[1])
        request_id = insert_request(client, team, "person", person)
    return exports, team, person, request_id


def events_rows(client: ClickHouseClient) -> list[dict[str, Any]]:
    return client.query_rows(f"SELECT {EVENT_COLUMNS} FROM events ORDER BY uuid")


def pre_aggregate_rows(client: ClickHouseClient, day: date) -> dict[str, list[dict[str, Any]]]:
    """Each pre-aggregate's finalized rows of the day (what its export holds)."""
    window = ExportWindow.of_day(day)
    return {dataset.name: client.query_rows(dataset.query(), dataset.parameters(window)) for dataset in DATASETS[1:]}


def active_parts(client: ClickHouseClient) -> dict[tuple[str, str], list[str]]:
    """The active parts of each pre-aggregate's daily partitions: a rewritten day gets new parts."""
    rows = client.query_rows(
        "SELECT table, partition, groupArray(name) AS parts FROM system.parts "
        "WHERE database = currentDatabase() AND active AND table IN {tables:Array(String)} "
        "GROUP BY table, partition",
        {"tables": [pre_aggregate.table for pre_aggregate in PRE_AGGREGATES]},
    )
    return {(row["table"], row["partition"]): sorted(row["parts"]) for row in rows}


def request_rows(client: ClickHouseClient) -> list[dict[str, Any]]:
    return client.query_rows(
        f"SELECT request_id, team_id, key_type, key, status, reason, rows_deleted, days_recomputed, "
        f"files_rewritten, run_id, completed_at FROM {TABLE} FINAL ORDER BY created_at"
    )


def run_deletion(
    clickhouse: ClickHouseResource, exports: Exports, instance: DagsterInstance, dry_run: bool = False
) -> ExecuteInProcessResult:
    return data_deletion_job.execute_in_process(
        run_config={"ops": {"plan_deletions": {"config": {"dry_run": dry_run}}}},
        resources={"clickhouse": clickhouse, "export_destination": exports.resource},
        instance=instance,
        raise_on_error=False,
    )


def read_parquet(content: bytes) -> pa.Table:
    return pq.read_table(pa.BufferReader(content))


def data_files(files: dict[str, bytes]) -> list[str]:
    return sorted(path for path in files if Path(path).match("*/date=*/*.parquet"))


def output_metadata(result: ExecuteInProcessResult, op: str, output: str = "result") -> dict[str, Any]:
    for event in result.events_for_node(op):
        if event.is_successful_output and event.step_output_data.output_name == output:
            return {key: value.value for key, value in event.step_output_data.metadata.items()}
    raise AssertionError(f"{op} produced no {output}")


def assert_person_deleted_everywhere(
    clickhouse: ClickHouseResource,
    exports: Exports,
    before_events: list[dict[str, Any]],
    before_files: dict[str, bytes],
    before_parts: dict[tuple[str, str], list[str]],
    before_pre_aggregates: dict[date, dict[str, list[dict[str, Any]]]],
    team: int,
    person: str,
    day: date,
) -> None:
    """The person's events are gone from events, the pre-aggregates and the files of their day; nothing
    else changed."""
    with clickhouse.get_client() as client:
        expected = [row for row in before_events if not (row["team_id"] == team and row["person_id"] == person)]
        assert len(expected) < len(before_events)
        assert events_rows(client) == expected  # every other person and team, row by row

        after_parts = active_parts(client)
        partition = day.strftime("%Y%m%d")
        for key, parts in before_parts.items():
            if key[1] == partition:
                assert after_parts[key] != parts, f"{key} was not recomputed"
            else:
                assert after_parts[key] == parts, f"{key} was rewritten although the person had no event there"
        for other in DAYS:
            if other != day:
                assert pre_aggregate_rows(client, other) == before_pre_aggregates[other]
        recomputed = pre_aggregate_rows(client, day)
        assert recomputed != before_pre_aggregates[day]  # the person counted in them before
        # A fresh computation of the day from what is left in events gives the same numbers.
        for pre_aggregate in PRE_AGGREGATES:
            refresh_window(client, pre_aggregate, first_day=day, end_day=day + timedelta(days=1), run_id="fresh")
        assert pre_aggregate_rows(client, day) == recomputed
        left_that_day = client.command("SELECT count() FROM events WHERE toDate(timestamp) = {day:Date}", {"day": day})

    files = exports.list_files()
    assert data_files(files) == data_files(before_files)  # each day still exactly once, nothing added
    for path, content in before_files.items():
        if f"date={day}" not in path:
            assert files[path] == content, f"{path} was rewritten although its day did not change"
    for dataset in DATASETS:
        folder = f"{dataset.name}/date={day}"
        assert files[f"{folder}/{DATA_FILE}"] != before_files[f"{folder}/{DATA_FILE}"]
        manifest = json.loads(files[f"{folder}/{MANIFEST_FILE}"])
        assert manifest["rows"] == read_parquet(files[f"{folder}/{DATA_FILE}"]).num_rows
    rewritten = read_parquet(files[f"events/date={day}/{DATA_FILE}"])
    assert rewritten.num_rows == left_that_day  # complete: every remaining event of the day
    assert person not in rewritten.column("person_id").to_pylist()
    assert person in read_parquet(before_files[f"events/date={day}/{DATA_FILE}"]).column("person_id").to_pylist()


def snapshot(clickhouse: ClickHouseResource, exports: Exports) -> dict[str, Any]:
    with clickhouse.get_client() as client:
        return {
            "events": events_rows(client),
            "parts": active_parts(client),
            "pre_aggregates": {day: pre_aggregate_rows(client, day) for day in DAYS},
            "files": exports.list_files(),
        }


# --- Tests --------------------------------------------------------------------------------------------------


@pytest.mark.every_engine
def test_a_person_deletion_removes_exactly_their_events_from_events_pre_aggregates_and_exports(
    clickhouse: ClickHouseResource, exports: Exports, dagster_instance: DagsterInstance
) -> None:
    build_warehouse(clickhouse, exports)
    with clickhouse.get_client() as client:
        team, person = person_of_one_day(client, DAYS[1])
        their_rows = client.command(
            "SELECT count() FROM events WHERE person_id = toUUID({person:String})", {"person": person}
        )
    before = snapshot(clickhouse, exports)
    requested = request_data_deletion.execute_in_process(
        run_config={
            "ops": {"insert_deletion_request": {"config": {"team_id": team, "key_type": "person", "key": person}}}
        },
        resources={"clickhouse": clickhouse},
        instance=dagster_instance,
    )
    assert requested.success

    result = run_deletion(clickhouse, exports, dagster_instance)

    assert result.success
    assert_person_deleted_everywhere(
        clickhouse,
        exports,
        before["events"],
        before["files"],
        before["parts"],
        before["pre_aggregates"],
        team,
        person,
        DAYS[1],
    )
    with clickhouse.get_client() as client:
        [request] = request_rows(client)
    assert request["status"] == "done" and request["reason"] == ""
    assert (request["team_id"], request["key_type"], request["key"]) == (team, "person", person)
    assert request["rows_deleted"] == their_rows > 0
    assert request["days_recomputed"] == [DAYS[1]]
    assert sorted(request["files_rewritten"]) == sorted(
        f"{exports.resource.url}/{dataset.name}/date={DAYS[1]}/{DATA_FILE}" for dataset in DATASETS
    )
    assert request["run_id"] == result.run_id and request["completed_at"] is not None
    audit = output_metadata(result, "verify_and_complete")
    assert audit["requests_completed"] == 1 and audit["rows_deleted"] == their_rows
    assert (
        audit["audit"][0]["request_id"] == request["request_id"] == requested.output_for_node("insert_deletion_request")
    )


def test_a_team_deletion_removes_every_row_of_the_team_and_keeps_the_other_teams(
    clickhouse: ClickHouseResource, tmp_path: Path, dagster_instance: DagsterInstance
) -> None:
    exports = local_exports(tmp_path / "exports")
    build_warehouse(clickhouse, exports)
    with clickhouse.get_client() as client:
        before_events = events_rows(client)
        before_others = {day: pre_aggregate_rows(client, day) for day in DAYS}
        insert_request(client, 2, "team", "")

    result = run_deletion(clickhouse, exports, dagster_instance)

    assert result.success
    with clickhouse.get_client() as client:
        assert events_rows(client) == [row for row in before_events if row["team_id"] != 2]
        for day in DAYS:
            after = pre_aggregate_rows(client, day)
            for dataset, rows in after.items():
                assert rows == [row for row in before_others[day][dataset] if row["team_id"] != 2]
        [request] = request_rows(client)
    assert request["status"] == "done"
    assert request["rows_deleted"] == sum(row["team_id"] == 2 for row in before_events)
    assert request["days_recomputed"] == DAYS
    files = exports.list_files()
    for path in data_files(files):
        assert 2 not in read_parquet(files[path]).column("team_id").to_pylist(), path
    assert len(request["files_rewritten"]) == len(data_files(files)) == 9


def test_a_dry_run_reports_what_would_be_deleted_and_changes_nothing(
    clickhouse: ClickHouseResource, tmp_path: Path, dagster_instance: DagsterInstance
) -> None:
    exports = local_exports(tmp_path / "exports")
    build_warehouse(clickhouse, exports, export_days=DAYS[:2])  # the third day was never exported
    with clickhouse.get_client() as client:
        team, person = person_of_one_day(client, DAYS[1])
        their_rows = client.command(
            "SELECT count() FROM events WHERE person_id = toUUID({person:String})", {"person": person}
        )
        insert_request(client, team, "person", person)
        insert_request(client, 3, "team", "")
        team_rows_by_day = {
            row["day"]: row["rows"]
            for row in client.query_rows(
                "SELECT toString(toDate(timestamp)) AS day, count() AS rows FROM events WHERE team_id = 3 GROUP BY day"
            )
        }
        before_requests = request_rows(client)
    before = snapshot(clickhouse, exports)

    result = run_deletion(clickhouse, exports, dagster_instance, dry_run=True)

    assert result.success
    assert snapshot(clickhouse, exports) == before  # tables and files byte for byte
    with clickhouse.get_client() as client:
        assert request_rows(client) == before_requests
    assert {row["status"] for row in before_requests} == {"pending"}
    report = result.output_for_node("plan_deletions", "report")
    assert report["dry_run"] is True
    assert report["rows_to_delete"] == their_rows + sum(team_rows_by_day.values())
    by_request = {(item["team_id"], item["key_type"]): item["rows_by_day"] for item in report["requests"]}
    assert by_request[(team, "person")] == {DAYS[1].isoformat(): their_rows}
    assert by_request[(3, "team")] == team_rows_by_day
    assert report["days_to_recompute"] == [day.isoformat() for day in DAYS]
    expected_files = [
        f"{exports.resource.url}/{dataset.name}/date={day}/{DATA_FILE}" for dataset in DATASETS for day in DAYS[:2]
    ]
    assert sorted(report["files_to_rewrite"]) == sorted(expected_files)
    skipped = {event.node_name for event in result.all_events if event.is_step_skipped}
    assert "delete_requested_events" in skipped


def test_malformed_requests_are_rejected_with_their_reason_and_delete_nothing(
    clickhouse: ClickHouseResource, tmp_path: Path, dagster_instance: DagsterInstance
) -> None:
    exports = local_exports(tmp_path / "exports")
    with clickhouse.get_client() as client:
        generate_demo_events(client, start_date=DAYS[0], days=1, events=500, seed=3)
        before = events_rows(client)
        create_requests_table(client)
        for team, key_type, key in [(1, "user", ""), (1, "person", "not-a-uuid"), (99, "team", "")]:
            # SQL, as README documents: request_data_deletion would refuse the first two at request time.
            client.command(
                f"INSERT INTO {TABLE} (team_id, key_type, key, created_at) "
                "VALUES ({team:Int64}, {key_type:String}, {key:String}, now64(6, 'UTC'))",
                {"team": team, "key_type": key_type, "key": key},
            )

    result = run_deletion(clickhouse, exports, dagster_instance)

    assert not result.success  # a run that rejected requests says so
    with clickhouse.get_client() as client:
        assert events_rows(client) == before
        reasons = {(row["team_id"], row["key_type"]): (row["status"], row["reason"]) for row in request_rows(client)}
    assert reasons == {
        (1, "user"): ("rejected", "unknown key_type 'user': use one of person, team, properties"),
        (1, "person"): (
            "rejected",
            "key 'not-a-uuid' is not a person UUID (like 0190f2c4-8a4e-7a6b-9c1d-2e3f4a5b6c7d)",
        ),
        (99, "team"): ("rejected", "team 99 has no events"),
    }
    assert len(output_metadata(result, "plan_deletions", "report")["rejected"]) == 3

    again = run_deletion(clickhouse, exports, dagster_instance)
    assert again.success
    messages = [record.user_message for record in dagster_instance.all_logs(again.run_id)]
    assert "No pending deletion requests: nothing to do." in messages


def test_a_sql_insert_with_only_the_request_columns_makes_a_pending_request(
    clickhouse: ClickHouseResource, tmp_path: Path, dagster_instance: DagsterInstance
) -> None:
    exports = local_exports(tmp_path / "exports")
    run_deletion(clickhouse, exports, dagster_instance)  # the job creates the table when missing
    with clickhouse.get_client() as client:
        generate_demo_events(client, start_date=DAYS[0], days=1, events=300, seed=3)
        client.command(
            f"INSERT INTO {TABLE} (team_id, key_type, key, created_at) VALUES (1, 'team', '', now64(6, 'UTC'))"
        )
        [request] = request_rows(client)
    assert request["status"] == "pending" and request["rows_deleted"] == 0 and request["completed_at"] is None


KILLED_DELETION_SCRIPT = textwrap.dedent(
    """
    import sys
    from dagster import DagsterInstance
    from dags.common import ClickHouseResource
    from dags.exports.resource import ExportDestination
    from dags.management.deletion.jobs import data_deletion_job

    clickhouse_url, export_url, home = sys.argv[1:4]
    with DagsterInstance.ephemeral(tempdir=home) as instance:
        data_deletion_job.execute_in_process(
            resources={
                "clickhouse": ClickHouseResource(url=clickhouse_url),
                "export_destination": ExportDestination(url=export_url),
            },
            instance=instance,
        )
    """
)


def test_a_run_killed_after_the_delete_leaves_each_day_whole_and_the_rerun_finishes_the_job(
    clickhouse: ClickHouseResource, tmp_path: Path, dagster_instance: DagsterInstance
) -> None:
    exports = local_exports(tmp_path / "exports")
    build_warehouse(clickhouse, exports)
    with clickhouse.get_client() as client:
        team, person = person_of_one_day(client, DAYS[2])
        insert_request(client, team, "person", person)
    before = snapshot(clickhouse, exports)

    marker = tmp_path / "paused"
    process = subprocess.Popen(
        [sys.executable, "-c", KILLED_DELETION_SCRIPT, clickhouse.url, exports.resource.url, str(tmp_path / "home")],
        env={
            **os.environ,
            "DATA_DELETION_TEST_HOOK_PAUSE_AFTER": "delete_requested_events",
            "DATA_DELETION_TEST_HOOK_MARKER": str(marker),
        },
        start_new_session=True,
    )
    try:
        wait_until(lambda: marker.exists() or process.poll() is not None, 180, "the deletion to delete the events")
        assert process.poll() is None, "the deletion run ended before it was killed"
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)

    with clickhouse.get_client() as client:
        assert client.command("SELECT count() FROM events WHERE person_id = toUUID({p:String})", {"p": person}) == 0
        assert [row["status"] for row in request_rows(client)] == ["events_deleted"]
        # Not recomputed yet: every pre-aggregate day is as it was, whole.
        assert active_parts(client) == before["parts"]
    assert exports.list_files() == before["files"]  # every file as before, whole

    rerun = run_deletion(clickhouse, exports, dagster_instance)

    assert rerun.success
    assert output_metadata(rerun, "delete_requested_events")["mutations"] == 0  # not deleted twice
    assert_person_deleted_everywhere(
        clickhouse,
        exports,
        before["events"],
        before["files"],
        before["parts"],
        before["pre_aggregates"],
        team,
        person,
        DAYS[2],
    )
    with clickhouse.get_client() as client:
        [request] = request_rows(client)
    assert request["status"] == "done" and request["run_id"] == rerun.run_id and request["rows_deleted"] > 0


def test_the_sensor_runs_the_job_only_when_a_request_waited_too_long(
    clickhouse: ClickHouseResource, dagster_instance: DagsterInstance
) -> None:
    from dagster import RunRequest, SkipReason, build_sensor_context

    from dags.management.deletion.schedules import data_deletion_overdue_sensor

    def tick() -> RunRequest | SkipReason:
        with build_sensor_context(instance=dagster_instance, resources={"clickhouse": clickhouse}) as context:
            return data_deletion_overdue_sensor(context)

    assert isinstance(tick(), SkipReason)  # no table yet: nothing was ever requested
    with clickhouse.get_client() as client:
        insert_request(client, 1, "person", "3f1b2c4d-0000-4000-8000-000000000001")
    fresh = tick()
    assert isinstance(fresh, SkipReason) and "72 h" in str(fresh.skip_message)
    with clickhouse.get_client() as client:
        client.command(
            f"INSERT INTO {TABLE} (team_id, key_type, key, created_at) "
            "VALUES (1, 'team', '', now64(6, 'UTC') - toIntervalHour(73))"
        )
    overdue = tick()
    assert isinstance(overdue, RunRequest)


def test_the_weekly_schedule_skips_a_week_without_open_requests_and_runs_when_one_is_open(
    clickhouse: ClickHouseResource, dagster_instance: DagsterInstance
) -> None:
    from dagster import RunRequest, SkipReason, build_schedule_context

    from dags.management.deletion.requests import DONE, open_requests, write_status
    from dags.management.deletion.schedules import data_deletion_weekly_schedule

    def tick() -> RunRequest | SkipReason:
        with build_schedule_context(
            instance=dagster_instance,
            resources={"clickhouse": clickhouse},
            scheduled_execution_time=datetime(2026, 11, 29, 3, tzinfo=UTC),
        ) as context:
            return data_deletion_weekly_schedule(context)

    assert isinstance(tick(), SkipReason)  # no table yet: nothing was ever requested
    with clickhouse.get_client() as client:
        insert_request(client, 1, "person", "3f1b2c4d-0000-4000-8000-000000000001")
    assert isinstance(tick(), RunRequest)
    with clickhouse.get_client() as client:
        [request] = open_requests(client, limit=10)
        write_status(client, request, status=DONE)
    skipped = tick()
    assert isinstance(skipped, SkipReason) and "No open request" in str(skipped.skip_message)


def test_a_bad_wait_setting_fails_with_the_variable_name(monkeypatch: pytest.MonkeyPatch) -> None:
    from dags.common import SettingError
    from dags.management.deletion.settings import load_deletion_settings

    monkeypatch.setenv("DATA_DELETION_MAX_WAIT_HOURS", "soon")
    with pytest.raises(SettingError, match="DATA_DELETION_MAX_WAIT_HOURS"):
        load_deletion_settings()


def test_a_rewrite_that_writes_nothing_leaves_the_request_open_because_verification_reads_the_planned_files(
    clickhouse: ClickHouseResource, tmp_path: Path, dagster_instance: DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dags.management.deletion.ops as deletion_ops

    exports = local_exports(tmp_path)
    build_warehouse(clickhouse, exports)
    with clickhouse.get_client() as client:
        team, person = person_of_one_day(client, DAYS[1])
        insert_request(client, team_id=team, key_type="person", key=person)

    # A broken rewrite op: it takes no file in hand, writes nothing and reports nothing.
    def rewrite_nothing(*args: Any) -> list[str]:
        args[4].clear()
        return []

    monkeypatch.setattr(deletion_ops, "rewrite_files", rewrite_nothing)

    result = run_deletion(clickhouse, exports, dagster_instance)

    assert not result.success
    stale = read_parquet(exports.list_files()[f"{EVENTS_DATASET.name}/date={DAYS[1]}/{DATA_FILE}"])
    assert person in stale.column("person_id").to_pylist()
    with clickhouse.get_client() as client:
        [request] = request_rows(client)
    assert request["status"] != "done"


def test_a_delete_that_leaves_the_persons_rows_in_events_leaves_the_request_open(
    clickhouse: ClickHouseResource, tmp_path: Path, dagster_instance: DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dags.management.deletion.ops as deletion_ops

    exports = local_exports(tmp_path)
    build_warehouse(clickhouse, exports)
    with clickhouse.get_client() as client:
        team, person = person_of_one_day(client, DAYS[1])
        insert_request(client, team_id=team, key_type="person", key=person)
    # A broken delete step: it reports success and deletes nothing.
    monkeypatch.setattr(deletion_ops, "delete_events", lambda *args: [])

    result = run_deletion(clickhouse, exports, dagster_instance)

    assert not result.success
    with clickhouse.get_client() as client:
        left = client.command(
            "SELECT count() FROM events WHERE person_id = toUUID({person:String})", {"person": person}
        )
        [request] = request_rows(client)
    assert left > 0 and request["status"] != "done"
    [failure] = result.get_step_failure_events()
    assert failure.step_key == "verify_and_complete"
    assert f"{left:,} matching rows still in events" in str(failure.step_failure_data.user_failure_data.description)


def test_a_recompute_that_leaves_a_stale_pre_aggregate_day_leaves_the_request_open(
    clickhouse: ClickHouseResource, tmp_path: Path, dagster_instance: DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dags.management.deletion.ops as deletion_ops

    exports = local_exports(tmp_path)
    build_warehouse(clickhouse, exports)
    with clickhouse.get_client() as client:
        team, person = person_of_one_day(client, DAYS[1])
        insert_request(client, team_id=team, key_type="person", key=person)
    # A broken recompute step: it reports the days recomputed and leaves the pre-aggregates as they were.
    monkeypatch.setattr(deletion_ops, "recompute_days", lambda *args: {})

    result = run_deletion(clickhouse, exports, dagster_instance)

    assert not result.success
    with clickhouse.get_client() as client:
        [request] = request_rows(client)
    assert request["status"] != "done"
    [failure] = result.get_step_failure_events()
    description = str(failure.step_failure_data.user_failure_data.description)
    assert failure.step_key == "verify_and_complete" and f"{DAYS[1]}..{DAYS[1] + timedelta(days=1)}" in description
