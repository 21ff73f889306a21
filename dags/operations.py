"""Operations across every code location: failure alerts to the owning team, and run health in ClickHouse.

- ``slack_on_run_failure`` posts a failed run to its owner's Slack channel (through dagster-slack) once the
  job has failed the configured number of times in a row; without a Slack token it writes the alert to the
  sensor's log instead.
- ``run_status_*`` record every run's start, success, failure and cancellation in ``dagster_run_status``,
  so run health can be queried next to the data it produced.

Both watch all code locations of the deployment, so they live once, in the ``shared`` location.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from functools import cache
from typing import Any

from dagster import (
    AssetKey,
    DagsterRun,
    DagsterRunStatus,
    DefaultSensorStatus,
    EnvVar,
    RunFailureSensorContext,
    RunsFilter,
    RunStatusSensorContext,
    SensorDefinition,
    get_dagster_logger,
    run_failure_sensor,
    run_status_sensor,
)
from dagster_slack import SlackResource
from pydantic import Field
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry import ConnectionErrorRetryHandler, RateLimitErrorRetryHandler

from dags.common import ClickHouseResource, JobOwners, Settings, load_settings

# --- Failure alerts ----------------------------------------------------------------------------------------

# Where each team hears about its failed runs (the run's `owner` tag). Runs of an unknown owner go to the
# default channel (SLACK_DEFAULT_CHANNEL).
ALERT_CHANNELS: dict[str, str] = {
    JobOwners.TEAM_REVENUE_ANALYTICS: "#alerts-revenue-analytics",
    JobOwners.TEAM_WEB_ANALYTICS: "#alerts-web-analytics",
    JobOwners.TEAM_DATA_EXPORTS: "#alerts-data-exports",
    JobOwners.TEAM_PLATFORM: "#alerts-data-platform",
}

# A run (or job) with this tag never alerts, e.g. experiments and backfills someone is watching anyway.
DISABLE_SLACK_NOTIFICATIONS_TAG = "disable_slack_notifications"

# Set this tag on a job to alert only after that many failed runs in a row (flaky sources); default 1.
CONSECUTIVE_FAILURES_TAG = "alert_after_consecutive_failures"

# Slack answers these for a channel the bot cannot post to: the alert then goes to the default channel.
UNREACHABLE_CHANNEL_ERRORS = frozenset({"channel_not_found", "not_in_channel", "is_archived"})

MAX_ERROR_CHARS = 600


class SlackAlertsResource(SlackResource):
    """Slack through dagster-slack, plus where alerts go and where the UI is; no token means "log only".

    Example:
        .. code-block:: python

            SlackAlertsResource(token=EnvVar("SLACK_BOT_TOKEN"), default_channel="#data-alerts")
    """

    token: str = Field(
        default="",
        description="Slack bot token (chat:write), through EnvVar. Empty: alerts are written to the log.",
    )
    default_channel: str = Field(
        default="#data-alerts", description="Channel for runs whose owner has no channel of its own."
    )
    webserver_url: str = Field(
        default="http://localhost:3000", description="The Dagster UI's address, for links to the run."
    )
    base_url: str = Field(default=WebClient.BASE_URL, description="Slack Web API address (tests use a local one).")

    @property
    def enabled(self) -> bool:
        return bool(self.token)

    def get_client(self) -> WebClient:
        client = WebClient(token=self.token, base_url=self.base_url, timeout=15)
        client.retry_handlers.extend([ConnectionErrorRetryHandler(max_retry_count=2), RateLimitErrorRetryHandler()])
        return client

    def channel_for(self, owner: str | None) -> str:
        return ALERT_CHANNELS.get(owner or "", self.default_channel)

    def run_url(self, run_id: str) -> str:
        return f"{self.webserver_url.rstrip('/')}/runs/{run_id}"


@cache
def _asset_owners() -> dict[AssetKey, str]:
    """Every asset's owner tag, from all locations' definitions (loaded on first use, never at import).

    A location that fails to import must not stop alerts: its runs then go to the default channel.
    """
    try:
        from dags.definitions import defs

        graph = defs.resolve_asset_graph()
    except Exception as error:
        get_dagster_logger().warning(f"Asset owners unknown, alerts use the default channel: {error!r}")
        return {}
    owners = {}
    for key in graph.get_all_asset_keys():
        owner = graph.get(key).tags.get("owner")
        if owner:
            owners[key] = owner
    return owners


def run_owner(run: DagsterRun) -> str:
    """Who answers for a run: its ``owner`` tag (jobs carry it), else the owner of the assets it materializes.

    Materializing assets from the UI launches an ad-hoc asset job whose run has no owner tag of its own.
    Several owners come back comma-separated; no owner at all is an empty string.
    """
    if run.tags.get("owner"):
        return run.tags["owner"]
    owners = _asset_owners()
    found = {owners[key] for key in run.asset_selection or () if key in owners}
    return ",".join(sorted(found))


def consecutive_failure_threshold(run: DagsterRun) -> int:
    raw = run.tags.get(CONSECUTIVE_FAILURES_TAG, "1")
    try:
        return max(1, int(raw))
    except ValueError:
        return 1  # a malformed tag must not silence alerts


def consecutive_failures(context: RunFailureSensorContext, run: DagsterRun, look_back: int) -> int:
    """How many finished runs of this job, up to and including ``run``, failed in a row (at most ``look_back``)."""
    finished = context.instance.get_runs(
        filters=RunsFilter(
            job_name=run.job_name,
            statuses=[DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE],
            created_before=_created_at(context, run),
        ),
        limit=look_back,
    )
    streak = 0
    for previous in finished:  # newest first
        if previous.status != DagsterRunStatus.FAILURE:
            break
        streak += 1
    return streak


def _created_at(context: RunFailureSensorContext, run: DagsterRun) -> datetime | None:
    record = context.instance.get_run_record_by_id(run.run_id)
    if record is None:
        return None
    # created_before is exclusive: nudge it so the failed run itself is counted.
    return datetime.fromtimestamp(record.create_timestamp.timestamp() + 0.001, tz=UTC)


def failure_summary(context: RunFailureSensorContext) -> tuple[list[str], str]:
    """The failed steps and a short error summary (first failed step's error, else the run's message)."""
    steps: list[str] = []
    errors: list[str] = []
    for event in context.get_step_failure_events():
        if event.step_key and event.step_key not in steps:
            steps.append(event.step_key)
        error = getattr(event.event_specific_data, "error", None)
        if error is not None:
            errors.append(error.message.strip())  # "ExceptionClass: what it said"
    summary = errors[0] if errors else (context.failure_event.message or "The run failed.")
    if len(summary) > MAX_ERROR_CHARS:
        summary = summary[:MAX_ERROR_CHARS] + "…"
    return steps, summary


def location_of(run: DagsterRun) -> str:
    origin = run.remote_job_origin
    return origin.location_name if origin is not None else ""


def failure_message(
    context: RunFailureSensorContext, slack: SlackAlertsResource, streak: int
) -> tuple[str, list[dict[str, Any]]]:
    """The alert as plain text (notifications, the log) and as Slack blocks."""
    run = context.dagster_run
    steps, summary = failure_summary(context)
    url = slack.run_url(run.run_id)
    location = location_of(run)
    owner = run_owner(run) or "no owner tag"
    where = f" in location {location}" if location else ""
    in_a_row = f" ({streak} failed runs in a row)" if streak > 1 else ""
    partition = run.tags.get("dagster/partition")
    partition_text = f", partition {partition}" if partition else ""
    text = (
        f"Job {run.job_name}{where} failed{in_a_row}: run {run.run_id}{partition_text}, owner {owner}.\n"
        f"Failed steps: {', '.join(steps) if steps else 'none (the run failed outside its steps)'}\n"
        f"Error: {summary}\n"
        f"Run: {url}"
    )
    blocks: list[dict[str, Any]] = [
        {
            "type": "section",
            "text": {
                "type": "mrkdwn",
                "text": f"*Job `{run.job_name}` failed*{where}{in_a_row}\nOwner: {owner}{partition_text}",
            },
        },
        {
            "type": "section",
            "text": {"type": "mrkdwn", "text": f"*Failed steps:* {', '.join(steps) or 'none'}\n```{summary}```"},
        },
        {
            "type": "actions",
            "elements": [{"type": "button", "text": {"type": "plain_text", "text": "View run in Dagster"}, "url": url}],
        },
    ]
    return text, blocks


@run_failure_sensor(
    name="slack_on_run_failure",
    description="Posts failed runs of every location to the owning team's Slack channel (the log without a token).",
    monitor_all_code_locations=True,
    default_status=DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
)
def slack_on_run_failure(context: RunFailureSensorContext, slack: SlackAlertsResource) -> None:
    """Tell the run's owner that it failed, once the job has failed as often in a row as it asks for."""
    run = context.dagster_run
    if DISABLE_SLACK_NOTIFICATIONS_TAG in run.tags:
        context.log.info(f"Run {run.run_id} of {run.job_name} is tagged {DISABLE_SLACK_NOTIFICATIONS_TAG}: no alert")
        return
    threshold = consecutive_failure_threshold(run)
    streak = consecutive_failures(context, run, look_back=threshold) if threshold > 1 else 1
    if streak < threshold:
        context.log.info(
            f"Run {run.run_id} of {run.job_name} failed ({streak} in a row); alerting from {threshold} in a row"
        )
        return
    text, blocks = failure_message(context, slack, streak)
    channel = slack.channel_for(run_owner(run))
    if not slack.enabled:
        context.log.warning(f"[alert for {channel}; SLACK_BOT_TOKEN is not set, so it goes to the log]\n{text}")
        return
    client = slack.get_client()
    try:
        client.chat_postMessage(channel=channel, text=text, blocks=blocks)
    except SlackApiError as error:
        reason = error.response.get("error") if error.response is not None else None
        if reason not in UNREACHABLE_CHANNEL_ERRORS or channel == slack.default_channel:
            raise
        context.log.warning(f"Slack channel {channel} is unreachable ({reason}); alerting {slack.default_channel}")
        note = f"(could not post to {channel}: {reason})\n"
        client.chat_postMessage(channel=slack.default_channel, text=note + text, blocks=blocks)


