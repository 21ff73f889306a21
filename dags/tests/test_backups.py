"""ClickHouse backups to S3 (SeaweedFS) and to a folder on the server, proven by restoring them; on every engine."""

import json
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from dagster import DagsterInstance, ExecuteInProcessResult, build_schedule_context, build_sensor_context

from dags.clickhouse.local_server import LocalServer
from dags.common import ClickHouseClient, ClickHouseResource
from dags.management.backups import backup_storage_from_env
from dags.management.backups.backup import BackupResult, take_backup
from dags.management.backups.jobs import BACKUP_SCHEDULES, clickhouse_backup_job, clickhouse_restore_job
from dags.management.backups.pool import BACKUP_POOL, clickhouse_backups_pool_limit_sensor
from dags.management.backups.storage import BackupStorage
from dags.management.backups.verify import BackupVerificationError, verify_backup
from dags.management.settings import load_backup_settings
from dags.tests.conftest import S3Server, database_on_server

pytestmark = pytest.mark.end_to_end  # see conftest: embedded only unless every_engine

CREATE_EVENTS = """
CREATE TABLE events (uuid UUID, event String, properties String, timestamp DateTime64(6, 'UTC'), team_id Int64)
ENGINE = MergeTree PARTITION BY toYYYYMM(timestamp) ORDER BY (team_id, toDate(timestamp), event, uuid)
"""
INSERT_EVENTS = """
INSERT INTO events
SELECT generateUUIDv4(), ['$pageview', '$autocapture', '$pageleave'][number % 3 + 1],
       concat('{"$host": "example.com", "n": ', toString(number), '}'),
       toDateTime64('2026-11-01 00:00:00', 6, 'UTC') + toIntervalSecond(number * 37),
       number % 4 + 1
FROM numbers({start:UInt64}, {count:UInt64})
"""
CREATE_EXCHANGE_RATE = """
CREATE TABLE exchange_rate (currency String, date Date, rate Decimal64(10), version UInt32)
ENGINE = ReplacingMergeTree(version) ORDER BY (date, currency)
"""
INSERT_EXCHANGE_RATES = """
INSERT INTO exchange_rate
SELECT ['USD', 'GBP', 'JPY'][number % 3 + 1], toDate('2026-10-01') + intDiv(number, 3), 1 + number / 1000, 1
FROM numbers(90)
"""
FAST = 0.05  # seconds between progress reads


@pytest.fixture
def storage(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> BackupStorage:
    """Backups to a fresh bucket, configured the way production is: CLICKHOUSE_BACKUP_URL and AWS_*."""
    bucket = s3_server.create_bucket("backups")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_key)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server.endpoint_url)
    monkeypatch.setenv("AWS_REGION", s3_server.region)
    monkeypatch.setenv("CLICKHOUSE_BACKUP_URL", f"s3://{bucket}/backups")
    monkeypatch.delenv("CLICKHOUSE_BACKUP_RETENTION_DAYS", raising=False)
    return backup_storage_from_env()


@pytest.fixture
def tables(ch: ClickHouseClient) -> ClickHouseClient:
    """The test's database holds `events` (20,000 rows) and `exchange_rate` (90 rows)."""
    return fill(ch)


def fill(ch: ClickHouseClient) -> ClickHouseClient:
    ch.command(CREATE_EVENTS)
    ch.command(INSERT_EVENTS, {"start": 0, "count": 20_000})
    ch.command(CREATE_EXCHANGE_RATE)
    ch.command(INSERT_EXCHANGE_RATES)
    return ch


def rows(ch: ClickHouseClient, table: str) -> list[dict[str, Any]]:
    order = "uuid" if table.endswith("events") else "date, currency"
    return ch.query_rows(f"SELECT * FROM {table} ORDER BY {order}")


def backup(
    clickhouse: ClickHouseResource, storage: BackupStorage, instance: DagsterInstance, kind: str = "full"
) -> ExecuteInProcessResult:
    return clickhouse_backup_job.execute_in_process(
        run_config={
            "ops": {
                "take_clickhouse_backup": {"config": {"kind": kind, "poll_interval_seconds": FAST}},
                "verify_clickhouse_backup": {"config": {"poll_interval_seconds": FAST}},
            }
        },
        resources={"clickhouse": clickhouse, "backup_storage": storage},
        instance=instance,
        raise_on_error=False,
    )


