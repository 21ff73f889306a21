"""Property deletion requests (`key_type: properties`): given keys leave the selected events of one team, in
`events` and in every exported file of their days, while every other key, value, column and row stays
byte-identical."""

import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from dagster import DagsterInstance

from dags.common import ClickHouseClient, ClickHouseResource
from dags.events import SHARDED_EVENTS, generate_demo_events
from dags.exports.datasets import EVENTS_DATASET
from dags.exports.manifest import DATA_FILE
from dags.exports.publish import export_day
from dags.management.deletion.jobs import data_deletion_dry_run_job, request_data_deletion
from dags.management.deletion.requests import TABLE, insert_request
from dags.tests.cluster_support import TWO_SHARDS
from dags.tests.conftest import ClusterUnderTest, PostgresServer
from dags.tests.test_batch_exports import declare, entry, postgres_rows
from dags.tests.test_batch_exports import postgres_url as pg_url
from dags.tests.test_data_deletion import (
    DATASETS,
    DAYS,
    Exports,
    data_files,
    local_exports,
    no_batch_exports,  # noqa: F401  (autouse: no batch exports unless a test declares some)
    output_metadata,
    read_parquet,
    run_deletion,
    snapshot,
)
from dags.tests.test_data_deletion_cluster import SHARD_ROWS, on_each_host, warehouse_on
from dags.tests.test_data_deletion_copies import exported, folder_files
from dags.web_analytics.refresh import refresh_window
from dags.web_analytics.sql import PRE_AGGREGATES

pytestmark = pytest.mark.end_to_end  # see conftest: embedded only unless every_engine

IP = "$ip"
TEAM, OTHER_TEAM = 1, 2
EVENT_COLUMNS = (
    "toString(uuid) AS uuid, event, properties, timestamp, team_id, distinct_id, toString(person_id) AS person_id, "
    "`$session_id`, inserted_at"
)

PROPERTY_MUTATIONS = (
    "SELECT count() AS n FROM system.mutations WHERE database = currentDatabase() AND table = {table:String} "
    "AND position(command, 'data_deletion_properties:') > 0"
)

# Members a JSON writer other than ClickHouse may produce: each must come out exactly as written.
TRICKY_PROPERTIES = [
    '{"a": 1.0, "$ip": "10.0.0.1", "b":1e3, "c": {"x" : [1, 2 ,"\\u00e9\\"q", {"$ip": 1}]}, "d":"caf\\u00e9 \\/x,}",'
    ' "$ip2":"kept", "$i":"kept too", "big":12345678901234567890123, "e":1E+3, "neg":-0.0000001,'
    ' "k\\u00e9y":"v\\\\", "s p":  "x", "t":true, "n":null, "u":"日本語" }',
    '{"$ip":"1.2.3.4"}',
    '  {"$ip":"1.2.3.4" , "last": [ ] }  ',
    '{"first":"\\\\","$ip":"\\\\\\"","\\u0024ip":"escaped key, same name"}',
    '{"nested":{"$ip":"inside, not top level"},"$ip2":"x"}',  # no top-level $ip: never rewritten
    "not json $ip",
    '["$ip"]',
]


# --- Raw members: an independent reading of a JSON object's top level ------------------------------------------


def raw_members(text: str) -> tuple[str, list[str], str]:
    """(the text up to the object's `{`, each top-level member exactly as written, the text from its `}`)."""
    start = text.index("{")
    members, depth, in_string, escaped, begin = [], 0, False, False, start + 1
    for position in range(start, len(text)):
        char = text[position]
        if in_string:
            escaped, in_string = (False, True) if escaped else (char == "\\", char != '"')
            continue
        if char == '"':
            in_string = True
        elif char in "{[":
            depth += 1
        elif char in "]}":
            depth -= 1
            if depth == 0:
                members.append(text[begin:position])
                return text[: start + 1], members, text[position:]
        elif char == "," and depth == 1:
            members.append(text[begin:position])
            begin = position + 1
    raise AssertionError(f"not an object: {text!r}")


