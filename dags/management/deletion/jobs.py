"""The data deletion jobs: `request_data_deletion` records a request from the launchpad,
`data_deletion_job` carries out every open request through `events`, the pre-aggregates and the exports,
and `data_deletion_dry_run_job` runs the same steps as a dry run that reports and changes nothing.
"""

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
    key_type: str = Field(description="person: one person's events (by person_id); team: every event of the team.")
    key: str = Field(default="", description="The person's UUID for key_type person; empty for a team.")


@op(tags=OP_TAGS, description="Record a data deletion request; data_deletion_job carries it out.")
def insert_deletion_request(
    context: OpExecutionContext, config: DeletionRequestConfig, clickhouse: ClickHouseResource
) -> Output:
    with clickhouse.get_client(context) as client:
        request_id = store.insert_request(client, config.team_id, config.key_type.strip(), config.key.strip())
    context.log.info(f"Recorded deletion request {request_id}: team {config.team_id}, {config.key_type} {config.key}")
    return Output(
        request_id,
        metadata={"request_id": request_id, "team_id": config.team_id, "key_type": config.key_type, "key": config.key},
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
