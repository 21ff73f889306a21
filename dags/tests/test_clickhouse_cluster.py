"""The cluster layer on a real cluster of two 26.9 servers (127.0.0.1 and 127.0.0.2), over HTTP and native:
its hosts and shards as the servers define them, a statement on every host or on one per shard, and a host
that does not answer named in the error while the others still run."""

from pathlib import Path

import pytest

from dags.clickhouse.cluster import ClusterHostsError, ClusterHostsNotRetryableError, Host
from dags.common import ClickHouseError, ClickHouseResource
from dags.tests.cluster_support import HOSTS, ONE_SHARD_TWO_COPIES, TWO_SHARDS, database_on_every_host, start_cluster
from dags.tests.conftest import ClusterUnderTest

CREATE_MARKS = "CREATE TABLE IF NOT EXISTS marks (mark String) ENGINE = MergeTree ORDER BY mark"


def marks_on(cluster: ClusterUnderTest, host: int) -> list[str]:
    with cluster.on_host(host).get_client() as client:
        return [row["mark"] for row in client.query_rows("SELECT mark FROM marks ORDER BY mark")]


def test_the_hosts_and_shards_are_those_the_servers_define(clickhouse_cluster: ClusterUnderTest) -> None:
    sharded = clickhouse_cluster.resource(TWO_SHARDS).get_cluster()
    copies = clickhouse_cluster.resource(ONE_SHARD_TWO_COPIES).get_cluster()
    assert [(host.shard, host.replica, host.address) for host in sharded.hosts] == [
        (1, 1, HOSTS[0]),
        (2, 1, HOSTS[1]),
    ]
    assert [(host.shard, host.replica, host.address) for host in copies.hosts] == [(1, 1, HOSTS[0]), (1, 2, HOSTS[1])]
    assert sorted(copies.shards) == [1]


def test_a_statement_reaches_every_host_or_one_host_per_shard(clickhouse_cluster: ClusterUnderTest) -> None:
    resource = clickhouse_cluster.resource(ONE_SHARD_TWO_COPIES)
    assert resource.run_on_all_hosts(CREATE_MARKS) == 2
    assert resource.run_on_all_hosts("INSERT INTO marks VALUES ({mark:String})", {"mark": "everywhere"}) == 2
    cluster = resource.get_cluster()
    per_shard = cluster.map_one_host_per_shard(lambda client: client.command("INSERT INTO marks VALUES ('one')"))
    assert [host.address for host in per_shard] == [HOSTS[0]]

    assert marks_on(clickhouse_cluster, 0) == ["everywhere", "one"]
    assert marks_on(clickhouse_cluster, 1) == ["everywhere"]


def test_every_copy_of_a_table_that_is_not_replicated_is_on_every_host(clickhouse_cluster: ClusterUnderTest) -> None:
    """Copies written by Distributed know nothing of each other: a mutation must go to each of them."""
    resource = clickhouse_cluster.resource(ONE_SHARD_TWO_COPIES)
    resource.run_on_all_hosts(CREATE_MARKS)
    assert resource.get_cluster().hosts_with_own_copy("marks") == resource.get_cluster().hosts


def test_without_a_cluster_there_is_the_urls_one_host(clickhouse_cluster: ClusterUnderTest) -> None:
    resource = clickhouse_cluster.resource(cluster=None)
    cluster = resource.get_cluster()
    assert not cluster.is_cluster and cluster.hosts == [Host(1, 1, None, None)]
    resource.run_on_all_hosts(CREATE_MARKS)
    assert resource.run_on_all_hosts("INSERT INTO marks VALUES ('here')") == 1
    assert marks_on(clickhouse_cluster, 0) == ["here"]
    with clickhouse_cluster.on_host(1).get_client() as client:
        assert client.command("EXISTS TABLE marks") == 0


def test_a_cluster_the_servers_do_not_define_is_named(clickhouse_cluster: ClusterUnderTest) -> None:
    with pytest.raises(ClickHouseError, match="'no_such_cluster' .CLICKHOUSE_CLUSTER. is not in system.clusters"):
        clickhouse_cluster.resource("no_such_cluster").get_cluster()


@pytest.mark.parametrize("protocol", ["http", "native"])
def test_a_stopped_host_fails_the_statement_naming_it_and_the_other_host_still_runs_it(
    protocol: str, tmp_path: Path
) -> None:
    servers = start_cluster(tmp_path)
    try:
        with database_on_every_host(servers, "marks_db"):
            resource = ClickHouseResource(
                url=servers.url(protocol, "marks_db"),
                cluster=TWO_SHARDS,
                connect_retry_seconds=1,
                retry_base_delay_seconds=0.05,
            )
            resource.run_on_all_hosts(CREATE_MARKS)
            cluster = resource.get_cluster()
            servers.servers[1].stop()

            with pytest.raises(ClusterHostsError) as raised:
                cluster.command_on_all_hosts("INSERT INTO marks VALUES ('after')")

            second = cluster.hosts[1]
            assert isinstance(raised.value, ClusterHostsNotRetryableError), "a host that stayed down is not retried"
            assert f"failed on 1 of 2 hosts: {second}: Could not reach ClickHouse" in str(raised.value)
            assert list(raised.value.failures) == [second] and second.address == HOSTS[1]
            with ClickHouseResource(url=servers.url(protocol, "marks_db")).get_client() as client:
                assert client.query_rows("SELECT mark FROM marks") == [{"mark": "after"}]
    finally:
        servers.stop()
