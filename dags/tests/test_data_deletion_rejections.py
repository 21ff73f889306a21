"""A deletion run that rejects requests written in SQL says so (a failed run naming each request and why)
while it carries out the valid requests of the same run."""

from datetime import date
from pathlib import Path

from dagster import DagsterInstance

from dags.common import ClickHouseClient, ClickHouseResource
from dags.events import generate_demo_events
from dags.management.deletion.requests import TABLE
from dags.tests.test_data_deletion import events_rows, local_exports, request_rows, run_deletion

DAY = date(2024, 3, 4)


def insert_by_sql(client: ClickHouseClient, values: str) -> None:
    """A request as a user writes it, the values typed into the SQL text."""
    client.command(f"INSERT INTO {TABLE} (team_id, key_type, key, created_at) VALUES ({values}, now64(6, 'UTC'))")


def failure_of(result, step: str) -> str:  # noqa: ANN001
    [failure] = [event for event in result.get_step_failure_events() if event.step_key == step]
    return str(failure.step_failure_data.user_failure_data.description)


def test_a_run_that_rejects_sql_requests_fails_naming_them_and_still_deletes_the_valid_request(
    clickhouse: ClickHouseResource, tmp_path: Path, dagster_instance: DagsterInstance
) -> None:
    exports = local_exports(tmp_path / "exports")
    with clickhouse.get_client() as client:
        generate_demo_events(client, start_date=DAY, days=1, events=600, seed=3)
        person, distinct_id = client.query_rows(
            "SELECT toString(person_id) AS person, any(distinct_id) AS distinct_id FROM events WHERE team_id = 1 "
            "GROUP BY person ORDER BY count() DESC, person LIMIT 1"
        )[0].values()
        before = events_rows(client)
    run_deletion(clickhouse, exports, dagster_instance)  # creates the request table (README's fresh-instance step)
    with clickhouse.get_client() as client:
        insert_by_sql(client, f"1, 'person', '{distinct_id}'")  # a distinct_id where the person UUID belongs
        insert_by_sql(client, "9223372036854775808, 'team', ''")  # beyond Int64: ClickHouse stores it wrapped
        insert_by_sql(client, f"1, 'person', '{person}'")

    result = run_deletion(clickhouse, exports, dagster_instance)

    assert not result.success
    failed = {event.step_key for event in result.get_step_failure_events()}
    assert failed == {"report_rejected_requests"}
    message = failure_of(result, "report_rejected_requests")
    assert message.startswith("2 deletion request(s) rejected: ")
    assert f"key {distinct_id!r} is not a person UUID" in message
    assert "team -9223372036854775808 has no events" in message
    with clickhouse.get_client() as client:
        # The valid request of the same run was carried out: exactly the person's rows are gone.
        assert events_rows(client) == [row for row in before if row["person_id"] != person]
        statuses = {(row["team_id"], row["key"]): (row["status"], row["reason"]) for row in request_rows(client)}
    assert statuses[(1, person)] == ("done", "")
    assert statuses[(1, distinct_id)][0] == "rejected" and "not a person UUID" in statuses[(1, distinct_id)][1]
    assert statuses[(-(2**63), "")] == ("rejected", "team -9223372036854775808 has no events")

    again = run_deletion(clickhouse, exports, dagster_instance)  # rejected requests are not taken again
    assert again.success


def test_a_dry_run_that_would_reject_a_request_fails_naming_it_and_records_nothing(
    clickhouse: ClickHouseResource, tmp_path: Path, dagster_instance: DagsterInstance
) -> None:
    exports = local_exports(tmp_path / "exports")
    with clickhouse.get_client() as client:
        generate_demo_events(client, start_date=DAY, days=1, events=300, seed=3)
    run_deletion(clickhouse, exports, dagster_instance)
    with clickhouse.get_client() as client:
        insert_by_sql(client, "1, 'user', 'someone'")
        before = request_rows(client)

    result = run_deletion(clickhouse, exports, dagster_instance, dry_run=True)

    assert not result.success
    message = failure_of(result, "report_rejected_requests")
    assert message.startswith("1 deletion request(s) would be rejected: ")
    assert "unknown key_type 'user'" in message
    with clickhouse.get_client() as client:
        assert request_rows(client) == before
    assert before[0]["status"] == "pending"
