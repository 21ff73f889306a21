"""Deletion requests through the launchpad's path: bad requests are refused, naming the field, writing nothing."""

from typing import Any

import pytest
from dagster import DagsterInstance

from dags.common import ClickHouseResource
from dags.management.deletion.jobs import request_data_deletion
from dags.management.deletion.requests import TABLE

PERSON = "0190f2c4-8a4e-7a6b-9c1d-2e3f4a5b6c7d"


def request(clickhouse: ClickHouseResource, instance: DagsterInstance, **config: Any):  # noqa: ANN201
    return request_data_deletion.execute_in_process(
        run_config={"ops": {"insert_deletion_request": {"config": config}}},
        resources={"clickhouse": clickhouse},
        instance=instance,
        raise_on_error=False,
    )


def stored_requests(clickhouse: ClickHouseResource) -> list[dict[str, Any]]:
    with clickhouse.get_client() as client:
        exists = f"SELECT 1 FROM system.tables WHERE database = currentDatabase() AND name = '{TABLE}'"
        if not client.query_rows(exists):
            return []
        return client.query_rows(f"SELECT team_id, key_type, key FROM {TABLE}")


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"team_id": 18446744073709551617, "key_type": "team"}, "team_id"),
        ({"team_id": 2**63, "key_type": "team"}, "team_id"),
        ({"team_id": 1, "key_type": "person", "key": "user@example.com"}, "key"),
        ({"team_id": 1, "key_type": "everything"}, "key_type"),
    ],
)
def test_a_bad_request_fails_naming_the_field_and_stores_nothing(
    clickhouse: ClickHouseResource, dagster_instance: DagsterInstance, config: dict[str, Any], field: str
) -> None:
    result = request(clickhouse, dagster_instance, **config)
    assert not result.success
    failures = result.get_step_failure_events()
    failure = str(failures[0].step_failure_data.error) if failures else str(result)
    assert f"{field} must" in failure
    assert stored_requests(clickhouse) == []


def test_a_bool_team_id_is_refused_before_the_run_starts(
    clickhouse: ClickHouseResource, dagster_instance: DagsterInstance
) -> None:
    with pytest.raises(Exception, match="team_id"):
        request(clickhouse, dagster_instance, team_id=True, key_type="team")
    assert stored_requests(clickhouse) == []


def test_a_good_person_request_is_stored_as_given(
    clickhouse: ClickHouseResource, dagster_instance: DagsterInstance
) -> None:
    assert request(clickhouse, dagster_instance, team_id=2**63 - 1, key_type="person", key=PERSON).success
    assert stored_requests(clickhouse) == [{"team_id": 2**63 - 1, "key_type": "person", "key": PERSON}]
