"""Operations: failure alerts reach the owning team's Slack channel, and run transitions land in ClickHouse.

Runs here are real (executed on a throwaway instance); the sensors are evaluated on their real events.
A local HTTP server stands in for Slack's Web API.
"""

import json
import time
from collections.abc import Iterator
from urllib.parse import parse_qs

import pytest
from dagster import (
    AssetKey,
    DagsterEventType,
    DagsterInstance,
    DagsterRunStatus,
    ExecuteInProcessResult,
    Failure,
    JobDefinition,
    OpExecutionContext,
    build_run_status_sensor_context,
    job,
    op,
)

from dags.clickhouse.lock import EmbeddedEngineLock
from dags.common import ClickHouseClient, ClickHouseResource, JobOwners
from dags.operations.alerts import CONSECUTIVE_FAILURES_TAG, DISABLE_SLACK_NOTIFICATIONS_TAG, slack_on_run_failure
from dags.operations.run_status import run_status_sensors
from dags.operations.slack import SlackAlertsResource, slack_alerts_from_env
from dags.tests.conftest import HttpApi, Reply

TOKEN = "xoxb-test-token-123"


def make_job(name: str, owner: JobOwners | None, tags: dict[str, str] | None = None) -> JobDefinition:
    """A job whose step fails when run with the tag ``fail=yes``, like a source that is sometimes down."""

    @op(name=f"{name}_load_rates")
    def load_rates(context: OpExecutionContext) -> None:
        if context.run.tags.get("fail") == "yes":
            raise Failure(description="The rates API answered 503 Service Unavailable; retry later.")

    @job(name=name, tags={**(owner.tags() if owner else {}), **(tags or {})})
    def the_job() -> None:
        load_rates()

    return the_job


def run(job_def: JobDefinition, instance: DagsterInstance, fail: bool, **tags: str) -> ExecuteInProcessResult:
    return job_def.execute_in_process(
        instance=instance, raise_on_error=False, tags={"fail": "yes" if fail else "no", **tags}
    )


@pytest.fixture
def slack_api(http_api: HttpApi) -> Iterator[HttpApi]:
    http_api.route("POST", "/api/chat.postMessage", Reply(200, {"ok": True, "channel": "C123", "ts": "1.0"}))
    yield http_api


def slack(api: HttpApi, token: str = TOKEN) -> SlackAlertsResource:
    return SlackAlertsResource(
        token=token, base_url=f"{api.url}/api/", default_channel="#data-alerts", webserver_url="http://dagster.test"
    )


def evaluate_failure_sensor(result: ExecuteInProcessResult, instance: DagsterInstance, resource: SlackAlertsResource):
    with (
        build_run_status_sensor_context(
            sensor_name=slack_on_run_failure.name,
            dagster_event=result.get_run_failure_event(),
            dagster_instance=instance,
            dagster_run=result.dagster_run,
            resources={"slack": resource},
        ) as context,
        context.for_run_failure() as failure_context,
    ):
        slack_on_run_failure(failure_context)


def posted_messages(api: HttpApi) -> list[dict]:
    messages = []
    for request in api.requests_to("/api/chat.postMessage"):
        assert request.headers.get("Authorization") == f"Bearer {TOKEN}"
        body = request.body.decode()
        try:
            messages.append(json.loads(body))
        except json.JSONDecodeError:
            messages.append({key: values[0] for key, values in parse_qs(body).items()})
    return messages


# --- Failure alerts --------------------------------------------------------------------------------------


def test_failed_run_alerts_the_owner_channel_with_steps_error_and_link(
    slack_api: HttpApi, dagster_instance: DagsterInstance
) -> None:
    rates_job = make_job("rates_job", JobOwners.TEAM_REVENUE_ANALYTICS)
    result = run(rates_job, dagster_instance, fail=True)
    assert not result.success

    evaluate_failure_sensor(result, dagster_instance, slack(slack_api))

    [message] = posted_messages(slack_api)
    assert message["channel"] == "#alerts-revenue-analytics"
    text = message["text"]
    assert "Job rates_job" in text
    assert "rates_job_load_rates" in text  # the failed step
    assert "503 Service Unavailable" in text  # the error summary
    assert f"http://dagster.test/runs/{result.run_id}" in text
    blocks = message["blocks"] if isinstance(message["blocks"], list) else json.loads(message["blocks"])
    assert f"http://dagster.test/runs/{result.run_id}" in json.dumps(blocks)


