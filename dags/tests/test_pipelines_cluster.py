"""Each pipeline on a sharded cluster of two 26.9 servers (``CLICKHOUSE_CLUSTER=two_shards``), over HTTP and
native: exchange rates answer the same on every host, web analytics gives the same tables as one host for the
same rows, and the exports hold every shard's rows."""

from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import yaml
from dagster import DagsterInstance, materialize

from dags.common import ClickHouseResource
from dags.events import SHARDED_EVENTS, create_events_tables, generate_demo_events
from dags.exchange_rate import DayRatesIOManagerFactory, ExchangeRateSource
from dags.exchange_rate.assets import daily_exchange_rates, daily_exchange_rates_in_clickhouse
from dags.exports.assets import events_export
from dags.exports.batch_assets import build_batch_exports
from dags.exports.manifest import DATA_FILE
from dags.exports.resource import ExportDestination
from dags.tests.conftest import ClusterUnderTest, database_on_server
from dags.tests.test_web_preaggregated import ASSETS as WEB_ANALYTICS_ASSETS
from dags.tests.test_web_preaggregated import snapshot
from dags.web_analytics.schema import BOUNCES_TABLE, STATS_TABLE

DAY = date(2024, 3, 5)
EVENTS = 6_000
SEED = 5


def fill(resource: ClickHouseResource) -> None:
    """Three days of demo events around DAY, through ``events`` (Distributed on the cluster)."""
    create_events_tables(resource.get_cluster())
    with resource.get_client() as client:
        generate_demo_events(client, start_date=DAY - timedelta(days=1), days=3, events=EVENTS, seed=SEED)


def per_shard(cluster: ClusterUnderTest, sql: str) -> list[list[dict[str, Any]]]:
    """What each host holds itself in ``sharded_events``."""
    answers = []
    for host in (0, 1):
        with cluster.on_host(host).get_client() as client:
            answers.append(client.query_rows(sql.format(table=SHARDED_EVENTS)))
    return answers


def test_exchange_rates_are_the_same_on_every_host_and_each_hosts_dictionary_converts(
    clickhouse_cluster: ClusterUnderTest, dagster_instance: DagsterInstance, tmp_path: Path
) -> None:
    result = materialize(
        [daily_exchange_rates, daily_exchange_rates_in_clickhouse],
        partition_key="2024-03-15",
        resources={
            "clickhouse": clickhouse_cluster.resource(),
            "exchange_rate_source": ExchangeRateSource(source="ecb", ecb_url="http://unused.invalid"),
            "exchange_rate_io_manager": DayRatesIOManagerFactory(base_dir=str(tmp_path / "rates")),
        },
        instance=dagster_instance,
    )
    assert result.success
    tables, answers = [], []
    stored = "SELECT date, currency, rate, version FROM exchange_rate FINAL ORDER BY date, currency"
    for host in (0, 1):
        with clickhouse_cluster.on_host(host).get_client() as client:
            tables.append(client.query_rows(stored))
            answers.append(client.command("SELECT dictGet('exchange_rate_dict', 'rate', 'EUR', toDate('2024-03-15'))"))
    assert len(tables[0]) > 30 and tables[0] == tables[1], "the same rows, one version, on both hosts"
    assert [Decimal(str(answer)) for answer in answers] == [Decimal("0.9181050312")] * 2  # 1 / 1.0892, by hand
    metadata = result.asset_materializations_for_node("daily_exchange_rates_in_clickhouse")[0].metadata
    assert metadata["dictionary_reloaded_on_hosts"].value == 2


def test_web_analytics_on_a_cluster_gives_the_tables_one_host_gives_for_the_same_rows(
    clickhouse_cluster: ClusterUnderTest, dagster_instance: DagsterInstance
) -> None:
    on_cluster = clickhouse_cluster.resource()
    fill(on_cluster)
    assert all(shard[0]["n"] > 0 for shard in per_shard(clickhouse_cluster, "SELECT count() AS n FROM {table}"))
    with database_on_server(clickhouse_cluster.url()) as one_host_url:
        one_host = ClickHouseResource(url=one_host_url)
        fill(one_host)
        for resource in (on_cluster, one_host):
            result = materialize(
                WEB_ANALYTICS_ASSETS, partition_key=DAY.isoformat(), resources={"clickhouse": resource},
                instance=dagster_instance,
            )  # fmt: skip
            assert result.success
        with on_cluster.get_client() as cluster_client, one_host.get_client() as host_client:
            for table in (STATS_TABLE, BOUNCES_TABLE):
                on_one_host = snapshot(host_client, table)
                assert len(on_one_host) > 100
                assert snapshot(cluster_client, table) == on_one_host, table


def test_the_events_export_holds_every_shards_rows(
    clickhouse_cluster: ClusterUnderTest, dagster_instance: DagsterInstance, tmp_path: Path
) -> None:
    resource = clickhouse_cluster.resource()
    fill(resource)
    destination = ExportDestination(url=(tmp_path / "exports").as_uri())
    result = materialize(
        [events_export], partition_key=DAY.isoformat(), instance=dagster_instance,
        resources={"clickhouse": resource, "export_destination": destination},
    )  # fmt: skip
    assert result.success

    exported = pq.read_table(tmp_path / "exports" / "events" / f"date={DAY}" / DATA_FILE)
    day_uuids = "SELECT toString(uuid) AS uuid FROM {table} WHERE toDate(timestamp) = '" + DAY.isoformat() + "'"
    shards = [{row["uuid"] for row in rows} for rows in per_shard(clickhouse_cluster, day_uuids)]
    assert shards[0] and shards[1] and not shards[0] & shards[1]
    assert sorted(exported["uuid"].to_pylist()) == sorted(shards[0] | shards[1])


def test_a_batch_export_holds_its_teams_rows_from_every_shard(
    clickhouse_cluster: ClusterUnderTest,
    dagster_instance: DagsterInstance,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    resource = clickhouse_cluster.resource()
    fill(resource)
    folder = tmp_path / "team_2"
    entry = {"name": "team_2_events", "team_id": 2, "dataset": "events", "destination": folder.as_uri(),
             "interval": "day", "start": "2024-01-01"}  # fmt: skip
    (tmp_path / "batch_exports.yaml").write_text(yaml.safe_dump({"exports": [entry]}))
    monkeypatch.setenv("BATCH_EXPORTS_FILE", str(tmp_path / "batch_exports.yaml"))
    [asset] = build_batch_exports().assets
    result = materialize(
        [asset], partition_key=DAY.isoformat(), resources={"clickhouse": resource}, instance=dagster_instance
    )
    assert result.success

    exported = pq.read_table(folder / "events" / f"date={DAY}" / DATA_FILE)
    team_day = (
        "SELECT toString(uuid) AS uuid FROM {table} WHERE team_id = 2 AND toDate(timestamp) = '" + DAY.isoformat() + "'"
    )
    shards = [{row["uuid"] for row in rows} for rows in per_shard(clickhouse_cluster, team_day)]
    assert shards[0] and shards[1]
    assert sorted(exported["uuid"].to_pylist()) == sorted(shards[0] | shards[1])
