"""A deletion run that rejected requests says so: a failed step, and so a failed run, naming each rejected
request and why. It takes only the plan's report, so the run's valid requests are carried out all the same."""

from typing import Any

from dagster import Failure, In, MetadataValue, OpExecutionContext, op

from dags.management.deletion.ops import DELETION_POOL, OP_TAGS


def describe_rejections(rejected: list[dict[str, Any]], dry_run: bool) -> str:
    """One line per rejected request: who, what and why."""
    listed = "; ".join(
        f"request {item['request_id']} (team {item['team_id']}, key_type {item['key_type']!r}, key {item['key']!r}): "
        f"{item['reason']}"
        for item in rejected
    )
    if dry_run:
        return f"{len(rejected)} deletion request(s) would be rejected: {listed}."
    return (
        f"{len(rejected)} deletion request(s) rejected: {listed}. They stay in data_deletion_requests with status "
        "'rejected' and this reason and are not taken again: insert a corrected request. The run's other requests "
        "are carried out by its other steps."
    )


@op(
    ins={"report": In(dict)},
    pool=DELETION_POOL,
    tags=OP_TAGS,
    description="Fail the run when it rejected requests, naming each and why (the others are carried out).",
)
def report_rejected_requests(context: OpExecutionContext, report: dict[str, Any]) -> int:
    rejected: list[dict[str, Any]] = report["rejected"]
    if not rejected:
        return 0
    raise Failure(
        description=describe_rejections(rejected, report["dry_run"]),
        metadata={"rejected": MetadataValue.json(rejected)},
        allow_retries=False,
    )
