"""A batch export's failure alert goes to the Slack channel its entry names (``alert_channel``), from its job,
its schedule's runs, its check job and runs launched from the asset's page; an unreachable channel hands the
alert to the owner's. A local HTTP server stands in for Slack's Web API (as in test_operations)."""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from dagster import DagsterEventType, DagsterInstance, Definitions, build_run_status_sensor_context, materialize

from dags.common import ClickHouseResource
from dags.exports.batch_assets import BatchExportDefinitions, build_batch_exports
from dags.exports.declarations import BatchExportsFileError
from dags.operations.alerts import slack_on_run_failure
from dags.tests.conftest import HttpApi, Reply
from dags.tests.test_batch_exports import entry, failure_message
from dags.tests.test_operations import posted_messages, slack

pytestmark = pytest.mark.end_to_end  # the embedded engine only: these runs fail before reading ClickHouse

DAY = "2024-03-05"


@pytest.fixture
def slack_api(http_api: HttpApi) -> Iterator[HttpApi]:
    http_api.route("POST", "/api/chat.postMessage", Reply(200, {"ok": True, "channel": "C123", "ts": "1.0"}))
    yield http_api


def declare(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *entries: dict[str, Any]) -> BatchExportDefinitions:
    path = tmp_path / "batch_exports.yaml"
    path.write_text(yaml.safe_dump({"exports": list(entries)}))
    monkeypatch.setenv("BATCH_EXPORTS_FILE", str(path))
    return build_batch_exports()


def unwritable(tmp_path: Path) -> str:
    """A folder destination no run can create (its parent is a file): the run fails before reading ClickHouse."""
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    return (blocker / "exports").as_uri()


def alert_for(run_id: str, instance: DagsterInstance, api: HttpApi) -> list[dict[str, Any]]:
    """Evaluate the failure alert on the run as storage holds it now, and return what was posted to Slack."""
    run = instance.get_run_by_id(run_id)
    [failure] = instance.get_records_for_run(run_id, of_type=DagsterEventType.RUN_FAILURE).records
    with (
        build_run_status_sensor_context(
            sensor_name=slack_on_run_failure.name,
            dagster_event=failure.event_log_entry.dagster_event,
            dagster_instance=instance,
            dagster_run=run,
            resources={"slack": slack(api)},
        ) as context,
        context.for_run_failure() as failure_context,
    ):
        slack_on_run_failure(failure_context)
    return posted_messages(api)


def test_failed_runs_of_the_exports_job_and_check_job_alert_its_alert_channel(
    clickhouse: ClickHouseResource,
    dagster_instance: DagsterInstance,
    slack_api: HttpApi,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    built = declare(tmp_path, monkeypatch, entry("team_2_views", 2, unwritable(tmp_path), alert_channel="#team-2-x"))
    defs = Definitions(assets=built.assets, jobs=built.jobs, resources={"clickhouse": clickhouse})

    export = defs.resolve_job_def("batch_export_team_2_views_job").execute_in_process(
        instance=dagster_instance, partition_key=DAY, raise_on_error=False
    )
    check = defs.resolve_job_def("batch_export_team_2_views_check_destination").execute_in_process(
        instance=dagster_instance, raise_on_error=False
    )

    assert not export.success and "Cannot create the export folder" in failure_message(export)
    assert not check.success and "cannot create the folder" in failure_message(check)
    for result in (export, check):
        [message] = alert_for(result.run_id, dagster_instance, slack_api)
        assert message["channel"] == "#team-2-x" and result.run_id in message["text"]
        slack_api.requests.clear()


def test_a_run_launched_from_the_asset_page_alerts_the_exports_alert_channel(
    clickhouse: ClickHouseResource,
    dagster_instance: DagsterInstance,
    slack_api: HttpApi,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    built = declare(tmp_path, monkeypatch, entry("team_2_views", 2, unwritable(tmp_path), alert_channel="#team-2-x"))

    # Materialize from the asset's page: an implicit asset job, without the export job's tags.
    result = materialize(
        built.assets, partition_key=DAY, resources={"clickhouse": clickhouse}, instance=dagster_instance,
        raise_on_error=False,
    )  # fmt: skip

    assert not result.success and "owner" not in result.dagster_run.tags  # no job tags at launch
    assert dagster_instance.get_run_by_id(result.run_id).tags["alert_channel"] == "team-2-x"  # added by the step
    [message] = alert_for(result.run_id, dagster_instance, slack_api)
    assert message["channel"] == "#team-2-x"


def test_an_unreachable_alert_channel_hands_the_alert_to_the_owners_channel(
    clickhouse: ClickHouseResource,
    dagster_instance: DagsterInstance,
    http_api: HttpApi,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    http_api.route(
        "POST",
        "/api/chat.postMessage",
        Reply(200, {"ok": False, "error": "channel_not_found"}),
        Reply(200, {"ok": True, "channel": "C999", "ts": "2.0"}),
    )
    built = declare(tmp_path, monkeypatch, entry("gone", 2, unwritable(tmp_path), alert_channel="#archived-team"))
    defs = Definitions(assets=built.assets, jobs=built.jobs, resources={"clickhouse": clickhouse})
    result = defs.resolve_job_def("batch_export_gone_check_destination").execute_in_process(
        instance=dagster_instance, raise_on_error=False
    )

    messages = alert_for(result.run_id, dagster_instance, http_api)

    assert [message["channel"] for message in messages] == ["#archived-team", "#alerts-data-exports"]
    assert "could not post to #archived-team: channel_not_found" in messages[1]["text"]


def test_an_export_without_alert_channel_alerts_its_owners_channel(
    clickhouse: ClickHouseResource,
    dagster_instance: DagsterInstance,
    slack_api: HttpApi,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    built = declare(tmp_path, monkeypatch, entry("plain", 2, unwritable(tmp_path)))
    defs = Definitions(assets=built.assets, jobs=built.jobs, resources={"clickhouse": clickhouse})
    result = defs.resolve_job_def("batch_export_plain_job").execute_in_process(
        instance=dagster_instance, partition_key=DAY, raise_on_error=False
    )
    assert [message["channel"] for message in alert_for(result.run_id, dagster_instance, slack_api)] == [
        "#alerts-data-exports"
    ]


def test_an_alert_channel_that_is_not_a_slack_channel_is_refused_naming_the_entry_and_field(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "batch_exports.yaml"
    lines = [
        "exports:",
        "  - {name: no_hash, team_id: 1, dataset: events, destination: 'file:///tmp/a', interval: day,"
        " start: 2024-01-01, alert_channel: team-2}",
        "  - {name: spaces, team_id: 1, dataset: events, destination: 'file:///tmp/b', interval: day,"
        " start: 2024-01-01, alert_channel: '#Team Two'}",
        "  - name: unquoted",
        "    team_id: 1",
        "    dataset: events",
        "    destination: file:///tmp/c",
        "    interval: day",
        "    start: 2024-01-01",
        "    alert_channel: #team-2-exports",
    ]
    path.write_text("\n".join(lines) + "\n")
    monkeypatch.setenv("BATCH_EXPORTS_FILE", str(path))

    with pytest.raises(BatchExportsFileError) as raised:
        build_batch_exports()

    message = str(raised.value)
    assert "exports[0] (no_hash).alert_channel: 'team-2' is not a Slack channel: # then at most 63" in message
    assert "exports[1] (spaces).alert_channel: '#Team Two' is not a Slack channel" in message
    assert "exports[2] (unquoted).alert_channel: empty; quote the channel" in message
    assert "has 3 problem(s)" in message