def test_an_asset_run_launched_from_the_ui_alerts_the_asset_owner(
    slack_api: HttpApi, dagster_instance: DagsterInstance
) -> None:
    """Materializing from the UI runs an ad-hoc asset job without an owner tag: the asset's owner hears of it."""
    from dags.definitions import defs

    asset_job = defs.resolve_implicit_global_asset_job_def()
    dagster_run = dagster_instance.create_run_for_job(
        job_def=asset_job, asset_selection=frozenset({AssetKey("demo_events")})
    )
    assert "owner" not in dagster_run.tags
    dagster_instance.report_run_failed(dagster_run, message="The run worker crashed (out of memory).")
    [failure] = [
        record.event_log_entry.dagster_event
        for record in dagster_instance.get_records_for_run(
            dagster_run.run_id, of_type=DagsterEventType.RUN_FAILURE
        ).records
    ]
    with (
        build_run_status_sensor_context(
            sensor_name=slack_on_run_failure.name,
            dagster_event=failure,
            dagster_instance=dagster_instance,
            dagster_run=dagster_instance.get_run_by_id(dagster_run.run_id),
            resources={"slack": slack(slack_api)},
        ) as context,
        context.for_run_failure() as failure_context,
    ):
        slack_on_run_failure(failure_context)

    [message] = posted_messages(slack_api)
    assert message["channel"] == "#alerts-data-platform"  # demo_events belongs to the platform team
    assert "out of memory" in message["text"] and "owner team-platform" in message["text"]


def test_runs_without_a_known_owner_alert_the_default_channel(
    slack_api: HttpApi, dagster_instance: DagsterInstance
) -> None:
    result = run(make_job("adhoc_job", owner=None), dagster_instance, fail=True)
    evaluate_failure_sensor(result, dagster_instance, slack(slack_api))
    assert [message["channel"] for message in posted_messages(slack_api)] == ["#data-alerts"]


def test_an_unreachable_team_channel_falls_back_to_the_default_channel(
    http_api: HttpApi, dagster_instance: DagsterInstance
) -> None:
    http_api.route(
        "POST",
        "/api/chat.postMessage",
        Reply(200, {"ok": False, "error": "channel_not_found"}),
        Reply(200, {"ok": True, "channel": "C999", "ts": "2.0"}),
    )
    result = run(make_job("exports_job", JobOwners.TEAM_DATA_EXPORTS), dagster_instance, fail=True)
    evaluate_failure_sensor(result, dagster_instance, slack(http_api))
    messages = posted_messages(http_api)
    assert [message["channel"] for message in messages] == ["#alerts-data-exports", "#data-alerts"]
    assert "could not post to #alerts-data-exports: channel_not_found" in messages[1]["text"]


def test_runs_tagged_disable_slack_notifications_do_not_alert(
    slack_api: HttpApi, dagster_instance: DagsterInstance
) -> None:
    quiet_job = make_job("quiet_job", JobOwners.TEAM_WEB_ANALYTICS)
    result = run(quiet_job, dagster_instance, fail=True, **{DISABLE_SLACK_NOTIFICATIONS_TAG: "true"})
    evaluate_failure_sensor(result, dagster_instance, slack(slack_api))
    assert posted_messages(slack_api) == []

    loud = run(quiet_job, dagster_instance, fail=True)
    evaluate_failure_sensor(loud, dagster_instance, slack(slack_api))
    assert [message["channel"] for message in posted_messages(slack_api)] == ["#alerts-web-analytics"]


def test_a_job_alerts_only_after_its_threshold_of_failures_in_a_row(
    slack_api: HttpApi, dagster_instance: DagsterInstance
) -> None:
    flaky_job = make_job("flaky_job", JobOwners.TEAM_WEB_ANALYTICS, tags={CONSECUTIVE_FAILURES_TAG: "2"})
    resource = slack(slack_api)

    first = run(flaky_job, dagster_instance, fail=True)
    evaluate_failure_sensor(first, dagster_instance, resource)
    assert posted_messages(slack_api) == [], "one failure is below the threshold of 2"

    second = run(flaky_job, dagster_instance, fail=True)
    evaluate_failure_sensor(second, dagster_instance, resource)
    [message] = posted_messages(slack_api)
    assert second.run_id in message["text"] and "2 failed runs in a row" in message["text"]

    assert run(flaky_job, dagster_instance, fail=False).success  # a success resets the streak
    third = run(flaky_job, dagster_instance, fail=True)
    evaluate_failure_sensor(third, dagster_instance, resource)
    assert len(posted_messages(slack_api)) == 1

    # Re-evaluating an older failure counts only the runs up to it, not the ones after it.
    evaluate_failure_sensor(first, dagster_instance, resource)
    assert len(posted_messages(slack_api)) == 1


