"""The pre-aggregates' checks: their totals per team and day equal those computed from ``events``."""

from collections.abc import Sequence
from datetime import date
from typing import Any

from dagster import AssetCheckResult, AssetCheckSeverity, AssetCheckSpec, PartitionsDefinition

from dags.common import ClickHouseClient
from dags.web_analytics.refresh import window_parameters
from dags.web_analytics.sql import EVENTS_NOT_FULLY_COUNTED, TABLE_TOTALS, PreAggregate

CHECK_TOTALS_MATCH_EVENTS = "totals_match_events"
CHECK_NO_EMPTY_DAYS = "no_empty_days_with_events"
CHECK_NO_EVENTS_LEFT_OUT = "no_events_left_out"


def check_specs(asset_name: str, partitions_def: PartitionsDefinition) -> list[AssetCheckSpec]:
    """The checks run after each materialization, recorded per partition (a multi-day run records one
    evaluation for its whole window, listing the days in its metadata)."""
    return [
        AssetCheckSpec(
            CHECK_TOTALS_MATCH_EVENTS,
            asset=asset_name,
            partitions_def=partitions_def,
            description="Pageviews and unique sessions per team and day equal those computed from events.",
        ),
        AssetCheckSpec(
            CHECK_NO_EMPTY_DAYS,
            asset=asset_name,
            partitions_def=partitions_def,
            description="Every day of the run with pageviews in events has rows in the pre-aggregate.",
        ),
        AssetCheckSpec(
            CHECK_NO_EVENTS_LEFT_OUT,
            asset=asset_name,
            partitions_def=partitions_def,
            description="No pageview was left out (a negative team id) or counted without its properties "
            "(properties that are not a valid JSON object).",
        ),
    ]


def check_totals(
    client: ClickHouseClient,
    pre_aggregate: PreAggregate,
    *,
    first_day: date,
    end_day: date,
    team_ids: Sequence[int] | None = None,
) -> tuple[AssetCheckResult, AssetCheckResult]:
    """Compare the pre-aggregate's pageviews and sessions per team and day with ``events`` itself."""
    params = window_parameters(first_day, end_day, team_ids)
    table_rows = client.query_rows(TABLE_TOTALS, {**params, "table": pre_aggregate.table})
    event_rows = client.query_rows(pre_aggregate.totals_from_events_sql, params)

    def by_team_day(rows: list[dict[str, Any]]) -> dict[tuple[int, str], tuple[int, int]]:
        return {(row["team_id"], str(row["day"])): (row["pageviews"], row["sessions"]) for row in rows}

    table, events = by_team_day(table_rows), by_team_day(event_rows)
    mismatches = [
        {
            "team_id": team,
            "day": day,
            "pageviews": table.get((team, day), (0, 0))[0],
            "pageviews_in_events": events.get((team, day), (0, 0))[0],
            "sessions": table.get((team, day), (0, 0))[1],
            "sessions_in_events": events.get((team, day), (0, 0))[1],
        }
        for team, day in sorted(set(table) | set(events))
        if table.get((team, day), (0, 0)) != events.get((team, day), (0, 0))
    ]
    days_with_events = sorted({day for _, day in events})
    days_in_table = {day for _, day in table}
    empty_days = [day for day in days_with_events if day not in days_in_table]
    totals = AssetCheckResult(
        check_name=CHECK_TOTALS_MATCH_EVENTS,
        passed=not mismatches,
        severity=AssetCheckSeverity.ERROR,
        description=None if not mismatches else f"{len(mismatches)} team-days differ from events; recompute them",
        metadata={
            "team_days_checked": len(set(table) | set(events)),
            "pageviews": sum(value[0] for value in table.values()),
            "pageviews_in_events": sum(value[0] for value in events.values()),
            "mismatches": mismatches[:50],
        },
    )
    no_empty_days = AssetCheckResult(
        check_name=CHECK_NO_EMPTY_DAYS,
        passed=not empty_days,
        severity=AssetCheckSeverity.ERROR,
        description=None if not empty_days else f"days with events but no rows: {empty_days}",
        metadata={"days_with_events": days_with_events, "empty_days": empty_days},
    )
    return totals, no_empty_days


def check_events_left_out(
    client: ClickHouseClient, *, first_day: date, end_day: date, team_ids: Sequence[int] | None = None
) -> AssetCheckResult:
    """Warn about the window's pageviews that the pre-aggregates leave out or read without properties."""
    counts = client.query_rows(EVENTS_NOT_FULLY_COUNTED, window_parameters(first_day, end_day, team_ids))[0]
    found = {reason: int(count) for reason, count in counts.items() if count}
    return AssetCheckResult(
        check_name=CHECK_NO_EVENTS_LEFT_OUT,
        passed=not found,
        severity=AssetCheckSeverity.WARN,
        description=None
        if not found
        else "pageviews left out (negative team id) or counted without properties (not a JSON object): "
        + ", ".join(f"{count:,} {reason.replace('_', ' ')}" for reason, count in found.items()),
        metadata={reason: int(count) for reason, count in counts.items()},
    )
