"""The data deletion jobs: `request_data_deletion` records a request from the launchpad,
`data_deletion_job` carries out every open request through `events`, the pre-aggregates and the exports,
and `data_deletion_dry_run_job` runs the same steps as a dry run that reports and changes nothing.
"""

from datetime import datetime
from typing import Any

from dagster import (
    Config,
    ConfigMapping,
    OpExecutionContext,
    Output,
    job,
    op,
)
from pydantic import Field

from dags.common import ClickHouseResource
from dags.management.deletion import requests as store
from dags.management.deletion.copy_ops import rewrite_batch_exports
from dags.management.deletion.ops import (
    DRY_RUN_TAG,
    OP_TAGS,
    OWNER,
    delete_requested_events,
    plan_deletions,
    recompute_pre_aggregates,
    rewrite_events_exports,
    rewrite_web_pre_aggregated_bounces_exports,
    rewrite_web_pre_aggregated_stats_exports,
    verify_and_complete,
)
from dags.management.deletion.rejections import report_rejected_requests

JOB_NAME = "data_deletion_job"
DRY_RUN_JOB_NAME = "data_deletion_dry_run_job"
MAX_RUNTIME_SECONDS = 6 * 3600  # dagster/max_runtime of a deletion run


def deletion_steps() -> None:
    """The steps both deletion jobs run: plan, delete, recompute, rewrite, verify (a dry run stops at the plan)."""
    report, request_ids = plan_deletions()
    report_rejected_requests(report)
    recomputed = recompute_pre_aggregates(delete_requested_events(request_ids))
    verify_and_complete(
        recomputed,
        rewrite_events_exports(recomputed),
        rewrite_web_pre_aggregated_stats_exports(recomputed),
        rewrite_web_pre_aggregated_bounces_exports(recomputed),
        rewrite_batch_exports(recomputed),
    )


@job(
    name=JOB_NAME,
    tags={**OWNER.tags(), "dagster/max_runtime": str(MAX_RUNTIME_SECONDS)},
    description="Carry out every open data deletion request: delete the rows from events, recompute the web "
    "analytics pre-aggregates of the days they were in, rewrite those days' exported files, verify, and record "
    f"it in data_deletion_requests. A run that rejected requests fails, naming them. For a dry run, launch "
    f"{DRY_RUN_JOB_NAME}.",
)
def data_deletion_job() -> None:
    deletion_steps()


def _forced_dry_run(_: Any) -> dict[str, Any]:
    return {"ops": {"plan_deletions": {"config": {"dry_run": True}}}}


@job(
    name=DRY_RUN_JOB_NAME,
    tags={**OWNER.tags(), "dagster/max_runtime": str(MAX_RUNTIME_SECONDS), DRY_RUN_TAG: "true"},
    # No run config to set: a run of this job cannot be anything but a dry run.
    config=ConfigMapping(config_fn=_forced_dry_run, config_schema={}),
    description=f"Dry run of {JOB_NAME}: report what it would delete (rows per team and day), recompute and "
    "rewrite, and which requests it would reject. Nothing is changed: no row, no file, no request status.",
)
def data_deletion_dry_run_job() -> None:
    deletion_steps()


# --- Requesting a deletion from the launchpad ---------------------------------------------------------------


class DeletionRequestConfig(Config):
    team_id: int = Field(description="The team whose data is deleted.")
    key_type: str = Field(
        description="person: one person's events (by person_id); team: every event of the team; properties: "
        "remove the `properties` keys from the team's events (the events stay)."
    )
    key: str = Field(default="", description="The person's UUID for key_type person; empty otherwise.")
    properties: list[str] = Field(
        default=[], description="key_type properties: the property keys to remove (at least one), e.g. ['$ip']."
    )
    events: list[str] = Field(
        default=[], description="key_type properties: only these events (e.g. ['$pageview']); empty: every event."
    )
    start_time: str | None = Field(
        default=None, description="key_type properties: only events at or after this time (ISO 8601, UTC if no zone)."
    )
    end_time: str | None = Field(
        default=None, description="key_type properties: only events before this time (ISO 8601, UTC if no zone)."
    )


def parsed_time(name: str, text: str | None) -> datetime | None:
    """A launchpad time, or a `ValueError` naming the field."""
    if text is None or not text.strip():
        return None
    try:
        return datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"{name} must be an ISO 8601 time like 2024-03-05T00:00:00, got {text!r}") from None


@op(tags=OP_TAGS, description="Record a data deletion request; data_deletion_job carries it out.")
def insert_deletion_request(
    context: OpExecutionContext, config: DeletionRequestConfig, clickhouse: ClickHouseResource
) -> Output:
    start_time, end_time = parsed_time("start_time", config.start_time), parsed_time("end_time", config.end_time)
    with clickhouse.get_client(context) as client:
        request_id = store.insert_request(
            client,
            config.team_id,
            config.key_type.strip(),
            config.key.strip(),
            config.properties,
            config.events,
            start_time,
            end_time,
        )
    context.log.info(f"Recorded deletion request {request_id}: team {config.team_id}, {config.key_type} {config.key}")
    scope = (
        {
            "properties": config.properties,
            "events": config.events,
            "start_time": config.start_time or "",
            "end_time": config.end_time or "",
        }
        if config.key_type.strip() == store.PROPERTIES
        else {}
    )
    return Output(
        request_id,
        metadata={
            "request_id": request_id,
            "team_id": config.team_id,
            "key_type": config.key_type,
            "key": config.key,
            **{name: str(value) for name, value in scope.items()},
        },
    )


@job(
    name="request_data_deletion",
    tags={**OWNER.tags(), "dagster/max_runtime": "600"},
    description="Record one data deletion request (team, key type, key) in data_deletion_requests; it is "
    "checked and carried out by the next data_deletion_job run.",
)
def request_data_deletion() -> None:
    insert_deletion_request()


DELETION_JOBS = [data_deletion_job, data_deletion_dry_run_job, request_data_deletion]
