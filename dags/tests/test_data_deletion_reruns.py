"""A request left part-way by a killed deletion run, then a late event of the same person in another month:
the next run plans the request again from what is still in events and finishes it."""

from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from dagster import DagsterInstance

from dags.common import ClickHouseClient, ClickHouseResource
from dags.events import generate_demo_events
from dags.exports.manifest import DATA_FILE
from dags.exports.publish import export_day
from dags.management.deletion.jobs import data_deletion_job
from dags.management.deletion.requests import TABLE
from dags.tests.test_data_deletion import (
    DATASETS,
    DAYS,
    Exports,
    build_warehouse,
    events_rows,
    local_exports,
    output_metadata,
    person_of_one_day,
    pre_aggregate_rows,
    read_parquet,
    request_rows,
    run_deletion,
)
from dags.web_analytics.refresh import refresh_window
from dags.web_analytics.sql import PRE_AGGREGATES

LATE_DAY = date(2024, 4, 2)  # another month, so another partition of events than the plan's
LATE_EVENTS = 3

# The steps a killed run got through, and the stage it left the request at.
KILLED_AFTER = {
    "plan_deletions": ("planned", ["plan_deletions"]),
    "delete_requested_events": ("events_deleted", ["plan_deletions", "delete_requested_events"]),
    "recompute_pre_aggregates": (
        "pre_aggregates_recomputed",
        ["plan_deletions", "delete_requested_events", "recompute_pre_aggregates"],
    ),
}


def run_steps_up_to(
    clickhouse: ClickHouseResource, exports: Exports, instance: DagsterInstance, steps: list[str]
) -> None:
    """A deletion run that stops after ``steps``, as a killed run does (each step records its stage)."""
    result = data_deletion_job.execute_in_process(
        resources={"clickhouse": clickhouse, "export_destination": exports.resource},
        instance=instance,
        op_selection=steps,
    )
    assert result.success


def add_late_day(clickhouse: ClickHouseResource, exports: Exports, pageview: dict[str, Any]) -> None:
    """Other people's events of ``LATE_DAY`` and ``LATE_EVENTS`` late pageviews like ``pageview`` (a person's
    event), pre-aggregated and exported like any day."""
    with clickhouse.get_client() as client:
        generate_demo_events(client, start_date=LATE_DAY, days=1, events=500, seed=11)
        client.command(
            "INSERT INTO events (uuid, event, properties, timestamp, team_id, distinct_id, person_id, `$session_id`) "
            "SELECT generateUUIDv4(number), '$pageview', {properties:String}, {late:DateTime64(6, 'UTC')} + number, "
            "{team:Int64}, {distinct_id:String}, toUUID({person:String}), 'late-session' FROM numbers({count:UInt32})",
            {**pageview, "late": f"{LATE_DAY} 10:00:00", "count": LATE_EVENTS},
        )
        for pre_aggregate in PRE_AGGREGATES:
            refresh_window(client, pre_aggregate, first_day=LATE_DAY, end_day=LATE_DAY + timedelta(1), run_id="late")
    destination = exports.resource.open()
    for dataset in DATASETS:
        export_day(lambda: clickhouse.get_client(), exports.resource, destination, dataset, LATE_DAY, "late-run")


def rows_of(client: ClickHouseClient, person: str) -> int:
    return int(client.command("SELECT count() FROM events WHERE person_id = toUUID({p:String})", {"p": person}))


def request_a_persons_deletion_by_sql(
    clickhouse: ClickHouseResource, exports: Exports, instance: DagsterInstance
) -> tuple[str, int, dict[str, Any]]:
    """The warehouse, and a request in SQL for a person of ``DAYS[1]``: (person, their rows, one pageview)."""
    build_warehouse(clickhouse, exports)
    with clickhouse.get_client() as client:
        team, person = person_of_one_day(client, DAYS[1])
        first_rows = rows_of(client, person)
        [pageview] = client.query_rows(
            "SELECT properties, team_id AS team, distinct_id, toString(person_id) AS person FROM events "
            "WHERE person_id = toUUID({p:String}) AND event = '$pageview' ORDER BY timestamp LIMIT 1",
            {"p": person},
        )
    assert run_deletion(clickhouse, exports, instance).success  # README: creates the request table
    with clickhouse.get_client() as client:
        client.command(
            f"INSERT INTO {TABLE} (team_id, key_type, key, created_at) "
            "VALUES ({team:Int64}, 'person', {person:String}, now64(6, 'UTC'))",
            {"team": team, "person": person},
        )
    return person, first_rows, pageview