# --- Run status metrics -------------------------------------------------------------------------------------

# One row per run and status; re-recording the same transition (a sensor tick retried) collapses on merge.
CREATE_RUN_STATUS_TABLE = """
CREATE TABLE IF NOT EXISTS dagster_run_status
(
    run_id String,
    job LowCardinality(String),
    location LowCardinality(String),
    owner LowCardinality(String),
    status LowCardinality(String),
    time DateTime64(3, 'UTC'),
    recorded_at DateTime64(3, 'UTC') DEFAULT now64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(recorded_at)
PARTITION BY toYYYYMM(time)
ORDER BY (job, run_id, status)
"""

INSERT_RUN_STATUS = """
INSERT INTO dagster_run_status (run_id, job, location, owner, status, time)
SELECT {run_id:String}, {job:String}, {location:String}, {owner:String}, {status:String},
       fromUnixTimestamp64Milli({time_ms:Int64}, 'UTC')
"""

RECORDED_STATUSES: Sequence[DagsterRunStatus] = (
    DagsterRunStatus.STARTED,
    DagsterRunStatus.SUCCESS,
    DagsterRunStatus.FAILURE,
    DagsterRunStatus.CANCELED,
)


def record_run_status(
    context: RunStatusSensorContext, clickhouse: ClickHouseResource, status: DagsterRunStatus
) -> None:
    """Write the run's transition to ``dagster_run_status``; ClickHouse is open only for this write."""
    run = context.dagster_run
    record = context.instance.get_run_record_by_id(run.run_id)
    when = None
    if record is not None:
        when = record.start_time if status == DagsterRunStatus.STARTED else record.end_time
    row = {
        "run_id": run.run_id,
        "job": run.job_name,
        "location": location_of(run),
        "owner": run_owner(run),
        "status": status.value,
        "time_ms": int((when or datetime.now(UTC).timestamp()) * 1000),
    }
    with clickhouse.get_client() as client:
        client.command(CREATE_RUN_STATUS_TABLE)
        client.command(INSERT_RUN_STATUS, row)
    context.log.info(f"Recorded {status.value} of run {run.run_id} ({run.job_name})")


def _run_status_sensor(status: DagsterRunStatus) -> SensorDefinition:
    @run_status_sensor(
        run_status=status,
        name=f"run_status_{status.value.lower()}",
        description=f"Records every run that reaches {status.value} in the ClickHouse table dagster_run_status.",
        monitor_all_code_locations=True,
        default_status=DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=30,
    )
    def record(context: RunStatusSensorContext, clickhouse: ClickHouseResource) -> None:
        record_run_status(context, clickhouse, status)

    return record


run_status_sensors: list[SensorDefinition] = [_run_status_sensor(status) for status in RECORDED_STATUSES]

operations_sensors: list[SensorDefinition] = [slack_on_run_failure, *run_status_sensors]


def slack_alerts_from_env(settings: Settings | None = None) -> SlackAlertsResource:
    """The alerts resource as the environment configures it: Slack with SLACK_BOT_TOKEN, the log without."""
    settings = settings or load_settings()
    use_slack = settings.slack_token_configured and not settings.debug
    return SlackAlertsResource(
        token=EnvVar("SLACK_BOT_TOKEN") if use_slack else "",
        default_channel=settings.slack_default_channel,
        webserver_url=settings.dagster_webserver_url,
    )
