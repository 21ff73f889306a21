"""Failure alerts: a failed run of any location is posted to its owner's Slack channel (through dagster-slack)
once its job has failed the configured number of times in a row; without a Slack token the alert goes to the
sensor's log instead."""

from datetime import UTC, datetime
from typing import Any

from dagster import (
    DagsterRun,
    DagsterRunStatus,
    DefaultSensorStatus,
    RunFailureSensorContext,
    RunsFilter,
    run_failure_sensor,
)

from dags.common import ALERT_CHANNEL_TAG, NOT_CONFIGURED_METADATA_KEY
from dags.operations.owners import location_of, run_owner
from dags.operations.slack import SlackAlertsResource

# A run (or job) with this tag never alerts, e.g. experiments and backfills someone is watching anyway.
DISABLE_SLACK_NOTIFICATIONS_TAG = "disable_slack_notifications"

# Set this tag on a job to alert only after that many failed runs in a row (flaky sources); default 1.
CONSECUTIVE_FAILURES_TAG = "alert_after_consecutive_failures"

# Slack answers these for a channel the bot cannot post to: the alert then goes to the default channel.
UNREACHABLE_CHANNEL_ERRORS = frozenset({"channel_not_found", "not_in_channel", "is_archived"})

MAX_ERROR_CHARS = 600


def alert_channels(run: DagsterRun) -> list[str]:
    """The Slack channels the run's `alert_channel` tag names (a batch export's own channel), `#` first."""
    names = (name.strip().lstrip("#") for name in run.tags.get(ALERT_CHANNEL_TAG, "").split(","))
    return [f"#{name}" for name in dict.fromkeys(names) if name]


def consecutive_failure_threshold(run: DagsterRun) -> int:
    raw = run.tags.get(CONSECUTIVE_FAILURES_TAG, "1")
    try:
        return max(1, int(raw))
    except ValueError:
        return 1  # a malformed tag must not silence alerts


def consecutive_failures(context: RunFailureSensorContext, run: DagsterRun, look_back: int) -> int:
    """How many finished runs of this job, up to and including `run`, failed in a row (at most `look_back`)."""
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


def settings_to_make(context: RunFailureSensorContext) -> list[str]:
    """The variables to set when every failed step failed only for want of one (`NotConfiguredError`), else []:
    such a run needs someone to configure it, not an incident alert."""
    variables: list[str] = []
    for event in context.get_step_failure_events():
        user_failure = getattr(event.event_specific_data, "user_failure_data", None)
        variable = user_failure.metadata.get(NOT_CONFIGURED_METADATA_KEY) if user_failure else None
        if variable is None:
            return []
        variables.append(str(getattr(variable, "value", variable)))
    return variables


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
    if not_set := settings_to_make(context):
        missing = ", ".join(sorted(set(not_set)))
        context.log.info(f"Run {run.run_id} of {run.job_name} failed only because {missing} is not set: no alert")
        return
    threshold = consecutive_failure_threshold(run)
    streak = consecutive_failures(context, run, look_back=threshold) if threshold > 1 else 1
    if streak < threshold:
        context.log.info(
            f"Run {run.run_id} of {run.job_name} failed ({streak} in a row); alerting from {threshold} in a row"
        )
        return
    text, blocks = failure_message(context, slack, streak)
    owner_channel = slack.channel_for(run_owner(run))
    channels = alert_channels(run) or [owner_channel]
    if not slack.enabled:
        context.log.warning(
            f"[alert for {', '.join(channels)}; SLACK_BOT_TOKEN is not set, so it goes to the log]\n{text}"
        )
        return
    client = slack.get_client()
    for channel in channels:
        # A channel the bot cannot post to hands the alert on: the owner's channel, then the default one.
        fallbacks = list(dict.fromkeys(name for name in (owner_channel, slack.default_channel) if name != channel))
        post_alert(context, client, [channel, *fallbacks], text, blocks)


def post_alert(
    context: RunFailureSensorContext, client: Any, channels: list[str], text: str, blocks: list[dict[str, Any]]
) -> None:
    """Post to the first of `channels` Slack says it can reach, noting on the message which ones it could not."""
    from slack_sdk.errors import SlackApiError  # with the client: the SDK loads only when an alert is sent

    notes = ""
    for index, channel in enumerate(channels):
        try:
            client.chat_postMessage(channel=channel, text=notes + text, blocks=blocks)
            return
        except SlackApiError as error:
            reason = error.response.get("error") if error.response is not None else None
            if reason not in UNREACHABLE_CHANNEL_ERRORS or index == len(channels) - 1:
                raise
            context.log.warning(f"Slack channel {channel} is unreachable ({reason}); alerting {channels[index + 1]}")
            notes += f"(could not post to {channel}: {reason})\n"