def test_without_a_token_the_alert_goes_to_the_log(
    slack_api: HttpApi, dagster_instance: DagsterInstance, capsys: pytest.CaptureFixture[str]
) -> None:
    result = run(make_job("local_job", JobOwners.TEAM_PLATFORM), dagster_instance, fail=True)
    evaluate_failure_sensor(result, dagster_instance, slack(slack_api, token=""))
    assert slack_api.requests == []
    logged = capsys.readouterr().err
    assert "SLACK_BOT_TOKEN is not set" in logged and "#alerts-data-platform" in logged
    assert "local_job_load_rates" in logged and result.run_id in logged


def test_the_slack_token_comes_from_the_environment_and_is_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLACK_BOT_TOKEN", TOKEN)
    monkeypatch.setenv("SLACK_DEFAULT_CHANNEL", "#oncall")
    resource = slack_alerts_from_env()
    assert resource.default_channel == "#oncall"
    assert TOKEN not in repr(resource.model_dump())  # an EnvVar, resolved only when the sensor runs

    monkeypatch.setenv("DEBUG", "1")
    assert not slack_alerts_from_env().enabled  # DEBUG keeps alerts in the log


# --- Run status metrics ----------------------------------------------------------------------------------

STATUS_EVENTS = {
    DagsterRunStatus.STARTED: DagsterEventType.RUN_START,
    DagsterRunStatus.SUCCESS: DagsterEventType.RUN_SUCCESS,
    DagsterRunStatus.FAILURE: DagsterEventType.RUN_FAILURE,
    DagsterRunStatus.CANCELED: DagsterEventType.RUN_CANCELED,
}


def evaluate_status_sensors(instance: DagsterInstance, run_id: str, clickhouse: ClickHouseResource) -> None:
    """Evaluate each status sensor on the run's real events, as the daemon would."""
    dagster_run = instance.get_run_by_id(run_id)
    assert dagster_run is not None
    for sensor in run_status_sensors:
        status = DagsterRunStatus(sensor.name.removeprefix("run_status_").upper())
        events = [
            record.event_log_entry.dagster_event
            for record in instance.get_records_for_run(run_id, of_type=STATUS_EVENTS[status]).records
        ]
        for event in events:
            with build_run_status_sensor_context(
                sensor_name=sensor.name,
                dagster_event=event,
                dagster_instance=instance,
                dagster_run=dagster_run,
                resources={"clickhouse": clickhouse},
            ) as context:
                sensor(context)


def status_rows(ch: ClickHouseClient) -> list[dict]:
    return ch.query_rows(
        "SELECT run_id, job, location, owner, status, time FROM dagster_run_status FINAL ORDER BY time, status"
    )


def test_every_run_transition_is_recorded_in_clickhouse(
    dagster_instance: DagsterInstance, clickhouse: ClickHouseResource
) -> None:
    metrics_job = make_job("metrics_job", JobOwners.TEAM_WEB_ANALYTICS)
    succeeded = run(metrics_job, dagster_instance, fail=False)
    failed = run(metrics_job, dagster_instance, fail=True)
    canceled = dagster_instance.create_run_for_job(metrics_job, tags=JobOwners.TEAM_WEB_ANALYTICS.tags())
    dagster_instance.report_run_canceling(canceled)
    dagster_instance.report_run_canceled(canceled)

    for run_id in (succeeded.run_id, failed.run_id, canceled.run_id):
        evaluate_status_sensors(dagster_instance, run_id, clickhouse)
        # The sensors opened the embedded engine only for their write, and closed it again.
        assert EmbeddedEngineLock._held == {}

    with clickhouse.get_client() as ch:
        rows = status_rows(ch)
        by_run = {}
        for row in rows:
            by_run.setdefault(row["run_id"], []).append(row["status"])
        assert by_run == {
            succeeded.run_id: ["STARTED", "SUCCESS"],
            failed.run_id: ["STARTED", "FAILURE"],
            canceled.run_id: ["CANCELED"],
        }
        assert {(row["job"], row["owner"]) for row in rows} == {("metrics_job", "team-web-analytics")}
        record = dagster_instance.get_run_record_by_id(succeeded.run_id)
        success_row = next(r for r in rows if r["run_id"] == succeeded.run_id and r["status"] == "SUCCESS")
        assert abs(success_row["time"].timestamp() - record.end_time) < 0.01

        # A retried sensor tick writes the same transition again: the table still holds it once.
        evaluate_status_sensors(dagster_instance, succeeded.run_id, clickhouse)
        assert len([r for r in status_rows(ch) if r["run_id"] == succeeded.run_id]) == 2