@pytest.mark.parametrize("killed_after", list(KILLED_AFTER))
def test_a_late_event_after_a_killed_run_is_planned_again_and_the_next_run_finishes_the_request(
    clickhouse: ClickHouseResource, tmp_path: Path, dagster_instance: DagsterInstance, killed_after: str
) -> None:
    exports = local_exports(tmp_path / "exports")
    person, first_rows, pageview = request_a_persons_deletion_by_sql(clickhouse, exports, dagster_instance)
    stage, steps = KILLED_AFTER[killed_after]
    run_steps_up_to(clickhouse, exports, dagster_instance, steps)
    with clickhouse.get_client() as client:
        assert [row["status"] for row in request_rows(client)] == [stage]
    add_late_day(clickhouse, exports, pageview)
    with clickhouse.get_client() as client:
        before = events_rows(client)
        assert rows_of(client, person) == LATE_EVENTS + (first_rows if killed_after == "plan_deletions" else 0)
    late_files = {path: content for path, content in exports.list_files().items() if f"date={LATE_DAY}" in path}
    dry = run_deletion(clickhouse, exports, dagster_instance, dry_run=True)  # reports the late day, changes nothing
    assert dry.success
    [planned] = dry.output_for_node("plan_deletions", "report")["requests"]
    assert planned["rows_by_day"][LATE_DAY.isoformat()] == LATE_EVENTS
    with clickhouse.get_client() as client:
        assert [row["status"] for row in request_rows(client)] == [stage]

    rerun = run_deletion(clickhouse, exports, dagster_instance)

    assert rerun.success
    # The delete went only where the person's rows were at the time of the rerun.
    mutations = output_metadata(rerun, "delete_requested_events")["mutations"]
    assert mutations == (2 if killed_after == "plan_deletions" else 1)
    with clickhouse.get_client() as client:
        assert events_rows(client) == [row for row in before if row["person_id"] != person]
        assert rows_of(client, person) == 0
        left_late = client.command("SELECT count() FROM events WHERE toDate(timestamp) = {d:Date}", {"d": LATE_DAY})
        recomputed = {day: pre_aggregate_rows(client, day) for day in (DAYS[1], LATE_DAY)}
        for day in recomputed:  # both days' pre-aggregates equal a fresh computation from what is left
            for pre_aggregate in PRE_AGGREGATES:
                refresh_window(client, pre_aggregate, first_day=day, end_day=day + timedelta(1), run_id="fresh")
            assert pre_aggregate_rows(client, day) == recomputed[day]
        [request] = request_rows(client)
    assert request["status"] == "done" and request["run_id"] == rerun.run_id
    assert request["rows_deleted"] == first_rows + LATE_EVENTS
    assert request["days_recomputed"] == [DAYS[1], LATE_DAY]
    files = exports.list_files()
    for day in (DAYS[1], LATE_DAY):
        events_file = read_parquet(files[f"events/date={day}/{DATA_FILE}"])
        assert person not in events_file.column("person_id").to_pylist()
        for dataset in DATASETS:
            assert f"{exports.resource.url}/{dataset.name}/date={day}/{DATA_FILE}" in request["files_rewritten"]
    assert read_parquet(files[f"events/date={LATE_DAY}/{DATA_FILE}"]).num_rows == left_late
    for dataset in DATASETS[1:]:  # the late day's pre-aggregate exports were rewritten from the recomputed day
        path = f"{dataset.name}/date={LATE_DAY}/{DATA_FILE}"
        assert files[path] != late_files[path]
        assert read_parquet(files[path]).num_rows == len(recomputed[LATE_DAY][dataset.name])

    again = run_deletion(clickhouse, exports, dagster_instance)
    assert again.success
    messages = [record.user_message for record in dagster_instance.all_logs(again.run_id)]
    assert "No pending deletion requests: nothing to do." in messages


def test_rows_that_arrive_after_the_plan_are_not_deleted_without_their_days_and_the_next_run_plans_them(
    clickhouse: ClickHouseResource, tmp_path: Path, dagster_instance: DagsterInstance
) -> None:
    exports = local_exports(tmp_path / "exports")
    person, first_rows, pageview = request_a_persons_deletion_by_sql(clickhouse, exports, dagster_instance)
    run_steps_up_to(clickhouse, exports, dagster_instance, ["plan_deletions"])
    with clickhouse.get_client() as client:
        [request_id] = [row["request_id"] for row in request_rows(client)]
    add_late_day(clickhouse, exports, pageview)  # arrives after the plan, before its delete

    # The rest of that run, re-executed from its delete step with the plan's output (as the UI re-executes
    # a run from a failed step): the late rows are outside the plan, so they are left for the next plan.
    rest = data_deletion_job.execute_in_process(
        run_config={"ops": {"delete_requested_events": {"inputs": {"request_ids": [{"value": request_id}]}}}},
        resources={"clickhouse": clickhouse, "export_destination": exports.resource},
        instance=dagster_instance,
        op_selection=["delete_requested_events*"],
        raise_on_error=False,
    )

    assert not rest.success
    [failure] = rest.get_step_failure_events()
    description = str(failure.step_failure_data.user_failure_data.description)
    assert failure.step_key == "verify_and_complete" and f"{LATE_EVENTS} matching rows still in events" in description
    with clickhouse.get_client() as client:
        assert rows_of(client, person) == LATE_EVENTS
        assert request_rows(client)[0]["status"] == "pre_aggregates_recomputed"

    rerun = run_deletion(clickhouse, exports, dagster_instance)

    assert rerun.success
    with clickhouse.get_client() as client:
        assert rows_of(client, person) == 0
        [request] = request_rows(client)
    assert request["status"] == "done" and request["rows_deleted"] == first_rows + LATE_EVENTS
    assert request["days_recomputed"] == [DAYS[1], LATE_DAY]
    late_events_file = read_parquet(exports.list_files()[f"events/date={LATE_DAY}/{DATA_FILE}"])
    assert person not in late_events_file.column("person_id").to_pylist()
