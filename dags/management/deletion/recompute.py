"""Recomputing the web analytics pre-aggregates of the days a deletion changed, through the same staging +
`REPLACE PARTITION` path the pre-aggregate assets use (`refresh_window`), for the affected teams only:
other teams' rows of those days are copied unchanged, and every other day is left alone."""

from collections.abc import Callable, Sequence
from datetime import date, timedelta
from typing import Any

from dags.common import ClickHouseClient
from dags.web_analytics.refresh import refresh_window
from dags.web_analytics.sql import PRE_AGGREGATES, unique_persons_by_day


def contiguous_windows(days: Sequence[date]) -> list[tuple[date, date]]:
    """`[first, end)` windows covering exactly `days`: one `refresh_window` call per run of days."""
    windows: list[tuple[date, date]] = []
    for day in sorted(set(days)):
        if windows and windows[-1][1] == day:
            windows[-1] = (windows[-1][0], day + timedelta(days=1))
        else:
            windows.append((day, day + timedelta(days=1)))
    return windows


def unique_persons_of_days(client: ClickHouseClient, days: Sequence[date]) -> dict[str, dict[str, int]]:
    """Each pre-aggregate's unique persons (summed over teams) on each of `days`, as dashboards read them now."""
    persons: dict[str, dict[str, int]] = {}
    for pre_aggregate in PRE_AGGREGATES:
        persons[pre_aggregate.table] = {}
        for first_day, end_day in contiguous_windows(days):
            persons[pre_aggregate.table].update(unique_persons_by_day(client, pre_aggregate.table, first_day, end_day))
    return persons


def recompute_days(
    client: ClickHouseClient,
    days: Sequence[date],
    team_ids: Sequence[int],
    run_id: str,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """Recompute both pre-aggregates for `days` and `team_ids`; returns rows written per table and day."""
    written: dict[str, Any] = {}
    for pre_aggregate in PRE_AGGREGATES:
        rows_by_day: dict[str, int] = {}
        for first_day, end_day in contiguous_windows(days):
            refreshed = refresh_window(
                client,
                pre_aggregate,
                first_day=first_day,
                end_day=end_day,
                run_id=run_id,
                team_ids=sorted(set(team_ids)),
            )
            rows_by_day.update(refreshed["rows_by_day"])
            last_day = end_day - timedelta(days=1)
            log(f"{pre_aggregate.table}: recomputed {first_day}..{last_day} for teams {sorted(set(team_ids))}")
        written[pre_aggregate.table] = rows_by_day
    return written