def top_level_keys(text: str) -> set[str]:
    try:
        parsed = json.loads(text)
    except ValueError:
        return set()
    return set(parsed) if isinstance(parsed, dict) else set()


def expected_without(text: str, keys: set[str]) -> str:
    """`text` with the members of `keys` cut out, every other byte as it was."""
    head, members, tail = raw_members(text)
    kept = [member for member in members if json.loads("{" + member + "}").popitem()[0] not in keys]
    return head + ",".join(kept) + tail


def test_the_independent_member_reader_agrees_with_json() -> None:
    for text in TRICKY_PROPERTIES[:5]:
        head, members, tail = raw_members(text)
        assert json.loads(head + ",".join(members) + tail) == json.loads(text)


# --- A warehouse whose events carry $ip -------------------------------------------------------------------------


def add_ips_and_tricky_rows(client: ClickHouseClient) -> None:
    """`$ip` first in most events of teams 1 and 2 (compact JSON, as `generate_demo_events` writes it), and rows of
    team 1 on `DAYS[1]` with JSON written by hand."""
    client.command(
        "ALTER TABLE events UPDATE properties = concat('{\"$ip\":', toJSONString(IPv4NumToString(toUInt32("
        "cityHash64(uuid) % 4294967296))), ',', substring(properties, 2)) "
        "WHERE team_id IN (1, 2) AND cityHash64(uuid) % 5 != 0",
        settings={"mutations_sync": 2},
    )
    person = client.command("SELECT toString(any(person_id)) FROM events WHERE team_id = 1")
    for number, text in enumerate(TRICKY_PROPERTIES):
        for team in (TEAM, OTHER_TEAM):
            client.command(
                "INSERT INTO events (uuid, event, properties, timestamp, team_id, distinct_id, person_id, "
                "`$session_id`) VALUES (generateUUIDv4(), {event:String}, {properties:String}, "
                "toDateTime64({at:String}, 6, 'UTC'), {team:Int64}, 'tricky', toUUID({person:String}), '')",
                {
                    "event": "$pageview" if number % 2 == 0 else "$autocapture",
                    "properties": text,
                    "at": f"{DAYS[1]} {number + 1:02d}:00:00",
                    "team": team,
                    "person": person,
                },
            )


def warehouse_with_ips(clickhouse: ClickHouseResource, exports: Exports) -> None:
    with clickhouse.get_client() as client:
        generate_demo_events(client, start_date=DAYS[0], days=len(DAYS), events=2_000, seed=7)
        add_ips_and_tricky_rows(client)
        for pre_aggregate in PRE_AGGREGATES:
            refresh_window(
                client, pre_aggregate, first_day=DAYS[0], end_day=DAYS[-1] + timedelta(days=1), run_id="setup"
            )
    destination = exports.resource.open()
    for dataset in DATASETS:
        for day in DAYS:
            export_day(lambda: clickhouse.get_client(), exports.resource, destination, dataset, day, "setup-run")


def events_by_uuid(client: ClickHouseClient) -> dict[str, dict[str, Any]]:
    return {row["uuid"]: row for row in client.query_rows(f"SELECT {EVENT_COLUMNS} FROM events ORDER BY uuid")}


def request_properties(clickhouse: ClickHouseResource, instance: DagsterInstance, **config: Any) -> Any:  # noqa: ANN401 - a run result
    return request_data_deletion.execute_in_process(
        run_config={"ops": {"insert_deletion_request": {"config": {"key_type": "properties", **config}}}},
        resources={"clickhouse": clickhouse},
        instance=instance,
        raise_on_error=False,
    )


def request_rows(client: ClickHouseClient) -> list[dict[str, Any]]:
    return client.query_rows(
        f"SELECT request_id, team_id, key_type, key, properties, events, start_time, end_time, status, reason, "
        f"rows_deleted, days_recomputed, files_rewritten, completed_at FROM {TABLE} FINAL ORDER BY created_at"
    )