def restore(
    clickhouse: ClickHouseResource, storage: BackupStorage, instance: DagsterInstance, **config: Any
) -> ExecuteInProcessResult:
    return clickhouse_restore_job.execute_in_process(
        run_config={"ops": {"restore_clickhouse_backup": {"config": {"poll_interval_seconds": FAST, **config}}}},
        resources={"clickhouse": clickhouse, "backup_storage": storage},
        instance=instance,
        raise_on_error=False,
    )


def failure_message(result: ExecuteInProcessResult) -> str:
    failures = [event for event in result.all_events if event.is_step_failure]
    assert failures, "the run was expected to fail"
    return failures[0].step_failure_data.error.message


def event_log_text(instance: DagsterInstance, result: ExecuteInProcessResult) -> str:
    run = instance.get_run_by_id(result.run_id)
    assert run is not None
    return json.dumps(run.run_config) + "\n".join(str(entry) for entry in instance.all_logs(result.run_id))


def object_keys(s3_server: S3Server, storage: BackupStorage) -> list[str]:
    location = storage.location
    listing = s3_server.client().list_objects_v2(Bucket=location.bucket, Prefix=location.key("") + "/")
    return [item["Key"] for item in listing.get("Contents", [])]


@pytest.mark.every_engine
def test_a_full_then_a_smaller_incremental_after_new_inserts_both_restore_identical_tables(
    clickhouse: ClickHouseResource, tables: ClickHouseClient, storage: BackupStorage, dagster_instance: DagsterInstance
) -> None:
    ch = tables
    events_at_full, rates = rows(ch, "events"), rows(ch, "exchange_rate")

    full_run = backup(clickhouse, storage, dagster_instance, "full")
    assert full_run.success
    full: BackupResult = full_run.output_for_node("take_clickhouse_backup")
    assert full.kind == "full" and full.base_name is None and full.name.endswith("-full")
    assert {table: value.rows for table, value in full.tables.items()} == {"events": 20_000, "exchange_rate": 90}
    assert full.files > 0 and full.bytes > 0

    ch.command(INSERT_EVENTS, {"start": 20_000, "count": 500})
    incremental_run = backup(clickhouse, storage, dagster_instance, "incremental")
    assert incremental_run.success
    incremental: BackupResult = incremental_run.output_for_node("take_clickhouse_backup")
    assert incremental.kind == "incr" and incremental.base_name == full.name
    assert incremental.tables["events"].rows == 20_500
    assert incremental.bytes < full.bytes / 5  # only the new part is stored; the rest points at the full
    assert sorted([full.name, incremental.name]) == [full.name, incremental.name]  # names sort by time

    for name, target in ((full.name, "restored_full"), (incremental.name, "restored_incremental")):
        restored = restore(clickhouse, storage, dagster_instance, backup_name=name, target_database=target)
        assert restored.success, name
    assert rows(ch, "restored_full.events") == events_at_full
    assert rows(ch, "restored_incremental.events") == rows(ch, "events")
    assert rows(ch, "restored_full.exchange_rate") == rows(ch, "restored_incremental.exchange_rate") == rates
    ch.command("DROP DATABASE restored_full SYNC")
    ch.command("DROP DATABASE restored_incremental SYNC")
    # The verification's scratch databases are gone.
    assert not ch.query_rows("SELECT name FROM system.databases WHERE name LIKE 'backup_verify_%'")


