"""`squash_person_overrides`: merged persons' overrides squashed into `events.person_id`, exactly the squashed
overrides deleted, the changed days' pre-aggregates and exports redone; a dry run, a rerun after a kill and
the cleanup of a killed run; on the embedded engine, the 26.9 server over HTTP and native, and a cluster."""

import threading
import uuid
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from dagster import DagsterInstance, ExecuteInProcessResult

from dags.common import ClickHouseClient, ClickHouseError, ClickHouseResource, quote_string
from dags.events import (
    CREATE_PERSON_OVERRIDES_TABLE,
    DISTRIBUTED_INSERT_SETTINGS,
    create_events_tables,
    is_distributed,
)
from dags.exports.datasets import day_folder
from dags.exports.manifest import DATA_FILE
from dags.exports.publish import export_day
from dags.management.mutations import enqueue_once
from dags.management.person_overrides.cleanup import drop_lookup
from dags.management.person_overrides.dictionary import CREATE_DICTIONARY
from dags.management.person_overrides.jobs import squash_person_overrides, squash_person_overrides_cleanup
from dags.management.person_overrides.ops import prepare_lookup
from dags.management.person_overrides.plan import plan_squash
from dags.management.person_overrides.snapshot import SquashNames
from dags.management.person_overrides.squash import (
    UPDATE_PERSON_ID,
    delete_squashed_overrides,
    events_table,
    marked,
    overrides_hosts,
    squash_marker,
)
from dags.tests.cluster_support import TWO_SHARDS
from dags.tests.conftest import ClusterUnderTest, wait_until
from dags.tests.test_data_deletion import (
    DATASETS,
    Exports,
    local_exports,
    pre_aggregate_rows,
    read_parquet,
)
from dags.web_analytics.refresh import refresh_window
from dags.web_analytics.sql import PRE_AGGREGATES

pytestmark = [pytest.mark.end_to_end, pytest.mark.usefixtures("no_batch_exports")]
from dags.tests.test_data_deletion import no_batch_exports  # noqa: E402,F401  (the fixture, used above)

DAYS = [date(2024, 2, 28), date(2024, 2, 29), date(2024, 3, 1), date(2024, 3, 2)]  # two monthly partitions
EXPORTED_DAYS = DAYS[:3]  # the last day was never exported: a squash must not create it
TIMESTAMP = "2024-04-01T00:00:00"  # the run's config: overrides written before it are squashed
DISTINCT_IDS = {1: ["a", "b", "c"], 2: ["a", "d", "e"]}


