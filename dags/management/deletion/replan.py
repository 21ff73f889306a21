"""Planning a resumed request again from what is still in `events`.

A request resumed by a later run skips the steps it has passed. If its person or team has rows in `events`
again (a late event in a month the plan did not hold, or rows a killed run's delete never reached), those
steps must run once more for the days that hold them, or verification fails on every run from then on.
"""

from dataclasses import replace
from datetime import date
from typing import Any

from dags.common import ClickHouseClient
from dags.management.deletion.plan import ROWS_BY_DAY, plan_request, pre_aggregated_days, request_parameters
from dags.management.deletion.requests import EVENTS_DELETED, PLANNED, DeletionRequest


def days_with_rows(client: ClickHouseClient, request: DeletionRequest) -> list[date]:
    """The days that hold the request's rows now."""
    return [row["day"] for row in client.query_rows(ROWS_BY_DAY, request_parameters(request))]


def still_in_events(client: ClickHouseClient, request: DeletionRequest) -> DeletionRequest:
    """The request narrowed to its planned days that still hold its rows: what a delete has to remove.

    Never a day outside the plan: rows that arrived there after planning would be deleted without their
    pre-aggregates and files being redone; left in place, verification finds them and the next run plans them.
    """
    now = set(days_with_rows(client, request))
    return replace(request, event_days=[day for day in request.event_days if day in now])


def replan_leftovers(client: ClickHouseClient, request: DeletionRequest) -> dict[str, Any] | None:
    """The status changes that put a resumed request back to `planned` with the days still holding its
    rows added to its plan, or None when its plan already covers what is left.

    Days planned before stay in the plan: their pre-aggregates and files may still be to redo. Rows already
    deleted stay counted; rows found again on a day are added to them (after the delete) or replace the
    count when it is larger (before the delete, where they are the same rows).
    """
    now_days, now_rows, changed_days = plan_request(client, request)
    if not now_days:
        return None
    rows = dict(zip(request.event_days, request.event_rows, strict=True))
    for day, count in zip(now_days, now_rows, strict=True):
        before = rows.get(day, 0)
        rows[day] = before + count if request.reached(EVENTS_DELETED) else max(before, count)
    days = sorted(rows)
    changes: dict[str, Any] = {
        "status": PLANNED,
        "event_days": days,
        "event_rows": [rows[day] for day in days],
        "pre_aggregate_days": sorted(set(request.pre_aggregate_days) | set(pre_aggregated_days(client, changed_days))),
    }
    if all(getattr(request, name) == value for name, value in changes.items()):
        return None
    return changes