def is_selected(
    row: dict[str, Any], team: int, events: list[str], start: datetime | None, end: datetime | None
) -> bool:
    moment = row["timestamp"].replace(tzinfo=None)
    return (
        row["team_id"] == team
        and (not events or row["event"] in events)
        and (start is None or moment >= start)
        and (end is None or moment < end)
    )


def assert_removed_exactly(
    before: dict[str, dict[str, Any]],
    after: dict[str, dict[str, Any]],
    selected: Any,  # noqa: ANN401 - a predicate on a row
) -> int:
    """`$ip` left exactly the selected rows that held it, every other member byte-identical; every other column and
    row unchanged. Returns the rows changed."""
    assert after.keys() == before.keys()  # no row lost or added
    changed = 0
    for uuid, old in before.items():
        new = after[uuid]
        assert {k: v for k, v in new.items() if k != "properties"} == {
            k: v for k, v in old.items() if k != "properties"
        }, f"{uuid}: a column other than properties changed"
        if selected(old) and IP in top_level_keys(old["properties"]):
            assert new["properties"] == expected_without(old["properties"], {IP}), uuid
            assert IP not in top_level_keys(new["properties"])
            changed += 1
        else:
            assert new["properties"] == old["properties"], f"{uuid}: an unselected row was rewritten"
    return changed


def ips_in_file(content: bytes, team: int) -> int:
    table = read_parquet(content).to_pylist()
    return sum(1 for row in table if row["team_id"] == team and IP in top_level_keys(row["properties"]))


# --- Tests ------------------------------------------------------------------------------------------------------


@pytest.mark.every_engine
def test_removing_ip_leaves_every_other_key_value_column_row_and_team_byte_identical_in_events_and_exports(
    clickhouse: ClickHouseResource, tmp_path: Path, dagster_instance: DagsterInstance
) -> None:
    exports = local_exports(tmp_path / "exports")
    warehouse_with_ips(clickhouse, exports)
    with clickhouse.get_client() as client:
        before = events_by_uuid(client)
    before_files = exports.list_files()
    assert ips_in_file(before_files[f"events/date={DAYS[1]}/{DATA_FILE}"], TEAM) > 0

    assert request_properties(clickhouse, dagster_instance, team_id=TEAM, properties=[IP]).success
    result = run_deletion(clickhouse, exports, dagster_instance)

    assert result.success
    with clickhouse.get_client() as client:
        after = events_by_uuid(client)
        [request] = request_rows(client)
    changed = assert_removed_exactly(before, after, lambda row: row["team_id"] == TEAM)
    tricky = [row for row in before.values() if row["distinct_id"] == "tricky" and row["team_id"] == TEAM]
    assert sum(IP in top_level_keys(row["properties"]) for row in tricky) == 4  # the hand-written ones were reached
    assert changed > 100
    files = exports.list_files()
    assert data_files(files) == data_files(before_files)
    for day in DAYS:
        path = f"{EVENTS_DATASET.name}/date={day}/{DATA_FILE}"
        assert ips_in_file(files[path], TEAM) == 0
        assert ips_in_file(files[path], OTHER_TEAM) == ips_in_file(before_files[path], OTHER_TEAM) > 0
        assert read_parquet(files[path]).num_rows == read_parquet(before_files[path]).num_rows
    assert request["status"] == "done" and request["reason"] == ""
    assert (request["key_type"], request["key"], request["properties"]) == ("properties", "", [IP])
    assert request["rows_deleted"] == changed  # for a properties request: the rows rewritten
    assert sorted(request["days_recomputed"]) == DAYS
    assert f"{exports.resource.url}/events/date={DAYS[1]}/{DATA_FILE}" in request["files_rewritten"]
    report = output_metadata(result, "plan_deletions", "report")
    assert report["rows_to_rewrite"] == changed and report["rows_to_delete"] == 0