def person(team: int, distinct_id: str) -> str:
    """Each distinct id's own person before any merge."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"person/{team}/{distinct_id}"))


MERGED = str(uuid.uuid5(uuid.NAMESPACE_URL, "merged"))
LATE = str(uuid.uuid5(uuid.NAMESPACE_URL, "late"))
GONE = str(uuid.uuid5(uuid.NAMESPACE_URL, "deleted"))

# (team, distinct_id, person, is_deleted, version, written): team 1's a and b merge into c's person (a in two
# versions), team 2's e into d's; team 2's a was overridden before TIMESTAMP and again after it (its latest
# version is too young: left for a later squash, both stay); team 2's d was overridden, then that override
# deleted (its latest version is_deleted: left alone).
OVERRIDES = [
    (1, "a", MERGED, 0, 1, "2024-03-05 10:00:00"),
    (1, "a", person(1, "c"), 0, 2, "2024-03-06 10:00:00"),
    (1, "b", person(1, "c"), 0, 1, "2024-03-05 11:00:00"),
    (2, "e", person(2, "d"), 0, 1, "2024-03-05 12:00:00"),
    (2, "a", person(2, "d"), 0, 1, "2024-03-05 12:00:00"),
    (2, "a", LATE, 0, 2, "2024-04-02 09:00:00"),
    (2, "d", GONE, 0, 1, "2024-03-05 13:00:00"),
    (2, "d", GONE, 1, 2, "2024-03-05 14:00:00"),
]
# What events.person_id must hold after the squash, per (team, distinct_id), computed from the seed.
EXPECTED = {
    (team, distinct_id): person(team, distinct_id) for team, ids in DISTINCT_IDS.items() for distinct_id in ids
} | {(1, "a"): person(1, "c"), (1, "b"): person(1, "c"), (2, "e"): person(2, "d")}
SQUASHED = {(1, "a", 1), (1, "a", 2), (1, "b", 1), (2, "e", 1)}  # (team, distinct_id, version) deleted
LATEST_KEPT = {(2, "a", 2), (2, "d", 2)}  # the latest versions of the keys left alone
CHANGED_PARTITIONS = ["202402", "202403"]

ROWS = "SELECT toString(uuid) AS uuid, team_id, distinct_id, toString(person_id) AS person_id FROM {table:Identifier}"
OTHER_COLUMNS = "SELECT * EXCEPT person_id FROM {table:Identifier} ORDER BY uuid"
OVERRIDES_LEFT = (
    "SELECT team_id, distinct_id, version FROM person_distinct_id_overrides ORDER BY team_id, distinct_id, version"
)
SQUASH_MUTATIONS = (
    "SELECT count() AS n, countIf(is_done) AS done FROM system.mutations WHERE database = currentDatabase() "
    "AND position(command, 'person_overrides_squash:') > 0"
)
RUN_TABLES = (
    "SELECT name FROM system.tables WHERE database = currentDatabase() "
    "AND (name LIKE 'person_overrides_snapshot_%' OR name LIKE 'person_overrides_dict_%') ORDER BY name"
)


def events_seed() -> list[tuple]:
    """Three events a day of each distinct id, one session a day, at fixed times."""
    rows = []
    for team, ids in DISTINCT_IDS.items():
        for distinct_id in ids:
            for day in DAYS:
                for number, (event, path) in enumerate(
                    [("$pageview", "/"), ("$pageview", "/pricing"), ("$pageleave", "/")]
                ):
                    at = datetime(day.year, day.month, day.day, 10 + number, 7 * number)
                    identity = uuid.uuid5(uuid.NAMESPACE_URL, f"event/{team}/{distinct_id}/{at}")
                    properties = f'{{"$pathname": "{path}", "$current_url": "https://example.com{path}"}}'
                    session = f"s-{team}-{distinct_id}-{day}"
                    rows.append(
                        (str(identity), event, properties, at, team, distinct_id, person(team, distinct_id), session)
                    )
    return rows


def insert_events(client: ClickHouseClient) -> None:
    values = ", ".join(
        f"(toUUID('{u}'), '{e}', '{p}', toDateTime64('{at:%Y-%m-%d %H:%M:%S}', 6, 'UTC'), {t}, '{d}', "
        f"toUUID('{pid}'), '{s}')"
        for u, e, p, at, t, d, pid, s in events_seed()
    )
    settings = DISTRIBUTED_INSERT_SETTINGS if is_distributed(client) else None
    client.command(
        "INSERT INTO events (uuid, event, properties, timestamp, team_id, distinct_id, person_id, `$session_id`) "
        f"VALUES {values}",
        settings=settings,
    )


def insert_overrides(client: ClickHouseClient) -> None:
    client.command(CREATE_PERSON_OVERRIDES_TABLE)
    for t, d, p, deleted, version, written in OVERRIDES:  # one insert each: both versions stay until a merge
        client.command(
            "INSERT INTO person_distinct_id_overrides "
            "(team_id, distinct_id, person_id, is_deleted, version, _timestamp) "
            f"VALUES ({t}, '{d}', toUUID('{p}'), {deleted}, {version}, toDateTime('{written}', 'UTC'))"
        )


def build_warehouse(clickhouse: ClickHouseResource, exports: Exports) -> None:
    """Events and overrides, both pre-aggregates computed, every dataset exported for `EXPORTED_DAYS`."""
    create_events_tables(clickhouse.get_cluster())
    with clickhouse.get_client() as client:
        insert_events(client)
        insert_overrides(client)
        for pre_aggregate in PRE_AGGREGATES:
            refresh_window(
                client, pre_aggregate, first_day=DAYS[0], end_day=DAYS[-1] + timedelta(days=1), run_id="setup"
            )
    destination = exports.resource.open()
    for dataset in DATASETS:
        for day in EXPORTED_DAYS:
            export_day(lambda: clickhouse.get_client(), exports.resource, destination, dataset, day, "setup-run")


def run_squash(
    clickhouse: ClickHouseResource, exports: Exports, instance: DagsterInstance, **config: Any
) -> ExecuteInProcessResult:
    return squash_person_overrides.execute_in_process(
        run_config={"ops": {"plan_person_overrides_squash": {"config": {"timestamp": TIMESTAMP, **config}}}},
        resources={"clickhouse": clickhouse, "export_destination": exports.resource},
        instance=instance,
        raise_on_error=False,
    )


def person_ids(client: ClickHouseClient, table: str = "events") -> dict[str, tuple[int, str, str]]:
    return {
        row["uuid"]: (row["team_id"], row["distinct_id"], row["person_id"])
        for row in client.query_rows(ROWS, {"table": table})
    }


def assert_squashed(rows: dict[str, tuple[int, str, str]]) -> None:
    """Every row's person_id is its distinct id's expected person, row by row."""
    assert rows, "events are there"
    wrong = {
        uuid_: found for uuid_, (team, distinct_id, found) in rows.items() if found != EXPECTED[(team, distinct_id)]
    }
    assert wrong == {}


def overrides_left(client: ClickHouseClient) -> set[tuple[int, str, int]]:
    return {(row["team_id"], row["distinct_id"], row["version"]) for row in client.query_rows(OVERRIDES_LEFT)}


def all_overrides() -> set[tuple[int, str, int]]:
    return {(t, d, version) for t, d, _, _, version, _ in OVERRIDES}


def assert_overrides_squashed(left: set[tuple[int, str, int]]) -> None:
    """Exactly the squashed overrides are gone (an older version of a kept key may have merged away)."""
    assert LATEST_KEPT <= left <= all_overrides() - SQUASHED


def assert_overrides_untouched(left: set[tuple[int, str, int]]) -> None:
    latest = {(t, d, max(v for t2, d2, v in all_overrides() if (t2, d2) == (t, d))) for t, d, _ in all_overrides()}
    assert latest <= left <= all_overrides()


def op_metadata(result: ExecuteInProcessResult, op: str, output: str) -> dict[str, Any]:
    [event] = [
        e
        for e in result.all_events
        if e.is_successful_output
        and e.step_key == op
        and e.event_specific_data.step_output_handle.output_name == output
    ]
    return {name: value.value for name, value in event.event_specific_data.metadata.items()}


def files_of(exports: Exports) -> dict[str, bytes]:
    return {path: content for path, content in exports.list_files().items() if path.endswith(DATA_FILE)}


@pytest.mark.every_engine
def test_a_squash_rewrites_person_id_row_by_row_deletes_exactly_the_squashed_overrides_and_redoes_the_changed_days(
    clickhouse: ClickHouseResource, dagster_instance: DagsterInstance, tmp_path: Path
) -> None:
    exports = local_exports(tmp_path / "exports")
    build_warehouse(clickhouse, exports)
    with clickhouse.get_client() as client:
        other_columns_before = client.query_rows(OTHER_COLUMNS, {"table": "events"})
        pre_aggregates_before = {day: pre_aggregate_rows(client, day) for day in DAYS}
    files_before = files_of(exports)

    result = run_squash(clickhouse, exports, dagster_instance)

    assert result.success
    with clickhouse.get_client() as client:
        assert_squashed(person_ids(client))
        assert client.query_rows(OTHER_COLUMNS, {"table": "events"}) == other_columns_before, "nothing else changed"
        assert_overrides_squashed(overrides_left(client))  # the too young and the deleted ones stay
        assert client.query_rows(SQUASH_MUTATIONS) == [{"n": len(CHANGED_PARTITIONS), "done": len(CHANGED_PARTITIONS)}]
        assert client.query_rows(RUN_TABLES) == [], "the run's snapshot and dictionary are dropped"
        # The pre-aggregates the run recomputed equal a fresh computation from the squashed events ...
        recomputed = {day: pre_aggregate_rows(client, day) for day in DAYS}
        for pre_aggregate in PRE_AGGREGATES:
            refresh_window(
                client, pre_aggregate, first_day=DAYS[0], end_day=DAYS[-1] + timedelta(days=1), run_id="check"
            )
        assert recomputed == {day: pre_aggregate_rows(client, day) for day in DAYS}
    # ... and differ from before: team 1's three persons are one now.
    assert all(recomputed[day] != pre_aggregates_before[day] for day in DAYS)
    # Every exported file of the changed days was rewritten; none was created for the day never exported.
    files_after = files_of(exports)
    assert sorted(files_after) == sorted(files_before)
    assert all(files_after[path] != files_before[path] for path in files_before)
    for day in EXPORTED_DAYS:
        table = read_parquet(files_after[f"{day_folder('events', day)}/{DATA_FILE}"]).to_pylist()
        assert len(table) == len(DISTINCT_IDS[1] + DISTINCT_IDS[2]) * 3
        assert all(str(row["person_id"]) == EXPECTED[(row["team_id"], row["distinct_id"])] for row in table)
    with clickhouse.get_client() as client:
        for day in EXPORTED_DAYS:
            for dataset in DATASETS[1:]:
                exported = read_parquet(files_after[f"{day_folder(dataset.name, day)}/{DATA_FILE}"]).num_rows
                assert exported == len(pre_aggregate_rows(client, day)[dataset.name])
    plan = op_metadata(result, "plan_person_overrides_squash", "report")
    assert plan["rows_to_change"] == 3 * len(DAYS) * 3  # team 1's a and b, team 2's a: three rows a day each
    assert plan["partitions_to_mutate"] == CHANGED_PARTITIONS
    assert plan["days_to_recompute"] == [day.isoformat() for day in DAYS]
    finish = op_metadata(result, "finish_person_overrides_squash", "result")
    assert finish["rows_updated"] == plan["rows_to_change"] and len(finish["files_rewritten"]) == 3 * len(EXPORTED_DAYS)
    changed = [
        event.asset_key.to_user_string()
        for event in result.get_asset_materialization_events()
        if event.step_materialization_data.materialization.metadata["reason"].value == "person overrides squash"
    ]
    assert len(changed) == 2 * len(DAYS) + 3 * len(EXPORTED_DAYS)
    # The persons figure on the pre-aggregate's page: each recomputed day records its unique persons now,
    # counted here from the squashed events (pageviews' persons per team, added up).
    with clickhouse.get_client() as client:
        for event in result.get_asset_materialization_events():
            materialization = event.step_materialization_data.materialization
            if materialization.asset_key.to_user_string() != "web_pre_aggregated_stats":
                continue
            persons = client.command(
                "SELECT sum(n) FROM (SELECT team_id, uniqExact(person_id) AS n FROM events WHERE event = '$pageview' "
                "AND team_id >= 0 AND toDate(timestamp) = {day:Date} GROUP BY team_id)",
                {"day": materialization.partition},
            )
            assert materialization.metadata["unique_persons"].value == int(persons)


def test_a_dry_run_reports_the_rows_per_team_and_day_and_changes_nothing(
    clickhouse: ClickHouseResource, dagster_instance: DagsterInstance, tmp_path: Path
) -> None:
    exports = local_exports(tmp_path / "exports")
    build_warehouse(clickhouse, exports)
    with clickhouse.get_client() as client:
        before = client.query_rows(f"{ROWS} ORDER BY uuid", {"table": "events"})
    files_before = files_of(exports)

    result = run_squash(clickhouse, exports, dagster_instance, dry_run=True)

    assert result.success
    assert dagster_instance.get_run_by_id(result.run_id).tags["dry_run"] == "true"
    plan = op_metadata(result, "plan_person_overrides_squash", "report")
    assert plan["summary"].startswith("Dry run: nothing was changed.")
    assert plan["rows_to_change"] == 36 and plan["partitions_to_mutate"] == CHANGED_PARTITIONS
    assert (
        "| 1 | 2024-02-28 | 6 |" in plan["rows_by_team_and_day"]
        and "| 2 | 2024-03-02 | 3 |" in plan["rows_by_team_and_day"]
    )
    with clickhouse.get_client() as client:
        assert client.query_rows(f"{ROWS} ORDER BY uuid", {"table": "events"}) == before
        assert_overrides_untouched(overrides_left(client))
        assert client.query_rows(SQUASH_MUTATIONS) == [{"n": 0, "done": 0}]
        assert client.query_rows(RUN_TABLES) == []
    assert files_of(exports) == files_before
    assert {event.step_key for event in result.all_events if event.is_step_success} == {"plan_person_overrides_squash"}


def test_a_rerun_after_a_killed_run_enqueued_its_mutations_issues_no_second_one_and_redoes_its_days(
    clickhouse_server_url: str, dagster_instance: DagsterInstance, tmp_path: Path
) -> None:
    clickhouse = ClickHouseResource(url=clickhouse_server_url, retry_base_delay_seconds=0.05)
    exports = local_exports(tmp_path / "exports")
    build_warehouse(clickhouse, exports)
    # A killed run: its snapshot and dictionary built, its mutations enqueued, and nothing more. Merges are
    # stopped, so they cannot finish before the next run has planned.
    killed = SquashNames("killed-run-0000")
    cluster = clickhouse.get_cluster()
    with clickhouse.get_client() as client:
        pre_aggregates_before = {day: pre_aggregate_rows(client, day) for day in DAYS}
    before = int(datetime.fromisoformat(TIMESTAMP + "+00:00").timestamp())
    prepare_lookup(cluster, killed, before, None)
    table = events_table(cluster)
    partitions = plan_squash(cluster, table, killed).partitions
    assert partitions == CHANGED_PARTITIONS
    with clickhouse.get_client() as client:
        client.command("SYSTEM STOP MERGES events")
        for partition in partitions:
            mutation = marked(
                UPDATE_PERSON_ID, client.database, killed, squash_marker(killed, partition), partition=partition
            )
            assert enqueue_once(client, table, mutation)
        assert client.query_rows(SQUASH_MUTATIONS) == [{"n": 2, "done": 0}]

    def start_merges_once_the_next_run_waits() -> None:
        try:
            wait_until(lambda: waiting_logged(dagster_instance), 30, "the run to wait for the earlier squash")
        finally:  # a run that does not wait plans the unchanged rows and enqueues its own mutations
            with clickhouse.get_client() as client:
                client.command("SYSTEM START MERGES events")

    starter = threading.Thread(target=start_merges_once_the_next_run_waits)
    starter.start()
    result = run_squash(clickhouse, exports, dagster_instance)
    starter.join()

    assert result.success
    with clickhouse.get_client() as client:
        assert client.query_rows(SQUASH_MUTATIONS) == [{"n": len(partitions), "done": len(partitions)}]
        assert_squashed(person_ids(client))
        assert_overrides_squashed(overrides_left(client))
        # What the killed run never redid is redone now: its days' pre-aggregates equal a fresh computation ...
        recomputed = {day: pre_aggregate_rows(client, day) for day in DAYS}
        for pre_aggregate in PRE_AGGREGATES:
            refresh_window(
                client, pre_aggregate, first_day=DAYS[0], end_day=DAYS[-1] + timedelta(days=1), run_id="check"
            )
        assert recomputed == {day: pre_aggregate_rows(client, day) for day in DAYS} != pre_aggregates_before
        # ... and its snapshot and dictionary are dropped with this run's.
        assert client.query_rows(RUN_TABLES) == []
    report = op_metadata(result, "plan_person_overrides_squash", "report")
    assert report["rows_to_change"] == 0 and report["left_over_runs_finished"] == [killed.key]
    assert report["days_to_recompute"] == [day.isoformat() for day in DAYS]


def test_the_cleanup_job_drops_a_killed_runs_snapshot_and_dictionary(
    clickhouse: ClickHouseResource, dagster_instance: DagsterInstance, tmp_path: Path
) -> None:
    build_warehouse(clickhouse, local_exports(tmp_path / "exports"))
    killed = SquashNames("killed-run-0001")
    before = int(datetime.fromisoformat(TIMESTAMP + "+00:00").timestamp())
    prepare_lookup(clickhouse.get_cluster(), killed, before, None)
    with clickhouse.get_client() as client:
        assert len(client.query_rows(RUN_TABLES)) == 2

    cleanup = squash_person_overrides_cleanup.execute_in_process(
        run_config={"ops": {"drop_squash_tables": {"config": {"run_id": killed.run_id}}}},
        resources={"clickhouse": clickhouse},
        instance=dagster_instance,
    )

    assert cleanup.success
    with clickhouse.get_client() as client:
        assert client.query_rows(RUN_TABLES) == []


def waiting_logged(instance: DagsterInstance) -> bool:
    """Whether the newest run logged that it waits for an earlier squash."""
    runs = instance.get_runs(limit=1)
    return any(
        "waiting for an earlier squash" in (event.user_message or "") for event in instance.all_logs(runs[0].run_id)
    )


def test_a_failed_step_drops_the_runs_snapshot_and_dictionary(
    clickhouse: ClickHouseResource, dagster_instance: DagsterInstance, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    exports = local_exports(tmp_path / "exports")
    build_warehouse(clickhouse, exports)
    with clickhouse.get_client() as client:
        client.command("DROP TABLE events")  # the squash of events fails, not retried: no such table

    result = run_squash(clickhouse, exports, dagster_instance)

    assert not result.success
    assert not [event for event in result.all_events if event.event_type_value == "STEP_UP_FOR_RETRY"]
    with clickhouse.get_client() as client:
        assert client.query_rows(RUN_TABLES) == []
        assert_overrides_untouched(overrides_left(client))


@pytest.mark.parametrize("cluster_name", [TWO_SHARDS])
def test_on_a_cluster_the_squash_reaches_both_shards_and_every_hosts_overrides(
    clickhouse_cluster: ClusterUnderTest, cluster_name: str, dagster_instance: DagsterInstance, tmp_path: Path
) -> None:
    resource = clickhouse_cluster.resource(cluster_name)
    create_events_tables(resource.get_cluster())
    with resource.get_client() as client:
        insert_events(client)
    for host in (0, 1):  # every host holds all the overrides
        with clickhouse_cluster.on_host(host).get_client() as client:
            insert_overrides(client)
    shards_before = []
    for host in (0, 1):
        with clickhouse_cluster.on_host(host).get_client() as client:
            shards_before.append(person_ids(client, "sharded_events"))
    changed_on = [sum(person != EXPECTED[(t, d)] for t, d, person in rows.values()) for rows in shards_before]
    assert all(changed_on), f"both shards hold rows to change: {changed_on}"

    result = run_squash(resource, local_exports(tmp_path / "exports"), dagster_instance)

    assert result.success
    for host, before in zip((0, 1), shards_before, strict=True):
        with clickhouse_cluster.on_host(host).get_client() as client:
            after = person_ids(client, "sharded_events")
            assert after.keys() == before.keys()
            assert_squashed(after)
            assert_overrides_squashed(overrides_left(client))
            assert client.query_rows(RUN_TABLES) == []


def test_hosts_whose_overrides_differ_fail_the_squash_naming_them_before_anything_changes(
    clickhouse_cluster: ClusterUnderTest, dagster_instance: DagsterInstance, tmp_path: Path
) -> None:
    resource = clickhouse_cluster.resource(TWO_SHARDS)
    create_events_tables(resource.get_cluster())
    with resource.get_client() as client:
        insert_events(client)
    for host in (0, 1):
        with clickhouse_cluster.on_host(host).get_client() as client:
            insert_overrides(client)
    with clickhouse_cluster.on_host(1).get_client() as client:  # a write that reached one host only
        client.command(
            "INSERT INTO person_distinct_id_overrides (team_id, distinct_id, person_id, version, _timestamp) "
            "VALUES (1, 'c', generateUUIDv4(), 1, toDateTime('2024-03-07 00:00:00', 'UTC'))"
        )

    result = run_squash(resource, local_exports(tmp_path / "exports"), dagster_instance)

    assert not result.success
    failure = "\n".join(str(e.step_failure_data.error) for e in result.all_events if e.is_step_failure)
    assert "overrides differ" in failure and "127.0.0.1" in failure and "127.0.0.2" in failure
    with resource.get_client() as client:
        assert client.query_rows(
            "SELECT count() AS n FROM events WHERE person_id = toUUID({p:String})", {"p": person(1, "c")}
        ) == [{"n": 12}]


def test_an_override_written_after_the_snapshot_survives_the_delete_of_the_squashed_ones(
    clickhouse: ClickHouseResource,
) -> None:
    create_events_tables(clickhouse.get_cluster())
    with clickhouse.get_client() as client:
        insert_overrides(client)
    cluster = clickhouse.get_cluster()
    names = SquashNames("snapshot-then-newer-0000")
    prepare_lookup(cluster, names, int(datetime.fromisoformat(TIMESTAMP + "+00:00").timestamp()), None)
    with clickhouse.get_client() as client:  # team 1's a merges again while the squash runs
        client.command(
            "INSERT INTO person_distinct_id_overrides (team_id, distinct_id, person_id, version) "
            "VALUES (1, 'a', generateUUIDv4(), 3)"
        )

    delete_squashed_overrides(cluster, overrides_hosts(cluster), names, 60, lambda line: None)

    with clickhouse.get_client() as client:
        left = overrides_left(client)
    assert (1, "a", 3) in left and not left & SQUASHED
    drop_lookup(cluster, cluster.hosts, names)


def test_a_dictionary_that_does_not_hold_the_whole_snapshot_fails_the_run_naming_the_host(
    clickhouse: ClickHouseResource,
) -> None:
    create_events_tables(clickhouse.get_cluster())
    cluster = clickhouse.get_cluster()
    names = SquashNames("stale-dictionary-0000")
    with clickhouse.get_client() as client:
        insert_overrides(client)
        # A dictionary of that name left over reading another (empty) table: CREATE ... IF NOT EXISTS keeps it.
        client.command(
            "CREATE TABLE empty_lookup (team_id Int64, distinct_id String, person_id UUID, version Int64) "
            "ENGINE = Memory"
        )
        client.command(
            CREATE_DICTIONARY.format(
                dictionary=names.dictionary, database=quote_string(client.database), table="'empty_lookup'"
            )
        )

    with pytest.raises(ClickHouseError, match="did not load the whole snapshot: .*0 elements for 3 snapshot rows"):
        prepare_lookup(cluster, names, int(datetime.fromisoformat(TIMESTAMP + "+00:00").timestamp()), None)
    drop_lookup(cluster, cluster.hosts, names)


def test_each_step_sits_in_the_pool_of_what_it_changes_and_retries_only_transient_errors() -> None:
    pools = {node.name: node.definition.pool for node in squash_person_overrides.nodes}
    assert pools == {
        "plan_person_overrides_squash": "data_deletion",
        "squash_events": "data_deletion",  # events' mutations: never beside a deletion
        "delete_squashed_person_overrides": "data_deletion",
        "recompute_squashed_days": "web_analytics",
        "rewrite_squashed_events_exports": "exports_events",
        "rewrite_squashed_web_pre_aggregated_stats_exports": "exports_web_pre_aggregated_stats",
        "rewrite_squashed_web_pre_aggregated_bounces_exports": "exports_web_pre_aggregated_bounces",
        "rewrite_squashed_batch_exports": "data_deletion",
        "finish_person_overrides_squash": "data_deletion",
    }
    # A retry policy would retry any error; transient ones are retried by `retried_when_transient` instead.
    assert all(node.definition.retry_policy is None for node in squash_person_overrides.nodes)
    assert (
        squash_person_overrides.tags["owner"] == "team-platform"
        and "dagster/max_runtime" in squash_person_overrides.tags
    )


def test_the_weekly_squash_is_off_until_turned_on_and_runs_before_the_weekly_deletion() -> None:
    from dagster import DefaultScheduleStatus
    from dagster._utils.schedules import cron_string_iterator

    from dags.locations.data_platform import defs

    squash = defs.get_schedule_def("squash_person_overrides_weekly_schedule")
    deletion = defs.get_schedule_def("data_deletion_weekly_schedule")
    assert squash.job_name == "squash_person_overrides" and squash.default_status == DefaultScheduleStatus.STOPPED
    monday = datetime(2026, 11, 30).timestamp()
    next_squash = next(cron_string_iterator(monday, squash.cron_schedule, "UTC"))
    next_deletion = next(cron_string_iterator(monday, deletion.cron_schedule, "UTC"))
    # The same Sunday, the squash first: a person deletion then finds the merged devices' events by person_id.
    assert next_squash.date() == next_deletion.date() and next_squash < next_deletion


def test_a_bad_timestamp_fails_the_run_naming_the_field_and_changes_nothing(
    clickhouse: ClickHouseResource, dagster_instance: DagsterInstance, tmp_path: Path
) -> None:
    exports = local_exports(tmp_path / "exports")
    build_warehouse(clickhouse, exports)
    with clickhouse.get_client() as client:
        before = client.query_rows(f"{ROWS} ORDER BY uuid", {"table": "events"})

    result = run_squash(clickhouse, exports, dagster_instance, timestamp="last tuesday")

    assert not result.success
    [failure] = [event for event in result.all_events if event.is_step_failure]
    assert "timestamp must look like 2024-03-10T00:00:00, got 'last tuesday'" in failure.step_failure_data.error.message
    with clickhouse.get_client() as client:
        assert client.query_rows(f"{ROWS} ORDER BY uuid", {"table": "events"}) == before
        assert_overrides_untouched(overrides_left(client))
        assert client.query_rows(RUN_TABLES) == []


def test_a_limit_squashes_at_most_that_many_overrides_and_leaves_the_others_for_a_later_run(
    clickhouse: ClickHouseResource, dagster_instance: DagsterInstance, tmp_path: Path
) -> None:
    exports = local_exports(tmp_path / "exports")
    build_warehouse(clickhouse, exports)
    with clickhouse.get_client() as client:
        overrides_before = overrides_left(client)

    result = run_squash(clickhouse, exports, dagster_instance, limit=1)

    assert result.success
    assert op_metadata(result, "plan_person_overrides_squash", "report")["overrides_in_snapshot"] == 1
    with clickhouse.get_client() as client:
        gone = overrides_before - overrides_left(client)
        assert len(gone) == 1  # exactly one key squashed and deleted; the others wait
        [(team, distinct_id, _)] = gone
        rows = person_ids(client)
    # The squashed key's rows carry its person now.
    for team_id, row_distinct_id, person in rows.values():
        if (team_id, row_distinct_id) == (team, distinct_id):
            assert person == EXPECTED[(team, distinct_id)]