@pytest.mark.every_engine
def test_restoring_over_live_tables_is_refused_without_replace_and_brings_dropped_events_back_with_it(
    clickhouse: ClickHouseResource, tables: ClickHouseClient, storage: BackupStorage, dagster_instance: DagsterInstance
) -> None:
    ch = tables
    live = ch.database
    events, rates = rows(ch, "events"), rows(ch, "exchange_rate")
    assert backup(clickhouse, storage, dagster_instance).success
    ch.command("INSERT INTO exchange_rate VALUES ('EUR', '2026-11-01', 1, 2)")

    refused = restore(clickhouse, storage, dagster_instance, target_database=live)
    assert not refused.success
    assert "set replace: true" in failure_message(refused)
    assert len(rows(ch, "exchange_rate")) == 91  # nothing changed

    ch.command("DROP TABLE events SYNC")
    replaced = restore(clickhouse, storage, dagster_instance, target_database=live, replace=True)
    assert replaced.success
    assert rows(ch, "events") == events
    assert rows(ch, "exchange_rate") == rates
    warnings = [
        entry.user_message
        for entry in dagster_instance.all_logs(replaced.run_id)
        if entry.level >= 30 and "REPLACING" in entry.user_message
    ]
    assert warnings and "exchange_rate" in warnings[0]
    assert not ch.query_rows(
        "SELECT name FROM system.tables WHERE database = currentDatabase() AND name LIKE '%\\\\_\\\\_restore\\\\_%'"
    )


@pytest.mark.every_engine
def test_replacing_tables_in_a_database_without_exchange_swaps_them_in_by_renames(
    clickhouse: ClickHouseResource, tables: ClickHouseClient, storage: BackupStorage, dagster_instance: DagsterInstance
) -> None:
    ch = tables
    # A database without EXCHANGE TABLES on any server: the deprecated Ordinary engine.
    target = f"ordinary_{uuid.uuid4().hex[:8]}"
    ch.command(
        "CREATE DATABASE {db:Identifier} ENGINE = Ordinary", {"db": target}, {"allow_deprecated_database_ordinary": 1}
    )
    assert ch.command("SELECT engine FROM system.databases WHERE name = {db:String}", {"db": target}) == "Ordinary"
    events, rates = rows(ch, "events"), rows(ch, "exchange_rate")
    assert backup(clickhouse, storage, dagster_instance).success
    try:
        assert restore(clickhouse, storage, dagster_instance, target_database=target).success
        ch.command(f"INSERT INTO {target}.exchange_rate VALUES ('EUR', '2026-11-01', 1, 2)")
        replaced = restore(clickhouse, storage, dagster_instance, target_database=target, replace=True)
        assert replaced.success, failure_message(replaced)
        assert rows(ch, f"{target}.events") == events
        assert rows(ch, f"{target}.exchange_rate") == rates
        left = ch.query_rows("SELECT name FROM system.tables WHERE database = {db:String}", {"db": target})
        assert sorted(row["name"] for row in left) == ["events", "exchange_rate"]  # no staged copy left
    finally:
        ch.command("DROP DATABASE IF EXISTS {db:Identifier} SYNC", {"db": target})


@pytest.mark.every_engine
@pytest.mark.parametrize("damage", ["missing", "corrupted"])
def test_a_missing_or_corrupted_file_fails_verification_with_a_clear_message(
    clickhouse: ClickHouseResource,
    tables: ClickHouseClient,
    storage: BackupStorage,
    dagster_instance: DagsterInstance,
    s3_server: S3Server,
    damage: str,
) -> None:
    run = backup(clickhouse, storage, dagster_instance)
    assert run.success
    taken: BackupResult = run.output_for_node("take_clickhouse_backup")
    data_file = next(key for key in object_keys(s3_server, storage) if "/events/" in key and key.endswith("data.bin"))
    client = s3_server.client()
    if damage == "missing":
        client.delete_object(Bucket=storage.location.bucket, Key=data_file)
    else:
        size = client.head_object(Bucket=storage.location.bucket, Key=data_file)["ContentLength"]
        client.put_object(Bucket=storage.location.bucket, Key=data_file, Body=b"\x00" * size)

    resolved = storage.process_config_and_initialize()  # EnvVars read, as in a run
    with pytest.raises(BackupVerificationError, match=f"Backup {taken.url} ") as failed:
        verify_backup(tables, resolved, taken, "backup_verify_damaged", print, poll_seconds=FAST)
    print(failed.value)
    assert not tables.query_rows("SELECT name FROM system.databases WHERE name = 'backup_verify_damaged'")


