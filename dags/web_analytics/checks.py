"""The pre-aggregates' checks: their totals per team and day equal those computed from `events`.

Each check is evaluated for each day a run computed, from one query per check over the run's window grouped
by day, and recorded on that day's partition: a backfill run of many days records the same per-day results
as runs of one day each.
"""

from collections.abc import Iterator, Mapping, Sequence
from datetime import date

from dagster import (
    AssetCheckEvaluation,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    Output,
    PartitionsDefinition,
)
from dagster._core.definitions.asset_checks.asset_check_evaluation import (
    AssetCheckEvaluationTargetMaterializationData,
)

from dags.common import ClickHouseClient
from dags.web_analytics.refresh import days_of, window_parameters
from dags.web_analytics.sql import EVENTS_NOT_FULLY_COUNTED, PreAggregate, TableFigures, table_figures

CHECK_TOTALS_MATCH_EVENTS = "totals_match_events"
CHECK_NO_EMPTY_DAYS = "no_empty_days_with_events"
CHECK_NO_EVENTS_LEFT_OUT = "no_events_left_out"


def check_specs(asset_name: str, partitions_def: PartitionsDefinition) -> list[AssetCheckSpec]:
    """The checks run after each materialization, one evaluation per check and day computed."""
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


TeamDayTotals = dict[tuple[int, str], tuple[int, int]]


def totals_results(table: TeamDayTotals, events: TeamDayTotals) -> tuple[AssetCheckResult, AssetCheckResult]:
    """The two totals checks over these team-days: the pre-aggregate's (pageviews, sessions) against events'."""
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


def team_day_totals(
    client: ClickHouseClient,
    pre_aggregate: PreAggregate,
    *,
    first_day: date,
    end_day: date,
    team_ids: Sequence[int] | None = None,
    figures: TableFigures | None = None,
) -> tuple[TeamDayTotals, TeamDayTotals]:
    """(pageviews, sessions) per team and day of the window: in the pre-aggregate (from `figures` when the
    caller has read them already), and from `events`."""
    figures = figures or table_figures(client, pre_aggregate.table, first_day, end_day)
    params = window_parameters(first_day, end_day, team_ids)
    event_rows = client.query_rows(pre_aggregate.totals_from_events_sql, params)
    events = {(row["team_id"], str(row["day"])): (row["pageviews"], row["sessions"]) for row in event_rows}
    return figures.totals(team_ids), events


def check_totals(
    client: ClickHouseClient,
    pre_aggregate: PreAggregate,
    *,
    first_day: date,
    end_day: date,
    team_ids: Sequence[int] | None = None,
) -> tuple[AssetCheckResult, AssetCheckResult]:
    """Compare the pre-aggregate's pageviews and sessions per team and day with `events` itself, over the
    whole window at once."""
    table, events = team_day_totals(client, pre_aggregate, first_day=first_day, end_day=end_day, team_ids=team_ids)
    return totals_results(table, events)


def check_totals_by_day(
    client: ClickHouseClient,
    pre_aggregate: PreAggregate,
    *,
    first_day: date,
    end_day: date,
    team_ids: Sequence[int] | None = None,
    figures: TableFigures | None = None,
) -> dict[str, tuple[AssetCheckResult, AssetCheckResult]]:
    """`check_totals` for each day of the window on its own (the same two queries, split by day)."""
    table, events = team_day_totals(
        client, pre_aggregate, first_day=first_day, end_day=end_day, team_ids=team_ids, figures=figures
    )

    def of_day(totals: TeamDayTotals, day: str) -> TeamDayTotals:
        return {key: value for key, value in totals.items() if key[1] == day}

    days = [day.isoformat() for day in days_of(first_day, end_day)]
    return {day: totals_results(of_day(table, day), of_day(events, day)) for day in days}


def check_events_left_out_by_day(
    client: ClickHouseClient, *, first_day: date, end_day: date, team_ids: Sequence[int] | None = None
) -> dict[str, AssetCheckResult]:
    """Warn about each day's pageviews that the pre-aggregates leave out or read without properties."""
    by_day = {
        row.pop("day"): row
        for row in client.query_rows(EVENTS_NOT_FULLY_COUNTED, window_parameters(first_day, end_day, team_ids))
    }
    reasons = ("negative_team_id", "properties_not_an_object", "properties_not_valid_json")
    results = {}
    for day in (day.isoformat() for day in days_of(first_day, end_day)):
        counts = {reason: int(by_day.get(day, {}).get(reason, 0)) for reason in reasons}
        found = {reason: count for reason, count in counts.items() if count}
        results[day] = AssetCheckResult(
            check_name=CHECK_NO_EVENTS_LEFT_OUT,
            passed=not found,
            severity=AssetCheckSeverity.WARN,
            description=None
            if not found
            else "pageviews left out (negative team id) or counted without properties (not a JSON object): "
            + ", ".join(f"{count:,} {reason.replace('_', ' ')}" for reason, count in found.items()),
            metadata=counts,
        )
    return results


def partition_check_events(
    context: AssetExecutionContext, results_by_partition: Mapping[str, Sequence[AssetCheckResult]]
) -> Iterator[Output | AssetCheckEvaluation]:
    """Each check's result for each partition the run computed, as the events the UI reads per partition.

    `AssetCheckResult` has no partition: returned from a run of many partitions, it is recorded once,
    unpartitioned, and each partition's check shows "Skipped". So each result becomes an
    `AssetCheckEvaluation` of its partition, pointing at that partition's materialization by this run.
    Yield this after the asset's `MaterializeResult`, whose materializations it looks up.
    """
    # Imported here: the event log's module pulls in SQLAlchemy and Alembic, a quarter of a code server's
    # load; a run has them loaded already with its instance.
    from dagster import AssetRecordsFilter

    records = context.instance.fetch_materializations(
        AssetRecordsFilter(asset_key=context.asset_key, asset_partitions=list(results_by_partition)),
        limit=len(results_by_partition),
    ).records
    materialized = {record.partition_key: record for record in records if record.run_id == context.run.run_id}
    selected = {key.name: key for key in context.selected_asset_check_keys if key.asset_key == context.asset_key}
    for check_key in selected.values():
        yield Output(None, output_name=context.assets_def.get_output_name_for_asset_check_key(check_key))
    for partition, results in results_by_partition.items():
        record = materialized.get(partition)
        target = (
            AssetCheckEvaluationTargetMaterializationData(
                run_id=record.run_id, storage_id=record.storage_id, timestamp=record.timestamp
            )
            if record
            else None
        )
        for result in results:
            check_key = selected.get(result.check_name or "")
            if check_key is None:
                continue
            yield AssetCheckEvaluation(
                asset_key=check_key.asset_key,
                check_name=check_key.name,
                passed=result.passed,
                metadata=result.metadata,
                target_materialization_data=target,
                severity=result.severity,
                description=result.description,
                blocking=context.assets_def.get_spec_for_check_key(check_key).blocking,
                partition=partition,
            )
