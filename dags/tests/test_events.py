"""The events table contract and the demo traffic generator."""

import json
from datetime import date

import pytest
from dagster import DagsterInstance, materialize

from dags.common import ClickHouseClient, ClickHouseResource
from dags.events import DEMO_TEAM_IDS, create_events_table, demo_events, generate_demo_events

CONTRACT_COLUMNS = {
    "uuid": "UUID",
    "event": "String",
    "properties": "String",
    "timestamp": "DateTime64(6, 'UTC')",
    "team_id": "Int64",
    "distinct_id": "String",
    "person_id": "UUID",
    "$session_id": "String",
}

WEB_PROPERTIES = {
    "$host", "$pathname", "$current_url", "$referring_domain", "$device_type", "$browser", "$os",
    "$viewport_width", "$viewport_height", "$geoip_country_code", "$geoip_city_name",
    "$geoip_subdivision_1_code", "$geoip_subdivision_1_name",
}  # fmt: skip
UTM_PROPERTIES = {"utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content"}


def table_fingerprint(ch: ClickHouseClient) -> dict:
    columns = "uuid, event, properties, timestamp, team_id, distinct_id, person_id, `$session_id`"
    return ch.query_rows(f"SELECT count() AS rows, sum(cityHash64({columns})) AS fingerprint FROM events")[0]


def test_events_table_has_the_contract_columns_and_extra_ones_have_defaults(ch: ClickHouseClient) -> None:
    create_events_table(ch)
    columns = ch.query_rows(
        "SELECT name, type, default_kind FROM system.columns WHERE database = currentDatabase() AND table = 'events'"
    )
    by_name = {row["name"]: row for row in columns}
    assert {name: by_name[name]["type"] for name in CONTRACT_COLUMNS} == CONTRACT_COLUMNS
    for name, row in by_name.items():
        if name not in CONTRACT_COLUMNS:
            assert row["default_kind"] == "DEFAULT", f"extra column {name} must have a default"
    ch.command(
        "INSERT INTO events (uuid, event, properties, timestamp, team_id, distinct_id, person_id, `$session_id`) "
        "VALUES (generateUUIDv4(), '$pageview', '{}', '2024-03-15 10:00:00.123456', 7, 'd1', generateUUIDv4(), 's1')"
    )
    assert ch.query_rows("SELECT toString(timestamp) AS ts FROM events") == [{"ts": "2024-03-15 10:00:00.123456"}]
    sorting_key = ch.command(
        "SELECT sorting_key FROM system.tables WHERE database = currentDatabase() AND name = 'events'"
    )
    assert str(sorting_key).startswith("team_id, toDate(timestamp)")


def test_generator_writes_exactly_the_requested_events_deterministically(ch: ClickHouseClient) -> None:
    generate_demo_events(ch, start_date=date(2024, 3, 1), days=3, events=12_345, seed=7)
    first = table_fingerprint(ch)
    assert first["rows"] == 12_345
    ch.command("TRUNCATE TABLE events")
    generate_demo_events(ch, start_date=date(2024, 3, 1), days=3, events=12_345, seed=7)
    assert table_fingerprint(ch) == first
    ch.command("TRUNCATE TABLE events")
    generate_demo_events(ch, start_date=date(2024, 3, 1), days=3, events=12_345, seed=8)
    assert table_fingerprint(ch)["fingerprint"] != first["fingerprint"]


def test_generated_traffic_looks_like_web_sessions(ch: ClickHouseClient) -> None:
    generate_demo_events(ch, start_date=date(2024, 3, 1), days=2, events=20_000, seed=1)
    events = {row["event"]: row["n"] for row in ch.query_rows("SELECT event, count() AS n FROM events GROUP BY event")}
    assert set(events) == {"$pageview", "$autocapture", "$pageleave"}
    assert {row["team_id"] for row in ch.query_rows("SELECT DISTINCT team_id FROM events")} == set(DEMO_TEAM_IDS)
    days = ch.query_rows("SELECT DISTINCT toDate(timestamp) AS day FROM events")
    assert {row["day"] for row in days} == {date(2024, 3, 1), date(2024, 3, 2)}

    keys: set[str] = set()
    for row in ch.query_rows("SELECT properties FROM events LIMIT 5000"):
        properties = json.loads(row["properties"])
        assert WEB_PROPERTIES <= set(properties)
        assert isinstance(properties["$viewport_width"], int)
        keys |= set(properties)
    assert UTM_PROPERTIES | {"gclid", "fbclid"} <= keys

    sessions = ch.query_rows(
        """
        SELECT
            countIf(event = '$pageview') AS pageviews,
            countIf(event = '$autocapture') AS autocaptures,
            dateDiff('second', min(timestamp), max(timestamp)) AS duration
        FROM events GROUP BY `$session_id`
        """
    )
    bounces = [s for s in sessions if s["pageviews"] == 1 and s["autocaptures"] == 0 and s["duration"] < 10]
    assert bounces, "some sessions bounce"
    assert any(s["pageviews"] == 1 and s["autocaptures"] == 0 and s["duration"] >= 10 for s in sessions)
    assert any(s["duration"] > 600 for s in sessions), "some sessions are long"
    assert any(s["pageviews"] == 0 for s in sessions), "a few sessions have no pageview"


