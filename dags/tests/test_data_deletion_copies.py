"""A deletion reaches every copy the project made: the deployment's exports and every batch export of the
request's team declared in BATCH_EXPORTS_FILE (a folder, SeaweedFS S3, fake-gcs-server, PostgreSQL), planned,
dry-run reported, verified by reading each copy back, and listed in the audit record."""

from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from dagster import AssetKey, AssetsDefinition, DagsterInstance, ExecuteInProcessResult

from dags.common import ClickHouseResource
from dags.exports.manifest import DATA_FILE
from dags.management.deletion.jobs import request_data_deletion
from dags.management.deletion.requests import insert_request
from dags.tests.conftest import GCSServer, PostgresServer, S3Server
from dags.tests.test_batch_exports import declare, entry, failure_message, postgres_rows, postgres_url, run
from dags.tests.test_batch_exports import s3_credentials as export_s3_credentials
from dags.tests.test_data_deletion import (
    DAYS,
    build_warehouse,
    local_exports,
    person_of_one_day,
    request_rows,
    run_deletion,
)
from dags.tests.test_data_deletion_changes import deletion_records

PERSON_DAY = DAYS[1]
FIRST, LAST = DAYS[0].isoformat(), DAYS[-1].isoformat()

Files = Callable[[], dict[str, bytes]]


def folder_files(root: Path) -> Files:
    return lambda: {str(path.relative_to(root)): path.read_bytes() for path in root.rglob("*.parquet")}


def s3_files(server: S3Server, bucket: str, prefix: str) -> Files:
    client = server.client()

    def files() -> dict[str, bytes]:
        listing = client.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/").get("Contents", [])
        return {
            item["Key"].removeprefix(f"{prefix}/"): client.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
            for item in listing
            if item["Key"].endswith(".parquet")
        }

    return files


def gcs_files(server: GCSServer, bucket: str, prefix: str) -> Files:
    blobs = server.client().bucket(bucket)
    return lambda: {
        blob.name.removeprefix(f"{prefix}/"): blob.download_as_bytes()
        for blob in blobs.list_blobs(prefix=f"{prefix}/")
        if blob.name.endswith(".parquet")
    }


def rows(content: bytes) -> list[dict[str, Any]]:
    return sorted(pq.read_table(pa.BufferReader(content)).to_pylist(), key=lambda row: row["uuid"])


def of_day(files: dict[str, bytes], day: date) -> dict[str, bytes]:
    return {path: content for path, content in files.items() if f"date={day}" in path}


def exported(
    assets: dict[str, AssetsDefinition],
    clickhouse: ClickHouseResource,
    instance: DagsterInstance,
    name: str,
    days: list[date] = DAYS,
    hourly: bool = False,
) -> None:
    """Materialize a batch export for each of ``days`` (as its schedule would have)."""
    for day in days:
        if hourly:
            result = run(assets[name], clickhouse, instance, first=f"{day}-00:00", last=f"{day}-23:00")
        else:
            result = run(assets[name], clickhouse, instance, day.isoformat())
        assert result.success, failure_message(result)


def pg_uuids(server: PostgresServer, database: str, table: str, person: str | None = None) -> set[str]:
    where = f" WHERE person_id = '{person}'" if person else ""
    return {str(row[0]) for row in postgres_rows(server, database, f"SELECT uuid FROM {table}{where}")}


def failure_description(result: ExecuteInProcessResult) -> str:
    [failure] = result.get_step_failure_events()
    assert failure.step_key == "verify_and_complete"
    return str(failure.step_failure_data.user_failure_data.description)


# --- Every copy, planned, dry-run reported, rewritten, verified, audited -------------------------------------