def test_retention_deletes_old_backups_but_never_the_base_of_a_kept_incremental(
    clickhouse: ClickHouseResource,
    tables: ClickHouseClient,
    storage: BackupStorage,
    dagster_instance: DagsterInstance,
    s3_server: S3Server,
) -> None:
    resolved = storage.process_config_and_initialize()  # EnvVars read, as in a run
    now, database = datetime.now(UTC), tables.database

    def take(days_ago: int, base: str | None = None) -> str:
        stored = next(item for item in resolved.list_backups() if item.name == base) if base else None
        taken_at = now - timedelta(days=days_ago)
        backup = take_backup(
            tables, resolved, database, ["events", "exchange_rate"], taken_at, stored, print, None, FAST
        )
        return backup.name

    old_full = take(45)
    old_incremental = take(44, old_full)
    kept_base = take(40)
    recent_incremental = take(2, kept_base)
    unfinished = (now - timedelta(days=50)).strftime("%Y-%m-%dT%H%M%SZ") + "-full"  # a crashed run's leftovers
    s3_server.client().put_object(
        Bucket=resolved.location.bucket, Key=resolved.location.key(unfinished, "data", "part.bin"), Body=b"x"
    )

    run = backup(clickhouse, storage, dagster_instance)  # retention is its last step (30 days by default)
    assert run.success
    new = run.output_for_node("take_clickhouse_backup").name
    assert sorted(run.output_for_node("apply_backup_retention")) == sorted([unfinished, old_full, old_incremental])
    assert [item.name for item in resolved.list_backups()] == [kept_base, recent_incremental, new]
    assert resolved.contents(recent_incremental).base_name == kept_base


@pytest.mark.parametrize(
    ("wrong", "variable"), [("secret", "AWS_SECRET_ACCESS_KEY"), ("bucket", "CLICKHOUSE_BACKUP_URL")]
)
def test_a_wrong_bucket_or_secret_fails_before_anything_is_written_naming_the_variable_to_check(
    clickhouse: ClickHouseResource,
    tables: ClickHouseClient,
    storage: BackupStorage,
    dagster_instance: DagsterInstance,
    s3_server: S3Server,
    monkeypatch: pytest.MonkeyPatch,
    wrong: str,
    variable: str,
) -> None:
    wrong_secret = "wrong-secret-key-9876543210"
    if wrong == "secret":
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", wrong_secret)
    else:
        monkeypatch.setenv("CLICKHOUSE_BACKUP_URL", "s3://no-such-backup-bucket/backups")
    operations_before = tables.command("SELECT count() FROM system.backups")

    run = backup(clickhouse, backup_storage_from_env(), dagster_instance)

    assert not run.success
    message = failure_message(run)
    assert variable in message
    assert tables.command("SELECT count() FROM system.backups") == operations_before  # ClickHouse never started one
    assert object_keys(s3_server, storage) == []
    buckets = [bucket["Name"] for bucket in s3_server.client().list_buckets()["Buckets"]]
    assert "no-such-backup-bucket" not in buckets
    assert wrong_secret not in event_log_text(dagster_instance, run)


QUERY_LOG_CONFIG = """<clickhouse>
  <query_log><database>system</database><table>query_log</table></query_log>
</clickhouse>
"""

# Runs in its own process: chDB opens one data path per process, and this one needs a query_log.
QUERY_LOG_SCRIPT = """
import json, sys
import chdb
from dags.management.backups.sql import backup_statement, restore_statement
from dags.management.backups.storage import BackupStorage

data, config, endpoint, bucket, key_id, secret = sys.argv[1:7]
connection = chdb.connect(f"file:{data}?config-file={config}")
storage = BackupStorage(url=f"s3://{bucket}/logged", endpoint_url=endpoint, aws_access_key_id=key_id,
                        aws_secret_access_key=secret)
wrong = BackupStorage(url=f"s3://{bucket}/logged", endpoint_url=endpoint, aws_access_key_id=key_id,
                      aws_secret_access_key="wrong-" + secret)
connection.query("CREATE TABLE t (n UInt64) ENGINE = MergeTree ORDER BY n")
connection.query("INSERT INTO t SELECT number FROM numbers(1000)")
connection.query("CREATE DATABASE default_restored")

def run(sql, parameters):
    try:
        connection.query(sql.replace("ASYNC", ""), params=parameters)
    except Exception:
        pass

engine, parameters = storage.engine("full")
run(backup_statement("default", ["t"], engine), parameters)
base_engine, base_parameters = storage.engine("full", prefix="base_")
engine, parameters = storage.engine("incr")
run(backup_statement("default", ["t"], engine, base_engine), {**parameters, **base_parameters})
engine, parameters = storage.engine("incr")
run(restore_statement("default", ["t"], "default_restored", engine), parameters)
engine, parameters = wrong.engine("refused")
run(backup_statement("default", ["t"], engine), parameters)
connection.query("SYSTEM FLUSH LOGS")
result = connection.query(
    "SELECT type, query, exception FROM system.query_log WHERE query_kind IN ('Backup', 'Restore') FORMAT JSON"
)
print(json.dumps(json.loads(str(result))["data"]))
"""


