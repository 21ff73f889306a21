"""A backup on a laptop without ``CLICKHOUSE_BACKUP_URL`` fails with one line saying what to set, and the failure
alert stays silent: a setting to make is not an incident. A backup that fails for another reason still alerts."""

from collections.abc import Iterator

import pytest
from dagster import DagsterInstance, ExecuteInProcessResult

from dags.common import ClickHouseResource
from dags.management.backups import backup_storage_from_env, clickhouse_backup_job
from dags.tests.conftest import HttpApi, Reply
from dags.tests.test_operations import evaluate_failure_sensor, posted_messages, slack

pytestmark = pytest.mark.end_to_end  # see conftest: a laptop's embedded engine


@pytest.fixture
def slack_api(http_api: HttpApi) -> Iterator[HttpApi]:
    http_api.route("POST", "/api/chat.postMessage", Reply(200, {"ok": True, "channel": "C123", "ts": "1.0"}))
    yield http_api


@pytest.fixture(autouse=True)
def no_backup_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """A laptop's environment: nothing about backups set."""
    for variable in ("CLICKHOUSE_BACKUP_URL", "CLICKHOUSE_BACKUP_RETENTION_DAYS", "AWS_ACCESS_KEY_ID"):
        monkeypatch.delenv(variable, raising=False)


def run_backup(clickhouse: ClickHouseResource, instance: DagsterInstance, **config: str) -> ExecuteInProcessResult:
    return clickhouse_backup_job.execute_in_process(
        run_config={"ops": {"take_clickhouse_backup": {"config": config}}},
        resources={"clickhouse": clickhouse, "backup_storage": backup_storage_from_env()},
        instance=instance,
        raise_on_error=False,
    )


def step_failures(result: ExecuteInProcessResult) -> dict[str, str]:
    return {
        event.step_key: event.step_failure_data.user_failure_data.description
        for event in result.get_step_failure_events()
    }


def test_a_backup_without_a_backup_url_says_in_one_line_what_to_set_and_sends_no_alert(
    clickhouse: ClickHouseResource, dagster_instance: DagsterInstance, slack_api: HttpApi
) -> None:
    with clickhouse.get_client() as client:
        client.command("CREATE TABLE events (x UInt8) ENGINE = MergeTree ORDER BY x")

    result = run_backup(clickhouse, dagster_instance)

    assert not result.success
    [(step, message)] = step_failures(result).items()
    assert step == "take_clickhouse_backup"
    assert "\n" not in message
    assert message.startswith("CLICKHOUSE_BACKUP_URL is not set: set it to s3://bucket/prefix")
    assert "A local ClickHouse server" in message and "CLICKHOUSE_BACKUP_URL=file:///" in message
    evaluate_failure_sensor(result, dagster_instance, slack(slack_api))
    assert posted_messages(slack_api) == []


def test_a_backup_that_fails_for_another_reason_still_alerts_the_platform_team(
    clickhouse: ClickHouseResource, dagster_instance: DagsterInstance, slack_api: HttpApi
) -> None:
    result = run_backup(clickhouse, dagster_instance, kind="weekly")

    assert not result.success
    [(step, message)] = step_failures(result).items()
    assert step == "take_clickhouse_backup" and message.startswith("kind must be one of ") and "'weekly'" in message
    evaluate_failure_sensor(result, dagster_instance, slack(slack_api))
    [alert] = posted_messages(slack_api)
    assert alert["channel"] == "#alerts-data-platform"
