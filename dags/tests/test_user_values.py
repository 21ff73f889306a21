"""Integer settings are range-checked for what they are bound to; the error names the variable and its range."""

import os
import subprocess
import sys

import pytest

from dags.common import SettingError, env_positive_int


@pytest.mark.parametrize(
    ("variable", "value", "maximum"),
    [
        ("DATA_DELETION_MAX_REQUESTS_PER_RUN", "4294967296", "4294967295"),
        ("DATA_DELETION_MAX_WAIT_HOURS", "1000000000", "878400"),
        ("CLICKHOUSE_BACKUP_RETENTION_DAYS", "1000000000", "36600"),
    ],
)
def test_the_data_platform_location_refuses_an_integer_setting_beyond_its_bound_naming_it(
    variable: str, value: str, maximum: str
) -> None:
    loaded = subprocess.run(
        [sys.executable, "-c", "import dags.locations.data_platform"],
        env={**os.environ, variable: value},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert loaded.returncode != 0
    assert f"{variable} must be a whole number from 1 to {maximum}" in loaded.stderr


def test_an_integer_setting_at_its_bound_is_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOME_LIMIT", "4294967295")
    assert env_positive_int("SOME_LIMIT", 1) == 4294967295
    monkeypatch.setenv("SOME_LIMIT", "4294967296")
    with pytest.raises(SettingError, match="SOME_LIMIT must be a whole number from 1 to 4294967295"):
        env_positive_int("SOME_LIMIT", 1)


def test_a_malformed_clickhouse_url_fails_the_run_at_once_naming_the_variable_without_the_password() -> None:
    import time

    from dagster import DagsterInstance, job, op

    from dags.common import CLICKHOUSE_RETRY_POLICY, ClickHouseResource

    @op(retry_policy=CLICKHOUSE_RETRY_POLICY)
    def query(clickhouse: ClickHouseResource) -> None:
        with clickhouse.get_client() as client:
            client.query_rows("SELECT 1")

    @job
    def one_query() -> None:
        query()

    started = time.monotonic()
    with DagsterInstance.ephemeral() as instance:
        result = one_query.execute_in_process(
            resources={"clickhouse": ClickHouseResource(url="http://u:hunter2@host:notaport/db")},
            instance=instance,
            raise_on_error=False,
        )
        events = [event.event_type_value for event in result.all_events]
        text = "\n".join(str(event.event_specific_data) for event in result.all_events)
    assert not result.success and time.monotonic() - started < 20
    assert "STEP_UP_FOR_RETRY" not in events
    assert "CLICKHOUSE_URL" in text and "hunter2" not in text