# --- Timeouts and cancellation ---------------------------------------------------------------------------

LOCATIONS = ("shared", "revenue_analytics", "web_analytics", "data_exports", "data_platform")

# Every job of every location and the `dagster/max_runtime` it must carry (seconds), as README states them.
MAX_RUNTIMES = {
    "daily_exchange_rates_job": 3600,  # 1 h
    "hourly_exchange_rates_job": 900,  # 15 min: the next hourly run starts an hour later
    "web_analytics_daily_job": 3 * 3600,  # 3 h
    "events_export_job": 4 * 3600,  # 4 h
    "web_pre_aggregated_exports_job": 4 * 3600,  # 4 h
    "data_deletion_job": 6 * 3600,  # 6 h
    "data_deletion_dry_run_job": 6 * 3600,  # 6 h: the same steps
    "squash_person_overrides": 12 * 3600,  # 12 h: every partition of events may be rewritten
    "squash_person_overrides_cleanup": 2 * 3600,
    "request_data_deletion": 600,  # 10 min: one insert
    "clickhouse_backup_job": 6 * 3600,  # 6 h
    "clickhouse_restore_job": 6 * 3600,  # 6 h
    # The example batch exports shipped in batch_exports.yaml: 1 h for an hourly export, 4 h for a daily one.
    "batch_export_team_1_pageviews_job": 3600,
    "batch_export_team_2_events_job": 4 * 3600,
    # Their "check destination" jobs: 5 min, one probe file or a privilege query.
    "batch_export_team_1_pageviews_check_destination": 300,
    "batch_export_team_2_events_check_destination": 300,
}


def test_every_job_is_bounded_by_its_documented_max_runtime() -> None:
    import importlib

    runtimes: dict[str, int | None] = {}
    for location in LOCATIONS:
        defs = importlib.import_module(f"dags.locations.{location}").defs
        for job_def in defs.resolve_all_job_defs():
            if job_def.name.startswith("__"):
                continue  # Dagster's implicit asset job: runs launched from the UI carry no job tags
            runtime = job_def.tags.get("dagster/max_runtime")
            runtimes[job_def.name] = int(runtime) if runtime is not None else None
    # A new job without the tag, or with another limit, fails here; so does a job that disappeared.
    assert runtimes == MAX_RUNTIMES


CANCEL_DAY = "2024-03-05"
SLOW_INSERT = {"max_block_size": 1, "max_threads": 1}  # a few seconds per pre-aggregate on this data


def pre_aggregate_table_state(ch: ClickHouseClient, table: str) -> list[dict]:
    return ch.query_rows(
        f"SELECT toString(period_bucket) AS bucket, team_id, count() AS rows FROM {table} "
        "GROUP BY bucket, team_id ORDER BY bucket, team_id"
    )