def test_a_person_deletion_reaches_every_batch_export_of_their_team_and_the_audit_lists_every_place(
    clickhouse: ClickHouseResource,
    dagster_instance: DagsterInstance,
    s3_server: S3Server,
    gcs_server: GCSServer,
    postgres: PostgresServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    deployment = local_exports(tmp_path / "exports")
    build_warehouse(clickhouse, deployment)
    with clickhouse.get_client() as client:
        team, person = person_of_one_day(client, PERSON_DAY)
    other = next(candidate for candidate in (1, 2, 3) if candidate != team)
    s3_bucket, gcs_bucket = s3_server.create_bucket("copies"), gcs_server.create_bucket("copies")
    database = postgres.create_database("copies")
    folder, other_folder = tmp_path / "batch" / "team", tmp_path / "batch" / "other"
    assets = declare(
        tmp_path,
        monkeypatch,
        entry("team_folder", team, folder.as_uri()),
        entry(
            "team_s3",
            team,
            f"s3://{s3_bucket}/acme",
            interval="hour",
            credentials_env=export_s3_credentials(monkeypatch, s3_server),
        ),
        entry("team_gcs", team, f"gs://{gcs_bucket}/acme"),
        entry("team_pg", team, postgres_url(postgres, database, "team_events")),
        # Never exported on the person's day: the deletion must not create that day.
        entry("team_pg_gaps", team, postgres_url(postgres, database, "team_gaps")),
        entry("team_folder_gaps", team, (tmp_path / "batch" / "gaps").as_uri()),
        # Declared, never run: its folder and its table do not exist yet.
        entry("team_folder_never", team, (tmp_path / "batch" / "never").as_uri()),
        entry("team_pg_never", team, postgres_url(postgres, database, "team_never")),
        entry("other_folder", other, other_folder.as_uri()),
    )
    for name in ("team_folder", "team_gcs", "team_pg", "other_folder"):
        exported(assets, clickhouse, dagster_instance, name)
    exported(assets, clickhouse, dagster_instance, "team_s3", hourly=True)
    for name in ("team_pg_gaps", "team_folder_gaps"):
        exported(assets, clickhouse, dagster_instance, name, days=[DAYS[0], DAYS[2]])
    before_folder_gaps = folder_files(tmp_path / "batch" / "gaps")()
    copies = {
        "team_folder": folder_files(folder),
        "team_s3": s3_files(s3_server, s3_bucket, "acme"),
        "team_gcs": gcs_files(gcs_server, gcs_bucket, "acme"),
    }
    before = {name: files() for name, files in copies.items()}
    before_other = folder_files(other_folder)()
    before_pg = pg_uuids(postgres, database, "team_events")
    persons_pg = pg_uuids(postgres, database, "team_events", person)
    before_gaps = pg_uuids(postgres, database, "team_gaps")
    for name, files in before.items():
        held = [row["person_id"] for content in of_day(files, PERSON_DAY).values() for row in rows(content)]
        assert person in held, name
    assert persons_pg and before_gaps

    requested = request_data_deletion.execute_in_process(
        run_config={
            "ops": {"insert_deletion_request": {"config": {"team_id": team, "key_type": "person", "key": person}}}
        },
        resources={"clickhouse": clickhouse},
        instance=dagster_instance,
    )
    assert requested.success

    dry = run_deletion(clickhouse, deployment, dagster_instance, dry_run=True)

    assert dry.success
    assert {name: files() for name, files in copies.items()} == before  # nothing changed
    assert pg_uuids(postgres, database, "team_events") == before_pg
    expected_places = sorted(
        [f"{folder.as_uri()}/events/date={PERSON_DAY}/{DATA_FILE}"]
        + [f"s3://{s3_bucket}/acme/{path}" for path in of_day(before["team_s3"], PERSON_DAY)]
        + [f"gs://{gcs_bucket}/acme/events/date={PERSON_DAY}/{DATA_FILE}"]
        + [
            f"postgresql://{postgres.user}@127.0.0.1:{postgres.port}/{database}?table={table} "
            f"(timestamp on {PERSON_DAY})"
            for table in ("team_events", "team_gaps", "team_never")
        ]
    )
    assert len(of_day(before["team_s3"], PERSON_DAY)) > 1  # one file per hour
    assert sorted(dry.output_for_node("plan_deletions", "report")["batch_exports_to_rewrite"]) == expected_places

    result = run_deletion(clickhouse, deployment, dagster_instance)

    assert result.success, failure_message(result)
    for name, files in copies.items():
        after = files()
        assert sorted(after) == sorted(before[name]), name  # each interval still exactly once, none added
        for path, content in before[name].items():
            if f"date={PERSON_DAY}" in path:
                assert rows(after[path]) == [row for row in rows(content) if row["person_id"] != person], path
            else:
                assert after[path] == content, f"{name}: {path} was rewritten although its day did not change"
    assert folder_files(other_folder)() == before_other  # another team's export is not touched
    assert pg_uuids(postgres, database, "team_events", person) == set()
    assert pg_uuids(postgres, database, "team_events") == before_pg - persons_pg
    assert pg_uuids(postgres, database, "team_gaps") == before_gaps  # the day never exported stays so
    assert folder_files(tmp_path / "batch" / "gaps")() == before_folder_gaps
    assert postgres_rows(postgres, database, "SELECT to_regclass('team_never')") == [(None,)]  # nor created
    assert not (tmp_path / "batch" / "never").exists()
    with clickhouse.get_client() as client:
        [request] = request_rows(client)
    assert request["status"] == "done"
    assert set(expected_places) <= set(request["files_rewritten"])  # the audit record lists every copy
    # Each rewritten interval is recorded on its batch export's partition, by this run.
    held_hours = sorted(
        f"{PERSON_DAY}-{path.split('hour=')[1][:2]}:00" for path in of_day(before["team_s3"], PERSON_DAY)
    )
    for name, partitions in (
        ("team_folder", [PERSON_DAY.isoformat()]),
        ("team_s3", held_hours),
        ("team_gcs", [PERSON_DAY.isoformat()]),
        ("team_pg", [PERSON_DAY.isoformat()]),
    ):
        recorded = deletion_records(dagster_instance, AssetKey(["batch_exports", name]))
        assert sorted(recorded) == partitions, name
        assert {entry["run_id"] for entry in recorded.values()} == {result.run_id}
    assert deletion_records(dagster_instance, AssetKey(["batch_exports", "other_folder"])) == {}


@pytest.mark.parametrize("content", [None, "exports: 3\n"], ids=["missing", "malformed"])
def test_a_bad_batch_exports_file_fails_the_deletion_naming_the_variable_and_deletes_nothing(
    clickhouse: ClickHouseResource,
    dagster_instance: DagsterInstance,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    content: str | None,
) -> None:
    deployment = local_exports(tmp_path / "exports")
    build_warehouse(clickhouse, deployment)
    with clickhouse.get_client() as client:
        team, person = person_of_one_day(client, PERSON_DAY)
        insert_request(client, team, "person", person)
        before = client.command("SELECT count() FROM events")
    path = tmp_path / "batch_exports.yaml"
    if content is not None:
        path.write_text(content)
    monkeypatch.setenv("BATCH_EXPORTS_FILE", str(path))

    result = run_deletion(clickhouse, deployment, dagster_instance)

    assert not result.success
    assert "BATCH_EXPORTS_FILE: the deletion cannot list the batch exports it must reach" in failure_message(result)
    with clickhouse.get_client() as client:
        assert client.command("SELECT count() FROM events") == before
        [request] = request_rows(client)
    assert request["status"] != "done"


# --- Verification reads each copy back: a stale copy keeps the request open --------------------------------


def person_request_with_copies(
    clickhouse: ClickHouseResource,
    dagster_instance: DagsterInstance,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    *entries: dict[str, Any],
    days: dict[str, list[date]] | None = None,
) -> tuple[Any, int, str]:
    """A warehouse, batch exports of the person's team (``entry(name, "TEAM", url)``) exported on ``days``
    (default: every day), and a pending request for the person."""
    deployment = local_exports(tmp_path / "exports")
    build_warehouse(clickhouse, deployment)
    with clickhouse.get_client() as client:
        team, person = person_of_one_day(client, PERSON_DAY)
        insert_request(client, team, "person", person)
    assets = declare(tmp_path, monkeypatch, *({**item, "team_id": team} for item in entries))
    for item in entries:
        exported(assets, clickhouse, dagster_instance, item["name"], (days or {}).get(item["name"], DAYS))
    return deployment, team, person


def break_batch_rewrite(monkeypatch: pytest.MonkeyPatch) -> None:
    """A broken batch rewrite: it reports success and writes nothing."""
    import dags.management.deletion.copy_ops as copy_ops

    monkeypatch.setattr(copy_ops, "rewrite_copy", lambda *args: [])


def test_a_postgres_copy_still_holding_the_persons_rows_keeps_the_request_open_naming_the_export(
    clickhouse: ClickHouseResource,
    dagster_instance: DagsterInstance,
    postgres: PostgresServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    database = postgres.create_database("stale")
    url = postgres_url(postgres, database, "team_events")
    deployment, _, person = person_request_with_copies(
        clickhouse, dagster_instance, tmp_path, monkeypatch, entry("team_pg", 0, url)
    )
    left = len(pg_uuids(postgres, database, "team_events", person))
    break_batch_rewrite(monkeypatch)

    result = run_deletion(clickhouse, deployment, dagster_instance)

    assert not result.success
    assert f"batch export team_pg: {url} (timestamp on {PERSON_DAY}) still holds {left:,} of the request's rows" in (
        failure_description(result)
    )
    assert len(pg_uuids(postgres, database, "team_events", person)) == left > 0
    with clickhouse.get_client() as client:
        [request] = request_rows(client)
    assert request["status"] == "pre_aggregates_recomputed"  # open: the next run finishes it


def test_a_batch_parquet_file_still_holding_the_persons_rows_keeps_the_request_open_naming_the_file(
    clickhouse: ClickHouseResource,
    dagster_instance: DagsterInstance,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    folder = tmp_path / "batch"
    deployment, _, person = person_request_with_copies(
        clickhouse, dagster_instance, tmp_path, monkeypatch, entry("team_folder", 0, folder.as_uri())
    )
    stale_path = folder / "events" / f"date={PERSON_DAY}" / DATA_FILE
    left = sum(row["person_id"] == person for row in rows(stale_path.read_bytes()))
    break_batch_rewrite(monkeypatch)

    result = run_deletion(clickhouse, deployment, dagster_instance)

    assert not result.success
    stale_url = f"{folder.as_uri()}/events/date={PERSON_DAY}/{DATA_FILE}"
    assert f"batch export team_folder: {stale_url} still holds {left:,} of the request's rows" in (
        failure_description(result)
    )
    with clickhouse.get_client() as client:
        [request] = request_rows(client)
    assert left > 0 and request["status"] == "pre_aggregates_recomputed"


def test_a_copy_without_person_id_is_proven_by_its_row_count_and_a_stale_one_keeps_the_request_open(
    clickhouse: ClickHouseResource,
    dagster_instance: DagsterInstance,
    postgres: PostgresServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    database = postgres.create_database("anonymous")
    columns = ["uuid", "event", "timestamp", "distinct_id"]
    url = postgres_url(postgres, database, "team_events")
    deployment, team, person = person_request_with_copies(
        clickhouse,
        dagster_instance,
        tmp_path,
        monkeypatch,
        entry("team_pg", 0, url, columns=columns),
        # Never exported on the person's day: nothing to prove there, and nothing created.
        entry("team_pg_gaps", 0, postgres_url(postgres, database, "team_gaps"), columns=columns),
        days={"team_pg_gaps": [DAYS[0], DAYS[2]]},
    )
    with clickhouse.get_client() as client:
        theirs = {
            row["uuid"]
            for row in client.query_rows(
                "SELECT toString(uuid) AS uuid FROM events WHERE person_id = toUUID({person:String})",
                {"person": person},
            )
        }
    before, before_gaps = pg_uuids(postgres, database, "team_events"), pg_uuids(postgres, database, "team_gaps")
    assert theirs and theirs <= before
    with monkeypatch.context() as broken:
        break_batch_rewrite(broken)
        stale = run_deletion(clickhouse, deployment, dagster_instance)
    assert not stale.success
    [(held,)] = postgres_rows(
        postgres,
        database,
        f"SELECT count(*) FROM team_events WHERE timestamp >= '{PERSON_DAY} 00:00+00' "
        f"AND timestamp < '{DAYS[2]} 00:00+00'",
    )
    assert (
        f"batch export team_pg: {url} (timestamp on {PERSON_DAY}) holds {held:,} rows where events now gives "
        f"{held - len(theirs):,}" in failure_description(stale)
    )

    rerun = run_deletion(clickhouse, deployment, dagster_instance)

    assert rerun.success, failure_message(rerun)
    assert pg_uuids(postgres, database, "team_events") == before - theirs
    assert pg_uuids(postgres, database, "team_gaps") == before_gaps
    with clickhouse.get_client() as client:
        [request] = request_rows(client)
    assert request["status"] == "done" and request["team_id"] == team


def test_a_team_deletion_empties_the_teams_batch_exports_of_every_changed_day(
    clickhouse: ClickHouseResource,
    dagster_instance: DagsterInstance,
    postgres: PostgresServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    deployment = local_exports(tmp_path / "exports")
    build_warehouse(clickhouse, deployment)
    database = postgres.create_database("team")
    folder, anonymous = tmp_path / "batch" / "team", tmp_path / "batch" / "anonymous"
    assets = declare(
        tmp_path,
        monkeypatch,
        entry("team_folder", 2, folder.as_uri()),
        entry("team_no_team_column", 2, anonymous.as_uri(), columns=["uuid", "event", "timestamp"]),
        entry("team_pg", 2, postgres_url(postgres, database, "team_events")),
        entry("team_stats_pg", 2, postgres_url(postgres, database, "team_stats"), dataset="web_pre_aggregated_stats"),
    )
    for name in ("team_folder", "team_no_team_column", "team_pg", "team_stats_pg"):
        exported(assets, clickhouse, dagster_instance, name)
    assert all(rows(content) for content in folder_files(folder)().values())
    with clickhouse.get_client() as client:
        insert_request(client, 2, "team", "")

    result = run_deletion(clickhouse, deployment, dagster_instance)

    assert result.success, failure_message(result)
    for root in (folder, anonymous):
        files = folder_files(root)()
        assert len(files) == len(DAYS) and all(rows(content) == [] for content in files.values()), root
    for table in ("team_events", "team_stats"):
        assert postgres_rows(postgres, database, f"SELECT count(*) FROM {table}") == [(0,)], table
    with clickhouse.get_client() as client:
        [request] = request_rows(client)
    assert request["status"] == "done"
    assert len([place for place in request["files_rewritten"] if "table=team_stats" in place]) == len(DAYS)


def test_a_team_deletion_that_leaves_the_teams_rows_in_its_batch_exports_keeps_the_request_open(
    clickhouse: ClickHouseResource,
    dagster_instance: DagsterInstance,
    postgres: PostgresServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    deployment = local_exports(tmp_path / "exports")
    build_warehouse(clickhouse, deployment)
    database = postgres.create_database("team_stale")
    url, anonymous = postgres_url(postgres, database, "team_events"), tmp_path / "batch" / "anonymous"
    assets = declare(
        tmp_path,
        monkeypatch,
        entry("team_pg", 2, url),
        entry("team_no_team_column", 2, anonymous.as_uri(), columns=["uuid", "event", "timestamp"]),
    )
    for name in ("team_pg", "team_no_team_column"):
        exported(assets, clickhouse, dagster_instance, name, days=[PERSON_DAY])
    [(in_table,)] = postgres_rows(postgres, database, "SELECT count(*) FROM team_events WHERE team_id = 2")
    in_file = len(rows((anonymous / "events" / f"date={PERSON_DAY}" / DATA_FILE).read_bytes()))
    with clickhouse.get_client() as client:
        insert_request(client, 2, "team", "")
    break_batch_rewrite(monkeypatch)

    result = run_deletion(clickhouse, deployment, dagster_instance)

    assert not result.success
    description = failure_description(result)
    assert f"batch export team_pg: {url} (timestamp on {PERSON_DAY}) still holds {in_table:,} of" in description
    stale_url = f"{anonymous.as_uri()}/events/date={PERSON_DAY}/{DATA_FILE}"
    assert f"batch export team_no_team_column: {stale_url} still holds {in_file:,} of" in description
    with clickhouse.get_client() as client:
        [request] = request_rows(client)
    assert in_table > 0 and in_file > 0 and request["status"] == "pre_aggregates_recomputed"