@pytest.mark.every_engine
def test_the_secret_is_in_no_event_log_run_config_system_backups_or_query_log(
    clickhouse: ClickHouseResource,
    tables: ClickHouseClient,
    storage: BackupStorage,
    dagster_instance: DagsterInstance,
    s3_server: S3Server,
    tmp_path: Path,
) -> None:
    secret = s3_server.secret_key
    backed_up = backup(clickhouse, storage, dagster_instance)
    restored = restore(clickhouse, storage, dagster_instance)
    assert backed_up.success and restored.success
    for run in (backed_up, restored):
        assert secret not in event_log_text(dagster_instance, run)
    operations = tables.query_rows(
        "SELECT name, base_backup_name, error FROM system.backups WHERE position(name, {bucket:String}) > 0",
        {"bucket": storage.location.bucket},
    )
    assert len(operations) == 3  # backup, its verification, the restore
    assert all("[HIDDEN]" in operation["name"] for operation in operations)
    assert secret not in json.dumps(operations)

    # system.query_log: the embedded engine keeps none by default, so a second engine with one runs our SQL.
    (tmp_path / "config.xml").write_text(QUERY_LOG_CONFIG)
    logged = subprocess.run(
        [sys.executable, "-c", QUERY_LOG_SCRIPT, str(tmp_path / "data"), str(tmp_path / "config.xml"),
         s3_server.endpoint_url, storage.location.bucket, s3_server.access_key, secret],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    entries = json.loads(logged.stdout.strip().splitlines()[-1])
    kinds = {(entry["type"], entry["query"].split()[0]) for entry in entries}
    assert {("QueryFinish", "BACKUP"), ("QueryFinish", "RESTORE"), ("ExceptionBeforeStart", "BACKUP")} <= kinds
    assert all("[HIDDEN]" in entry["query"] for entry in entries)
    assert secret not in logged.stdout


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("CLICKHOUSE_BACKUP_RETENTION_DAYS", "0"),
        ("CLICKHOUSE_BACKUP_RETENTION_DAYS", "-7"),
        ("CLICKHOUSE_BACKUP_RETENTION_DAYS", "thirty"),
        ("CLICKHOUSE_BACKUP_URL", "s3://ab/backups"),
        ("CLICKHOUSE_BACKUP_URL", "s3://AKIA:hunter2@our-backups/clickhouse"),
        ("CLICKHOUSE_BACKUP_URL", "gs://our-backups/clickhouse"),
        ("CLICKHOUSE_BACKUP_URL", "file://relative/folder"),
    ],
)
def test_a_bad_backup_setting_fails_naming_its_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.delenv("CLICKHOUSE_BACKUP_URL", raising=False)
    monkeypatch.delenv("CLICKHOUSE_BACKUP_RETENTION_DAYS", raising=False)
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValueError, match=variable) as failed:
        load_backup_settings()
    assert "hunter2" not in str(failed.value)