def test_a_request_limited_to_pageviews_in_a_time_range_changes_only_those_events(
    clickhouse: ClickHouseResource, tmp_path: Path, dagster_instance: DagsterInstance
) -> None:
    exports = local_exports(tmp_path / "exports")
    warehouse_with_ips(clickhouse, exports)
    start, end = datetime(2024, 3, 5, 2), datetime(2024, 3, 6, 12)
    with clickhouse.get_client() as client:
        before = events_by_uuid(client)
    before_files = exports.list_files()

    requested = request_properties(
        clickhouse,
        dagster_instance,
        team_id=TEAM,
        properties=[IP],
        events=["$pageview"],
        start_time=start.isoformat(),
        end_time=end.isoformat(),
    )
    assert requested.success
    result = run_deletion(clickhouse, exports, dagster_instance)

    assert result.success
    with clickhouse.get_client() as client:
        after = events_by_uuid(client)
        [request] = request_rows(client)
    changed = assert_removed_exactly(before, after, lambda row: is_selected(row, TEAM, ["$pageview"], start, end))
    assert 0 < changed
    assert any(  # events outside the selection still hold it
        IP in top_level_keys(row["properties"]) for row in after.values() if row["team_id"] == TEAM
    )
    assert (request["events"], request["start_time"].replace(tzinfo=None), request["rows_deleted"]) == (
        ["$pageview"],
        start,
        changed,
    )
    files = exports.list_files()
    assert files[f"events/date={DAYS[0]}/{DATA_FILE}"] == before_files[f"events/date={DAYS[0]}/{DATA_FILE}"]
    assert request["days_recomputed"] and DAYS[0] not in request["days_recomputed"]


def test_a_dry_run_of_a_property_request_reports_the_rows_and_changes_nothing(
    clickhouse: ClickHouseResource, tmp_path: Path, dagster_instance: DagsterInstance
) -> None:
    exports = local_exports(tmp_path / "exports")
    warehouse_with_ips(clickhouse, exports)
    assert request_properties(clickhouse, dagster_instance, team_id=TEAM, properties=[IP]).success
    with clickhouse.get_client() as client:
        holding = client.command(
            "SELECT count() FROM events WHERE team_id = 1 AND has(JSONExtractKeys(properties), '$ip')"
        )
        before_requests = request_rows(client)
    before = snapshot(clickhouse, exports)

    result = data_deletion_dry_run_job.execute_in_process(
        resources={"clickhouse": clickhouse, "export_destination": exports.resource},
        instance=dagster_instance,
        raise_on_error=False,
    )

    assert result.success
    assert snapshot(clickhouse, exports) == before
    with clickhouse.get_client() as client:
        assert request_rows(client) == before_requests
    summary = output_metadata(result, "plan_deletions", "report")["summary"]
    assert summary.startswith("Dry run: nothing was changed.")
    assert f"remove property keys from {holding:,} rows" in summary