def test_cancelling_a_pre_aggregate_run_kills_its_query_and_leaves_the_table_unchanged(
    clickhouse: ClickHouseResource, dagster_instance: DagsterInstance, capsys: pytest.CaptureFixture[str]
) -> None:
    import os
    import signal
    import threading
    from datetime import date

    from dagster import Definitions

    from dags.events import generate_demo_events
    from dags.web_analytics.assets import JOB_NAME, WEB_ANALYTICS_ASSETS, web_analytics_daily_job
    from dags.web_analytics.schema import BOUNCES_TABLE, STATS_TABLE

    job_def = Definitions(
        assets=WEB_ANALYTICS_ASSETS, jobs=[web_analytics_daily_job], resources={"clickhouse": clickhouse}
    ).resolve_job_def(JOB_NAME)
    with clickhouse.get_client() as ch:
        generate_demo_events(ch, start_date=date.fromisoformat(CANCEL_DAY), days=1, events=20_000, seed=1)
    assert job_def.execute_in_process(partition_key=CANCEL_DAY, instance=dagster_instance).success
    with clickhouse.get_client() as ch:
        before = {table: pre_aggregate_table_state(ch, table) for table in (STATS_TABLE, BOUNCES_TABLE)}
        assert all(before.values()), "the first run filled the day"
        # More traffic arrives: a completed recompute would now change the table.
        generate_demo_events(ch, start_date=date.fromisoformat(CANCEL_DAY), days=1, events=300_000, seed=2)

    # Cancel the next run once its INSERT ... SELECT is running: Dagster terminates a run by interrupting
    # the run's main thread (SIGINT to the run worker), exactly as sent here.
    seen: dict[str, str] = {}
    run_over = threading.Event()
    late_interrupts: list[int] = []

    def cancel_when_the_insert_runs() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not seen and not run_over.is_set():
            with clickhouse.get_client() as watcher:
                running = watcher.query_rows(
                    "SELECT query_id, Settings['log_comment'] AS comment FROM system.processes "
                    "WHERE query_kind = 'Insert' AND query LIKE '%_staging_%' "
                    "AND Settings['log_comment'] LIKE {job:String}",
                    {"job": f"%{JOB_NAME}%"},
                )
            if running:
                seen.update(running[0])
                # What the UI's Terminate does: mark the run canceling, then interrupt its worker.
                run_id = json.loads(seen["comment"])["dagster"]["run_id"]
                dagster_instance.report_run_canceling(dagster_instance.get_run_by_id(run_id))
                os.kill(os.getpid(), signal.SIGINT)
                return
            time.sleep(0.05)

    run_config = {
        "ops": {
            name: {"config": {"extra_clickhouse_settings": SLOW_INSERT}}
            for name in ("web_pre_aggregated_stats", "web_pre_aggregated_bounces")
        }
    }
    # Dagster handles SIGINT while the run executes and restores this handler after it: a SIGINT that arrives
    # once the run is over (the run won the race) is recorded here instead of interrupting pytest itself.
    previous_handler = signal.signal(signal.SIGINT, lambda signum, frame: late_interrupts.append(signum))
    try:
        watcher = threading.Thread(target=cancel_when_the_insert_runs, daemon=True)
        watcher.start()
        try:
            result = job_def.execute_in_process(
                partition_key=CANCEL_DAY, instance=dagster_instance, run_config=run_config, raise_on_error=False
            )
        finally:
            run_over.set()
            watcher.join()
    finally:
        signal.signal(signal.SIGINT, previous_handler)

    assert seen, "the pre-aggregate INSERT never showed up in system.processes"
    assert late_interrupts == [], "the run ended before the interrupt reached it"
    assert dagster_instance.get_run_by_id(result.run_id).status == DagsterRunStatus.CANCELED
    event_types = [event.event_type for event in result.all_events]
    # Not retried (the assets have a RetryPolicy), and no further step was started after the interrupt.
    assert DagsterEventType.STEP_UP_FOR_RETRY not in event_types
    assert DagsterEventType.STEP_SUCCESS not in event_types
    failures = [event for event in result.all_events if event.event_type == DagsterEventType.STEP_FAILURE]
    assert any("was killed" in event.event_specific_data.error.message for event in failures)
    logs = capsys.readouterr().err
    assert "Interrupted: killing ClickHouse query" in logs
    assert "KILL QUERY" in logs and ": killed" in logs, logs[-3000:]
    # The server's own word that the statement stopped: error 394, QUERY_WAS_CANCELLED (the name is not in the
    # native protocol's message, and a query killed before it started says so; the code is on every way in).
    assert "Code: 394. DB::Exception: Query" in logs
    killed_query_id = json.loads(seen["comment"])["query_id"]
    assert killed_query_id in logs

    with clickhouse.get_client() as ch:
        assert ch.query_rows("SELECT query_id FROM system.processes WHERE query_kind = 'Insert'") == []
        # Neither pre-aggregate changed: nothing half-written, nothing recomputed after the cancel.
        assert {table: pre_aggregate_table_state(ch, table) for table in (STATS_TABLE, BOUNCES_TABLE)} == before
        assert (
            ch.query_rows("SELECT name FROM system.tables WHERE database = currentDatabase() AND name LIKE '%staging%'")
            == []
        )