def test_backup_settings_default_to_thirty_days_and_no_location(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CLICKHOUSE_BACKUP_URL", raising=False)
    monkeypatch.delenv("CLICKHOUSE_BACKUP_RETENTION_DAYS", raising=False)
    settings = load_backup_settings()
    assert settings.location is None and settings.retention_days == 30
    monkeypatch.setenv("CLICKHOUSE_BACKUP_URL", "s3://our-backups/clickhouse/")
    monkeypatch.setenv("CLICKHOUSE_BACKUP_RETENTION_DAYS", "7")
    settings = load_backup_settings()
    assert settings.location is not None and settings.location.url == "s3://our-backups/clickhouse"
    assert settings.retention_days == 7


@pytest.mark.every_engine
def test_a_folder_url_outside_the_servers_allowed_backup_path_fails_with_the_engines_own_reason(
    clickhouse: ClickHouseResource,
    tables: ClickHouseClient,
    dagster_instance: DagsterInstance,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CLICKHOUSE_BACKUP_URL", (tmp_path / "backups").as_uri())
    run = backup(clickhouse, backup_storage_from_env(), dagster_instance)
    assert not run.success
    assert "backups.allowed_path" in failure_message(run)


@pytest.mark.parametrize("engine", ["http", "native"])
def test_a_folder_url_on_the_server_holds_the_backup_in_that_folder_and_it_restores(
    engine: str, clickhouse_server: LocalServer, dagster_instance: DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = clickhouse_server.http_url if engine == "http" else clickhouse_server.native_url
    folder = clickhouse_server.root / "backups" / f"folder-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("CLICKHOUSE_BACKUP_URL", folder.as_uri())
    with database_on_server(url) as database_url:
        clickhouse = ClickHouseResource(url=database_url, retry_base_delay_seconds=0.05)
        with clickhouse.get_client() as ch:
            events = rows(fill(ch), "events")
        run = backup(clickhouse, backup_storage_from_env(), dagster_instance)
        assert run.success, failure_message(run)
        name = run.output_for_node("take_clickhouse_backup").name
        assert (folder / name / ".backup").is_file(), sorted(str(path) for path in folder.rglob("*"))[:5]
        target = f"restored_{uuid.uuid4().hex[:8]}"
        assert restore(clickhouse, backup_storage_from_env(), dagster_instance, target_database=target).success
        with clickhouse.get_client() as ch:
            assert rows(ch, f"{target}.events") == events
            ch.command("DROP DATABASE IF EXISTS {db:Identifier} SYNC", {"db": target})


def test_backups_and_restores_share_one_pool_limited_to_one_run_and_schedules_ask_for_full_and_incremental(
    tmp_path: Path,
) -> None:
    for job in (clickhouse_backup_job, clickhouse_restore_job):
        assert {node.definition.pool for node in job.graph.node_dict.values()} == {BACKUP_POOL}
        assert int(job.tags["dagster/max_runtime"]) > 0 and job.tags["owner"] == "team-platform"
    kinds = {
        schedule.name: schedule.evaluate_tick(build_schedule_context())
        .run_requests[0]
        .run_config["ops"]["take_clickhouse_backup"]["config"]["kind"]
        for schedule in BACKUP_SCHEDULES
    }
    assert kinds == {"clickhouse_full_backup_schedule": "full", "clickhouse_incremental_backup_schedule": "incremental"}

    home = tmp_path / "dagster_home"
    home.mkdir()
    with DagsterInstance.from_config(str(home)) as instance:  # SQLite, as the daemon uses it
        storage = instance.event_log_storage
        clickhouse_backups_pool_limit_sensor(build_sensor_context(instance=instance))
        assert storage.get_concurrency_info(BACKUP_POOL).slot_count == 1
        storage.set_concurrency_slots(BACKUP_POOL, 2)  # set by an operator: kept
        clickhouse_backups_pool_limit_sensor(build_sensor_context(instance=instance))
        assert storage.get_concurrency_info(BACKUP_POOL).slot_count == 2


def test_a_retention_given_to_the_backup_storage_resource_is_range_checked_naming_the_field() -> None:
    from pydantic import ValidationError

    from dags.management.backups.storage import BackupStorage

    for days in (0, 36601, 1000000000):
        with pytest.raises(ValidationError, match="retention_days"):
            BackupStorage(url="s3://our-backups/clickhouse", retention_days=days)
    assert BackupStorage(url="s3://our-backups/clickhouse", retention_days=36600).retention() == 36600