def test_a_leftover_file_still_holding_the_key_keeps_the_request_open(
    clickhouse: ClickHouseResource, tmp_path: Path, dagster_instance: DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dags.management.deletion.ops as deletion_ops

    exports = local_exports(tmp_path / "exports")
    warehouse_with_ips(clickhouse, exports)
    assert request_properties(clickhouse, dagster_instance, team_id=TEAM, properties=[IP]).success
    # A broken rewrite op: it writes nothing and reports nothing, so the old files stay.
    monkeypatch.setattr(deletion_ops, "rewrite_files", lambda *args: args[4].clear() or [])

    result = run_deletion(clickhouse, exports, dagster_instance)

    assert not result.success
    [failure] = result.get_step_failure_events()
    description = str(failure.step_failure_data.user_failure_data.description)
    assert failure.step_key == "verify_and_complete"
    assert f"events/date={DAYS[1]}/{DATA_FILE} still holds" in description
    with clickhouse.get_client() as client:
        [request] = request_rows(client)
        assert client.command("SELECT count() FROM events WHERE has(JSONExtractKeys(properties), '$ip')") > 0
    assert request["status"] != "done"


def test_a_request_table_of_the_old_shape_gets_the_new_columns_and_its_requests_keep_working(
    clickhouse: ClickHouseResource, tmp_path: Path, dagster_instance: DagsterInstance
) -> None:
    exports = local_exports(tmp_path / "exports")
    with clickhouse.get_client() as client:
        generate_demo_events(client, start_date=DAYS[0], days=1, events=300, seed=3)
        # The table as it was before properties requests, with a request in it.
        client.command(
            f"CREATE TABLE {TABLE} (team_id Int64, key_type String, key String, created_at DateTime64(6, 'UTC'), "
            "status LowCardinality(String) DEFAULT 'pending', reason String DEFAULT '', "
            "event_days Array(Date) DEFAULT [], event_rows Array(UInt64) DEFAULT [], "
            "pre_aggregate_days Array(Date) DEFAULT [], rows_deleted UInt64 DEFAULT 0, "
            "days_recomputed Array(Date) DEFAULT [], files_rewritten Array(String) DEFAULT [], "
            "run_id String DEFAULT '', completed_at Nullable(DateTime64(6, 'UTC')) DEFAULT NULL, "
            "request_id String MATERIALIZED lower(hex(cityHash64(team_id, key_type, key, created_at))), "
            "version UInt64 DEFAULT toUnixTimestamp64Micro(now64(6))) "
            "ENGINE = ReplacingMergeTree(version) ORDER BY (team_id, key_type, key, created_at)"
        )
        client.command(
            f"INSERT INTO {TABLE} (team_id, key_type, key, created_at) VALUES (3, 'team', '', now64(6, 'UTC'))"
        )
        teams_rows = client.command("SELECT count() FROM events WHERE team_id = 3")

    result = run_deletion(clickhouse, exports, dagster_instance)

    assert result.success
    with clickhouse.get_client() as client:
        [request] = request_rows(client)
        assert client.command("SELECT count() FROM events WHERE team_id = 3") == 0
        # Inserts naming only the old columns still work, after the columns were added.
        client.command(
            f"INSERT INTO {TABLE} (team_id, key_type, key, created_at) VALUES (1, 'team', '', now64(6, 'UTC'))"
        )
        newest = request_rows(client)[-1]
    assert (request["status"], request["rows_deleted"], request["properties"]) == ("done", teams_rows, [])
    assert (newest["status"], newest["events"], newest["start_time"]) == ("pending", [], None)


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"properties": []}, "properties"),
        ({"properties": [""]}, "properties"),
        ({"properties": [IP], "events": [""]}, "events"),
        ({"properties": [IP], "start_time": "2024-03-06T00:00:00", "end_time": "2024-03-05T00:00:00"}, "start_time"),
        ({"properties": [IP], "start_time": "yesterday"}, "start_time"),
        ({"properties": [IP], "key": "0190f2c4-8a4e-7a6b-9c1d-2e3f4a5b6c7d"}, "key"),
    ],
)
def test_a_bad_property_request_is_refused_naming_the_field_and_stores_nothing(
    clickhouse: ClickHouseResource, dagster_instance: DagsterInstance, config: dict[str, Any], field: str
) -> None:
    result = request_properties(clickhouse, dagster_instance, team_id=TEAM, **config)

    assert not result.success
    [failure] = result.get_step_failure_events()
    assert f"{field} must" in str(failure.step_failure_data.error)
    with clickhouse.get_client() as client:
        assert not client.command(f"EXISTS TABLE {TABLE}") or request_rows(client) == []


def test_a_person_request_with_properties_is_refused_naming_the_field(
    clickhouse: ClickHouseResource, dagster_instance: DagsterInstance
) -> None:
    result = request_data_deletion.execute_in_process(
        run_config={
            "ops": {
                "insert_deletion_request": {
                    "config": {"team_id": 1, "key_type": "team", "properties": [IP]},
                }
            }
        },
        resources={"clickhouse": clickhouse},
        instance=dagster_instance,
        raise_on_error=False,
    )
    assert not result.success
    assert "properties must be empty for a team request" in str(
        result.get_step_failure_events()[0].step_failure_data.error
    )


