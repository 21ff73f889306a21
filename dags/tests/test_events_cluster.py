"""The ``events`` contract on a sharded cluster of two 26.9 servers, over HTTP and native.

With ``CLICKHOUSE_CLUSTER`` set, ``events`` is ``Distributed`` over ``sharded_events`` on every host: the demo
fills both shards, a person's events stay on one shard, and a cluster whose one shard has two copies holds
every row on both hosts.
"""

from datetime import date

from dagster import DagsterInstance, materialize

from dags.events import DEMO_TEAM_IDS, SHARDED_EVENTS, create_events_tables, demo_events
from dags.tests.cluster_support import ONE_SHARD_TWO_COPIES
from dags.tests.conftest import ClusterUnderTest

DAY = "2024-03-15"
EVENTS = 3_000


def rows_on(cluster: ClusterUnderTest, host: int, sql: str) -> list[dict]:
    with cluster.on_host(host).get_client() as client:
        return client.query_rows(sql)


def materialize_demo_day(cluster: ClusterUnderTest, instance: DagsterInstance, name: str | None = None) -> None:
    result = materialize(
        [demo_events],
        partition_key=DAY,
        resources={"clickhouse": cluster.resource(name) if name else cluster.resource()},
        run_config={"ops": {"demo_events": {"config": {"events_per_day": EVENTS}}}},
        instance=instance,
    )
    assert result.success


def test_every_host_gets_sharded_events_a_distributed_events_over_them_and_the_person_overrides(
    clickhouse_cluster: ClusterUnderTest,
) -> None:
    create_events_tables(clickhouse_cluster.resource().get_cluster())
    for host in (0, 1):
        tables = rows_on(
            clickhouse_cluster,
            host,
            "SELECT name, engine, engine_full FROM system.tables WHERE database = currentDatabase() ORDER BY name",
        )
        assert [(t["name"], t["engine"]) for t in tables] == [
            ("events", "Distributed"),
            ("person_distinct_id_overrides", "ReplacingMergeTree"),  # all of it on every host
            (SHARDED_EVENTS, "MergeTree"),
        ]
        assert "sipHash64(distinct_id)" in tables[0]["engine_full"]
        columns = rows_on(
            clickhouse_cluster,
            host,
            "SELECT table, groupArray((name, type)) AS columns FROM system.columns "
            "WHERE database = currentDatabase() GROUP BY table ORDER BY table",
        )
        by_table = {row["table"]: row["columns"] for row in columns}
        assert by_table["events"] == by_table[SHARDED_EVENTS], "events has exactly sharded_events' columns"


def test_the_demo_fills_both_shards_and_a_person_lives_on_one(
    clickhouse_cluster: ClusterUnderTest, dagster_instance: DagsterInstance
) -> None:
    for _ in range(2):  # a rerun replaces the day on every shard instead of adding to it
        materialize_demo_day(clickhouse_cluster, dagster_instance)

    shard_rows = f"SELECT count() AS n, groupUniqArray(distinct_id) AS ids FROM {SHARDED_EVENTS}"
    on_shard = [rows_on(clickhouse_cluster, host, shard_rows)[0] for host in (0, 1)]
    assert all(shard["n"] > EVENTS // 4 for shard in on_shard), "both shards hold a fair part of the rows"
    assert on_shard[0]["n"] + on_shard[1]["n"] == EVENTS
    assert not set(on_shard[0]["ids"]) & set(on_shard[1]["ids"]), "a distinct_id's events are all on one shard"
    for host in (0, 1):
        through_events = rows_on(clickhouse_cluster, host, "SELECT team_id, count() AS n FROM events GROUP BY team_id")
        assert sum(row["n"] for row in through_events) == EVENTS, "every host reads every shard through events"
        assert {row["team_id"] for row in through_events} == set(DEMO_TEAM_IDS)


def test_with_two_copies_of_one_shard_every_host_holds_every_row(
    clickhouse_cluster: ClusterUnderTest, dagster_instance: DagsterInstance
) -> None:
    for _ in range(2):
        materialize_demo_day(clickhouse_cluster, dagster_instance, ONE_SHARD_TWO_COPIES)
    copies = [
        rows_on(clickhouse_cluster, host, f"SELECT count() AS n, sum(cityHash64(uuid)) AS h FROM {SHARDED_EVENTS}")[0]
        for host in (0, 1)
    ]
    assert copies[0] == copies[1] and copies[0]["n"] == EVENTS
    assert rows_on(clickhouse_cluster, 0, "SELECT count() AS n FROM events") == [{"n": EVENTS}]
    assert rows_on(clickhouse_cluster, 1, "SELECT min(toDate(timestamp)) AS day FROM events") == [
        {"day": date.fromisoformat(DAY)}
    ]
