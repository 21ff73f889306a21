"""Backups on a sharded cluster of two 26.9 servers (``CLICKHOUSE_CLUSTER=two_shards``), to S3 (SeaweedFS), over
HTTP and native: each shard backed up into a folder of its own and proven by restoring it on its host, and a
restore that puts each shard's rows back on its host."""

from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import pytest
from dagster import DagsterInstance

from dags.events import SHARDED_EVENTS, create_events_tables, generate_demo_events
from dags.exchange_rate.storage import write_rates
from dags.management.backups import backup_storage_from_env
from dags.management.backups.storage import BackupStorage
from dags.tests.conftest import ClusterUnderTest, S3Server
from dags.tests.test_backups import backup, object_keys, restore
from dags.tests.test_restore_all_or_nothing import rates_day

DAY = date(2024, 3, 5)
SHARD_ROWS = f"SELECT toString(uuid) AS uuid, team_id, distinct_id, timestamp FROM {SHARDED_EVENTS} ORDER BY uuid"


def on_each_host(cluster: ClusterUnderTest, sql: str) -> list[Any]:
    answers = []
    for host in (0, 1):
        with cluster.on_host(host).get_client() as client:
            answers.append(client.query_rows(sql))
    return answers


@pytest.fixture
def storage(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> BackupStorage:
    """Backups to a fresh bucket, configured as production is (CLICKHOUSE_BACKUP_URL and AWS_*)."""
    monkeypatch.setenv("CLICKHOUSE_BACKUP_URL", f"s3://{s3_server.create_bucket('backups')}/backups")
    for variable, value in (
        ("AWS_ACCESS_KEY_ID", s3_server.access_key),
        ("AWS_SECRET_ACCESS_KEY", s3_server.secret_key),
        ("AWS_ENDPOINT_URL", s3_server.endpoint_url),
        ("AWS_REGION", s3_server.region),
    ):
        monkeypatch.setenv(variable, value)
    return backup_storage_from_env()


@pytest.fixture
def filled(clickhouse_cluster: ClusterUnderTest) -> ClusterUnderTest:
    """Demo events over both shards and the same exchange rates on both hosts."""
    resource = clickhouse_cluster.resource()
    cluster = resource.get_cluster()
    create_events_tables(cluster)
    with resource.get_client() as client:
        generate_demo_events(client, start_date=DAY - timedelta(days=1), days=3, events=3_000, seed=4)
    rates = [rates_day({"EUR": Decimal("0.9"), "GBP": Decimal("0.8")})]
    cluster.map_all_hosts(lambda client: write_rates(client, rates, version=1))
    return clickhouse_cluster


def test_each_shard_is_backed_up_in_its_own_folder_and_proven_on_its_host(
    filled: ClusterUnderTest, storage: BackupStorage, s3_server: S3Server, dagster_instance: DagsterInstance
) -> None:
    shard_rows = [len(rows) for rows in on_each_host(filled, SHARD_ROWS)]
    assert all(shard_rows)

    run = backup(filled.resource(), storage, dagster_instance)

    assert run.success
    name = run.output_for_node("take_clickhouse_backup").name
    keys = object_keys(s3_server, storage)
    location = storage.location.key("")
    for shard in (1, 2):
        assert f"{location}/shard-{shard}/{name}/.backup" in keys, f"shard {shard}'s backup finished in its folder"
    metadata = _output_metadata(run, "take_clickhouse_backup")
    assert metadata["shards"] == 2
    assert [metadata[f"rows_shard_{shard}_{SHARDED_EVENTS}"] for shard in (1, 2)] == shard_rows
    assert metadata["rows_shard_2_exchange_rate"] == metadata["rows_shard_1_exchange_rate"] == 2
    verified = _output_metadata(run, "verify_clickhouse_backup")
    assert [verified[f"restored_rows_shard_{shard}_{SHARDED_EVENTS}"] for shard in (1, 2)] == shard_rows


def test_a_restore_puts_each_shards_rows_back_on_its_host(
    filled: ClusterUnderTest, storage: BackupStorage, dagster_instance: DagsterInstance
) -> None:
    resource = filled.resource()
    before = on_each_host(filled, SHARD_ROWS)
    assert backup(resource, storage, dagster_instance).success
    for host in (0, 1):
        with filled.on_host(host).get_client() as client:
            client.command(f"TRUNCATE TABLE {SHARDED_EVENTS}")

    replaced = restore(resource, storage, dagster_instance, target_database=filled.database, replace=True,
                       tables=["events"])  # fmt: skip

    assert replaced.success
    assert on_each_host(filled, SHARD_ROWS) == before, "each shard holds exactly its rows again"
    with resource.get_client() as client:
        assert client.command("SELECT count() FROM events") == len(before[0]) + len(before[1])

    copy = restore(resource, storage, dagster_instance)  # into a new database, with an events over its shards
    assert copy.success
    target = copy.output_for_node("restore_clickhouse_backup")["target_database"]
    try:
        with resource.get_client() as client:
            restored = client.command(f"SELECT count() FROM `{target}`.events")
            assert restored == len(before[0]) + len(before[1])
    finally:
        resource.run_on_all_hosts(f"DROP DATABASE IF EXISTS `{target}` SYNC")


def _output_metadata(run: Any, op: str) -> dict[str, Any]:
    for event in run.events_for_node(op):
        if event.is_successful_output:
            return {key: value.value for key, value in event.step_output_data.metadata.items()}
    raise AssertionError(f"{op} produced no output")
