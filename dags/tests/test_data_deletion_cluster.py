"""A person's deletion on a sharded cluster of two 26.9 servers (``CLICKHOUSE_CLUSTER``), over HTTP and native.

The person's rows go from every shard's ``sharded_events`` (and from both copies when one shard has two),
the days are recomputed and the exports rewritten; a run that stopped after enqueueing its mutations leaves
them to the next run, which waits for them instead of enqueueing them again; a host that does not answer
fails the run naming it, with nothing deleted anywhere.
"""

import threading
from pathlib import Path
from typing import Any

import pytest
from dagster import DagsterInstance

from dags.common import ClickHouseResource
from dags.events import SHARDED_EVENTS, create_events_tables
from dags.management.deletion.requests import insert_request
from dags.tests.cluster_support import ONE_SHARD_TWO_COPIES, TWO_SHARDS, database_on_every_host, start_cluster
from dags.tests.conftest import ClusterUnderTest, wait_until
from dags.tests.test_data_deletion import (
    DAYS,
    EVENT_COLUMNS,
    Exports,
    assert_person_deleted_everywhere,
    build_warehouse,
    local_exports,
    person_of_one_day,
    request_rows,
    run_deletion,
    snapshot,
)

pytestmark = pytest.mark.usefixtures("no_batch_exports")
from dags.tests.test_data_deletion import no_batch_exports  # noqa: E402,F401  (the fixture, used above)

SHARD_ROWS = f"SELECT {EVENT_COLUMNS} FROM {SHARDED_EVENTS} ORDER BY uuid"
OUR_MUTATIONS = (
    "SELECT count() AS n, countIf(is_done) AS done FROM system.mutations "
    "WHERE database = currentDatabase() AND table = {table:String} AND position(command, 'data_deletion:') > 0"
)


def on_each_host(cluster: ClusterUnderTest, sql: str, parameters: dict[str, Any] | None = None) -> list[Any]:
    answers = []
    for host in (0, 1):
        with cluster.on_host(host).get_client() as client:
            answers.append(client.query_rows(sql, parameters))
    return answers


def logged(instance: DagsterInstance, text: str, run_id: str | None = None) -> int:
    """How many log lines of the run (default: the newest) contain ``text``."""
    runs = instance.get_runs(limit=1) if run_id is None else [instance.get_run_by_id(run_id)]
    if not runs or runs[0] is None:
        return 0
    return sum(text in (event.user_message or "") for event in instance.all_logs(runs[0].run_id))


def warehouse_on(resource: ClickHouseResource, tmp_path: Path) -> Exports:
    create_events_tables(resource.get_cluster())
    exports = local_exports(tmp_path / "exports")
    build_warehouse(resource, exports)
    return exports


def request_deletion_of_a_person(resource: ClickHouseResource) -> tuple[int, str]:
    with resource.get_client() as client:
        team, person = person_of_one_day(client, DAYS[1])
        insert_request(client, team, "person", person)
    return team, person


@pytest.mark.parametrize("cluster_name", [TWO_SHARDS, ONE_SHARD_TWO_COPIES])
def test_a_person_deletion_removes_them_from_every_shard_and_copy_and_nothing_else(
    clickhouse_cluster: ClusterUnderTest, cluster_name: str, dagster_instance: DagsterInstance, tmp_path: Path
) -> None:
    resource = clickhouse_cluster.resource(cluster_name)
    exports = warehouse_on(resource, tmp_path)
    team, person = request_deletion_of_a_person(resource)
    before = snapshot(resource, exports)
    before_shards = on_each_host(clickhouse_cluster, SHARD_ROWS)
    holding = [any(row["person_id"] == person for row in rows) for rows in before_shards]
    assert holding == ([True, True] if cluster_name == ONE_SHARD_TWO_COPIES else [holding[0], not holding[0]])

    result = run_deletion(resource, exports, dagster_instance)

    assert result.success
    after_shards = on_each_host(clickhouse_cluster, SHARD_ROWS)
    for before_rows, after_rows in zip(before_shards, after_shards, strict=True):  # row by row, host by host
        assert after_rows == [row for row in before_rows if not (row["team_id"] == team and row["person_id"] == person)]
    assert_person_deleted_everywhere(
        resource, exports, before["events"], before["files"], before["parts"], before["pre_aggregates"],
        team, person, DAYS[1],
    )  # fmt: skip
    with resource.get_client() as client:
        assert [request["status"] for request in request_rows(client)] == ["done"]
    mutations = on_each_host(clickhouse_cluster, OUR_MUTATIONS, {"table": SHARDED_EVENTS})
    assert [answer[0]["n"] for answer in mutations] == [1, 1], "one mutation on each host holding a copy"