def test_bad_property_requests_written_in_sql_are_rejected_by_the_run_naming_the_field(
    clickhouse: ClickHouseResource, tmp_path: Path, dagster_instance: DagsterInstance
) -> None:
    exports = local_exports(tmp_path / "exports")
    run_deletion(clickhouse, exports, dagster_instance)  # creates the table
    with clickhouse.get_client() as client:
        generate_demo_events(client, start_date=DAYS[0], days=1, events=300, seed=3)
        before = client.query_rows("SELECT properties FROM events ORDER BY uuid")
        client.command(
            f"INSERT INTO {TABLE} (team_id, key_type, key, created_at, properties, start_time, end_time) VALUES "
            "(1, 'properties', '', now64(6, 'UTC'), [], NULL, NULL), "
            "(2, 'properties', '', now64(6, 'UTC'), ['$ip'], '2024-03-06 00:00:00', '2024-03-05 00:00:00')"
        )

    result = run_deletion(clickhouse, exports, dagster_instance)

    assert not result.success
    with clickhouse.get_client() as client:
        reasons = {row["team_id"]: (row["status"], row["reason"]) for row in request_rows(client)}
        assert client.query_rows("SELECT properties FROM events ORDER BY uuid") == before
    assert reasons[1] == ("rejected", "properties must list at least one property key to remove, got []")
    assert reasons[2][0] == "rejected" and reasons[2][1].startswith("start_time must be before end_time")


def test_days_without_the_key_are_neither_rewritten_nor_recomputed(
    clickhouse: ClickHouseResource, tmp_path: Path, dagster_instance: DagsterInstance
) -> None:
    exports = local_exports(tmp_path / "exports")
    warehouse_with_ips(clickhouse, exports)
    before_files = exports.list_files()
    # A key no event holds.
    assert request_properties(clickhouse, dagster_instance, team_id=TEAM, properties=["$nowhere"]).success

    result = run_deletion(clickhouse, exports, dagster_instance)

    assert result.success
    assert exports.list_files() == before_files
    with clickhouse.get_client() as client:
        [request] = request_rows(client)
    assert (request["status"], request["rows_deleted"], request["days_recomputed"]) == ("done", 0, [])


# --- Batch exports of the team ----------------------------------------------------------------------------------


def batch_exports_of_the_team(
    clickhouse: ClickHouseResource,
    dagster_instance: DagsterInstance,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    postgres_url: str,
) -> tuple[Path, Path]:
    """Three daily batch exports of team 1: a folder with every column, a folder without `properties`, Postgres."""
    with_properties, without = tmp_path / "batch_all", tmp_path / "batch_narrow"
    assets = declare(
        tmp_path,
        monkeypatch,
        entry("team_all", TEAM, with_properties.as_uri()),
        entry("team_narrow", TEAM, without.as_uri(), columns=["uuid", "event", "timestamp", "team_id"]),
        entry("team_pg", TEAM, postgres_url),
    )
    for name in ("team_all", "team_narrow", "team_pg"):
        exported(assets, clickhouse, dagster_instance, name)
    return with_properties, without