def test_generator_rejects_sizes_outside_its_range(ch: ClickHouseClient) -> None:
    with pytest.raises(ValueError, match="between 1 and 10,000,000"):
        generate_demo_events(ch, start_date=date(2024, 3, 1), days=1, events=20_000_000)


def test_demo_events_asset_replaces_its_day_and_leaves_other_teams_alone(
    clickhouse: ClickHouseResource, ch: ClickHouseClient, dagster_instance: DagsterInstance
) -> None:
    create_events_table(ch)
    ch.command(
        "INSERT INTO events (uuid, event, properties, timestamp, team_id, distinct_id, person_id, `$session_id`) "
        "VALUES (generateUUIDv4(), '$pageview', '{}', '2024-03-15 10:00:00', 99, 'real', generateUUIDv4(), 's')"
    )
    config = {"ops": {"demo_events": {"config": {"events_per_day": 3_000}}}}
    for _ in range(2):
        result = materialize(
            [demo_events],
            partition_key="2024-03-15",
            resources={"clickhouse": clickhouse},
            run_config=config,
            instance=dagster_instance,
        )
        assert result.success
    per_team = ch.query_rows("SELECT team_id, count() AS n FROM events GROUP BY team_id ORDER BY team_id")
    assert sum(row["n"] for row in per_team if row["team_id"] in DEMO_TEAM_IDS) == 3_000
    assert {"team_id": 99, "n": 1} in per_team
    assert ch.query_rows("SELECT DISTINCT toDate(timestamp) AS day FROM events WHERE team_id = 1")[0]["day"] == date(
        2024, 3, 15
    )
    metadata = result.asset_materializations_for_node("demo_events")[0].metadata
    assert metadata["rows_written"].value == 3_000


def test_demo_events_record_an_override_for_each_anonymous_device_that_names_its_logged_in_persons_id(
    clickhouse: ClickHouseResource, ch: ClickHouseClient, dagster_instance: DagsterInstance
) -> None:
    result = materialize(
        [demo_events],
        partition_key="2024-03-15",
        resources={"clickhouse": clickhouse},
        run_config={"ops": {"demo_events": {"config": {"events_per_day": 20_000}}}},
        instance=dagster_instance,
    )
    assert result.success
    persons = {
        (row["team_id"], row["distinct_id"]): {str(person) for person in row["persons"]}
        for row in ch.query_rows(
            "SELECT team_id, distinct_id, groupUniqArray(toString(person_id)) AS persons FROM events GROUP BY ALL"
        )
    }
    overrides = ch.query_rows(
        "SELECT team_id, distinct_id, toString(person_id) AS person_id, version, toDate(_timestamp) AS day "
        "FROM person_distinct_id_overrides FINAL"
    )
    anonymous = {key for key in persons if key[1].startswith("anon-")}
    assert anonymous and {(row["team_id"], row["distinct_id"]) for row in overrides} == anonymous
    logged_in_too = 0
    for row in overrides:
        key = (row["team_id"], row["distinct_id"])
        assert row["version"] == 1 and row["day"] == date(2024, 3, 15)
        assert row["person_id"] not in persons[key]  # the device's events still carry a person of their own
        identified = persons.get((row["team_id"], row["distinct_id"].replace("anon-", "user-", 1)))
        if identified:  # the same person's logged-in events that day carry the id the override names
            assert identified == {row["person_id"]}
            logged_in_too += 1
    assert logged_in_too > 0  # so the squash changes that day's unique persons
    assert result.asset_materializations_for_node("demo_events")[0].metadata["person_overrides"].value == len(anonymous)


def test_demo_events_carry_the_visitors_ip_address_first_and_the_generator_only_when_asked(
    clickhouse: ClickHouseResource, ch: ClickHouseClient, dagster_instance: DagsterInstance
) -> None:
    generate_demo_events(ch, start_date=date(2024, 3, 14), days=1, events=500, seed=3)
    result = materialize(
        [demo_events],
        partition_key="2024-03-15",
        resources={"clickhouse": clickhouse},
        run_config={"ops": {"demo_events": {"config": {"events_per_day": 500}}}},
        instance=dagster_instance,
    )
    assert result.success
    for row in ch.query_rows("SELECT toString(toDate(timestamp)) AS day, properties FROM events"):
        properties = json.loads(row["properties"])
        if row["day"] == "2024-03-15":
            assert next(iter(properties)) == "$ip" and len(properties["$ip"].split(".")) == 4
        else:
            assert "$ip" not in properties