def test_a_rerun_after_a_run_stopped_waiting_issues_no_second_mutation_on_any_host(
    clickhouse_cluster: ClusterUnderTest, dagster_instance: DagsterInstance, tmp_path: Path, monkeypatch
) -> None:
    resource = clickhouse_cluster.resource()
    exports = warehouse_on(resource, tmp_path)
    team, person = request_deletion_of_a_person(resource)
    # The mutations are enqueued but cannot run (merges stopped), so the run gives up waiting after 2 s: what
    # a run killed between enqueueing and waiting leaves behind.
    for host in (0, 1):
        with clickhouse_cluster.on_host(host).get_client() as client:
            client.command(f"SYSTEM STOP MERGES {SHARDED_EVENTS}")
    monkeypatch.setenv("DATA_DELETION_MUTATION_TIMEOUT_SECONDS", "2")
    stopped = run_deletion(resource, exports, dagster_instance)
    assert not stopped.success
    pending = on_each_host(clickhouse_cluster, OUR_MUTATIONS, {"table": SHARDED_EVENTS})
    assert [(answer[0]["n"], answer[0]["done"]) for answer in pending] == [(1, 0), (1, 0)]
    with resource.get_client() as client:
        assert [request["status"] for request in request_rows(client)] == ["planned"]

    # The rerun finds the person's rows still there, plans the same, finds each host's mutation and waits for
    # it; only then may the mutations run.
    def start_merges_once_the_rerun_waits() -> None:
        wait_until(lambda: logged(dagster_instance, "enqueued by an earlier run") == 2, 60, "the rerun to wait")
        for host in (0, 1):
            with clickhouse_cluster.on_host(host).get_client() as client:
                client.command(f"SYSTEM START MERGES {SHARDED_EVENTS}")

    monkeypatch.setenv("DATA_DELETION_MUTATION_TIMEOUT_SECONDS", "120")
    starter = threading.Thread(target=start_merges_once_the_rerun_waits)
    starter.start()
    rerun = run_deletion(resource, exports, dagster_instance)
    starter.join()
    assert rerun.success
    done = on_each_host(clickhouse_cluster, OUR_MUTATIONS, {"table": SHARDED_EVENTS})
    assert [(answer[0]["n"], answer[0]["done"]) for answer in done] == [(1, 1), (1, 1)], "the same mutation waited for"
    assert logged(dagster_instance, "enqueued by an earlier run", rerun.run_id) == 2
    with resource.get_client() as client:
        assert (
            client.command("SELECT count() FROM events WHERE person_id = toUUID({person:String})", {"person": person})
            == 0
        )
        assert [request["status"] for request in request_rows(client)] == ["done"]


@pytest.mark.parametrize("protocol", ["http", "native"])
def test_a_host_that_does_not_answer_fails_the_deletion_naming_it_and_nothing_is_deleted(
    protocol: str, dagster_instance: DagsterInstance, tmp_path: Path
) -> None:
    servers = start_cluster(tmp_path / "cluster")
    try:
        with database_on_every_host(servers, "warehouse"):
            resource = ClickHouseResource(
                url=servers.url(protocol, "warehouse"), cluster=TWO_SHARDS, connect_retry_seconds=1,
                retry_base_delay_seconds=0.05, max_attempts=1,
            )  # fmt: skip
            exports = warehouse_on(resource, tmp_path)
            request_deletion_of_a_person(resource)
            first_host = ClickHouseResource(url=servers.url(protocol, "warehouse"))
            with first_host.get_client() as client:
                before = client.query_rows(f"SELECT {EVENT_COLUMNS} FROM {SHARDED_EVENTS} ORDER BY uuid")
            servers.servers[1].stop()

            result = run_deletion(resource, exports, dagster_instance)

            assert not result.success
            failures = "\n".join(
                str(event.step_failure_data.error) for event in result.all_events if event.is_step_failure
            )
            assert f"127.0.0.2:{servers.servers[1].tcp_port}" in failures
            with first_host.get_client() as client:
                assert client.query_rows(f"SELECT {EVENT_COLUMNS} FROM {SHARDED_EVENTS} ORDER BY uuid") == before
                assert client.query_rows(OUR_MUTATIONS, {"table": SHARDED_EVENTS})[0]["n"] == 0
                assert [request["status"] for request in request_rows(client)] == ["pending"]
    finally:
        servers.stop()