def test_batch_exports_with_properties_lose_the_key_and_those_without_are_left_alone(
    clickhouse: ClickHouseResource,
    dagster_instance: DagsterInstance,
    postgres: PostgresServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    exports = local_exports(tmp_path / "exports")
    warehouse_with_ips(clickhouse, exports)
    database = postgres.create_database("props")
    with_properties, without = batch_exports_of_the_team(
        clickhouse, dagster_instance, tmp_path, monkeypatch, pg_url(postgres, database, "team_events")
    )
    all_before, narrow_before = folder_files(with_properties)(), folder_files(without)()
    with_ip = (
        "SELECT count(*) FROM team_events "
        "WHERE jsonb_typeof(properties::jsonb) = 'object' AND properties::jsonb ? '$ip'"
    )
    assert postgres_rows(postgres, database, with_ip)[0][0] > 0
    assert request_properties(clickhouse, dagster_instance, team_id=TEAM, properties=[IP]).success

    result = run_deletion(clickhouse, exports, dagster_instance)

    assert result.success
    all_after = folder_files(with_properties)()
    assert all_after.keys() == all_before.keys()
    for path, content in all_after.items():
        before_rows = {row["uuid"]: row for row in read_parquet(all_before[path]).to_pylist()}
        after_rows = {row["uuid"]: row for row in read_parquet(content).to_pylist()}
        assert assert_removed_exactly(before_rows, after_rows, lambda row: True) > 0
    assert folder_files(without)() == narrow_before  # not reached: it holds no properties
    assert postgres_rows(postgres, database, with_ip)[0][0] == 0
    with clickhouse.get_client() as client:
        [request] = request_rows(client)
    assert any("team_events" in place for place in request["files_rewritten"])
    assert not any(str(without.as_uri()) in place for place in request["files_rewritten"])


def test_a_batch_copy_still_holding_the_key_keeps_the_request_open_naming_it(
    clickhouse: ClickHouseResource,
    dagster_instance: DagsterInstance,
    postgres: PostgresServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import dags.management.deletion.copy_ops as copy_ops

    exports = local_exports(tmp_path / "exports")
    warehouse_with_ips(clickhouse, exports)
    database = postgres.create_database("stale_props")
    batch_exports_of_the_team(
        clickhouse, dagster_instance, tmp_path, monkeypatch, pg_url(postgres, database, "team_events")
    )
    assert request_properties(clickhouse, dagster_instance, team_id=TEAM, properties=[IP]).success
    monkeypatch.setattr(copy_ops, "rewrite_copy", lambda *args: [])  # reports success, writes nothing

    result = run_deletion(clickhouse, exports, dagster_instance)

    assert not result.success
    [failure] = result.get_step_failure_events()
    description = str(failure.step_failure_data.user_failure_data.description)
    assert (
        f"batch export team_all: {(tmp_path / 'batch_all').as_uri()}/events/date={DAYS[1]}/{DATA_FILE} still holds"
        in (description)
    )
    assert "batch export team_pg: postgresql://" in description and "team_narrow" not in description
    with clickhouse.get_client() as client:
        [request] = request_rows(client)
    assert request["status"] != "done"


# --- On a sharded cluster ---------------------------------------------------------------------------------------


def test_on_a_cluster_a_key_leaves_the_teams_rows_on_every_shard_and_every_other_member_stays(
    clickhouse_cluster: ClusterUnderTest, dagster_instance: DagsterInstance, tmp_path: Path
) -> None:
    key = "$geoip_city_name"  # every demo event has it; a pre-aggregate dimension reads it
    resource = clickhouse_cluster.resource(TWO_SHARDS)
    exports = warehouse_on(resource, tmp_path)
    before = [{row["uuid"]: row for row in rows} for rows in on_each_host(clickhouse_cluster, SHARD_ROWS)]
    assert all(before)  # both shards hold rows
    with resource.get_client() as client:
        insert_request(client, TEAM, "properties", "", properties=[key])

    result = run_deletion(resource, exports, dagster_instance)

    assert result.success
    after = [{row["uuid"]: row for row in rows} for rows in on_each_host(clickhouse_cluster, SHARD_ROWS)]
    for old, new in zip(before, after, strict=True):
        assert new.keys() == old.keys()
        for uuid, row in old.items():
            expected = expected_without(row["properties"], {key}) if row["team_id"] == TEAM else row["properties"]
            assert new[uuid] == {**row, "properties": expected}
    assert sum(row["team_id"] == TEAM for rows in before for row in rows.values()) > 0
    with resource.get_client() as client:
        assert [request["status"] for request in request_rows(client)] == ["done"]
    mutations = on_each_host(clickhouse_cluster, PROPERTY_MUTATIONS, {"table": SHARDED_EVENTS})
    assert [answer[0]["n"] for answer in mutations] == [1, 1], "one mutation per month on each host"
