"""Recomputing a window of days idempotently: compute into a staging table, then replace each day's partition.

One `INSERT ... SELECT` computes the whole window into a staging table of the run's own; then each day
replaces the target's partition with `ALTER TABLE ... REPLACE PARTITION`: a day is replaced atomically,
and running a day twice leaves exactly what running it once leaves.
"""

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import date, timedelta
from typing import Any

from dags.common import ClickHouseClient, quote_identifier
from dags.web_analytics.schema import create_web_preaggregated_tables
from dags.web_analytics.sql import COPY_OTHER_TEAMS, ROWS_BY_DAY, PreAggregate

# A run of the web analytics job may take at most this long (seconds): `dagster/max_runtime`.
MAX_RUNTIME_SECONDS = 3 * 60 * 60

STALE_STAGING_TABLES = """
SELECT name
FROM system.tables
WHERE database = currentDatabase()
  AND startsWith(name, {prefix:String})
  AND metadata_modification_time <= now() - toIntervalSecond({age_seconds:UInt32})
"""


def days_of(first_day: date, end_day: date) -> list[date]:
    return [first_day + timedelta(days=offset) for offset in range((end_day - first_day).days)]


def staging_table_name(target: str, run_id: str) -> str:
    """A staging table per run and target: concurrent runs never share one."""
    return f"{target}_staging_{run_id.replace('-', '')}"


@contextmanager
def staging_table(client: ClickHouseClient, target: str, run_id: str) -> Iterator[str]:
    """A fresh empty copy of `target`'s structure for this run, dropped afterwards (also on failure)."""
    name = staging_table_name(target, run_id)
    client.command("DROP TABLE IF EXISTS {name:Identifier} SYNC", {"name": name})  # a retried step's leftover
    # `AS {target:Identifier}` does not parse; the target is one of this package's table names.
    client.command(f"CREATE TABLE {{name:Identifier}} AS {quote_identifier(target)}", {"name": name})
    try:
        yield name
    finally:
        client.command("DROP TABLE IF EXISTS {name:Identifier} SYNC", {"name": name})


def drop_stale_staging_tables(
    client: ClickHouseClient, pre_aggregate: PreAggregate, older_than_seconds: int = 2 * MAX_RUNTIME_SECONDS
) -> list[str]:
    """Drop staging tables left by runs killed without cleaning up (older than any run may last)."""
    stale = [
        row["name"]
        for row in client.query_rows(
            STALE_STAGING_TABLES, {"prefix": pre_aggregate.staging_prefix, "age_seconds": older_than_seconds}
        )
    ]
    for name in stale:
        client.command("DROP TABLE IF EXISTS {name:Identifier} SYNC", {"name": name})
    return stale


def window_parameters(first_day: date, end_day: date, team_ids: Sequence[int] | None) -> dict[str, Any]:
    """The bound values of a window's statements; no team ids means every team."""
    return {"first_day": first_day, "end_day": end_day, "team_ids": list(team_ids or [])}


def swap_in_day(client: ClickHouseClient, target: str, staging: str, day: date, staged: bool) -> None:
    """Make `target`'s partition of `day` what `staging` holds for it (nothing, when `staged` is false)."""
    partition = day.strftime("%Y%m%d")
    # ALTER takes no identifier parameters; both names are ours (a table constant, the run id).
    if staged:
        client.command(
            f"ALTER TABLE {quote_identifier(target)} REPLACE PARTITION ID {{partition:String}} "
            f"FROM {quote_identifier(staging)}",
            {"partition": partition},
        )
    else:
        # ClickHouse refuses REPLACE PARTITION from an empty source partition: drop the day instead.
        client.command(
            f"ALTER TABLE {quote_identifier(target)} DROP PARTITION ID {{partition:String}}", {"partition": partition}
        )


def refresh_window(
    client: ClickHouseClient,
    pre_aggregate: PreAggregate,
    *,
    first_day: date,
    end_day: date,
    run_id: str,
    team_ids: Sequence[int] | None = None,
    extra_settings: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Recompute the days `[first_day, end_day)` of one pre-aggregate; returns what happened, for metadata.

    One INSERT ... SELECT computes the whole window into a staging table; then each day replaces the
    target's partition (a day with no rows is dropped from the target, so deleted events disappear too).
    """
    create_web_preaggregated_tables(client)
    params = window_parameters(first_day, end_day, team_ids)
    with staging_table(client, pre_aggregate.table, run_id) as staging:
        started = time.monotonic()
        client.command(pre_aggregate.insert_sql, {**params, "staging": staging}, settings=extra_settings)
        insert_seconds = time.monotonic() - started
        rows_by_day = {row["day"]: row["rows"] for row in client.query_rows(ROWS_BY_DAY, {"table": staging})}
        staged_days = set(rows_by_day)
        if team_ids:
            client.command(COPY_OTHER_TEAMS, {**params, "staging": staging, "target": pre_aggregate.table})
            staged_days = {row["day"] for row in client.query_rows(ROWS_BY_DAY, {"table": staging})}

        emptied: list[str] = []
        replace_seconds_by_day: dict[str, float] = {}
        for day in days_of(first_day, end_day):
            started = time.monotonic()
            staged = day.isoformat() in staged_days
            swap_in_day(client, pre_aggregate.table, staging, day, staged)
            if not staged:
                emptied.append(day.isoformat())
            replace_seconds_by_day[day.isoformat()] = time.monotonic() - started
    return {
        "rows_written": sum(rows_by_day.values()),
        "rows_by_day": {day.isoformat(): rows_by_day.get(day.isoformat(), 0) for day in days_of(first_day, end_day)},
        "days_emptied": emptied,
        "insert_seconds": round(insert_seconds, 3),
        "replace_seconds": round(sum(replace_seconds_by_day.values()), 3),
        "replace_seconds_by_day": {day: round(seconds, 3) for day, seconds in replace_seconds_by_day.items()},
        "staging_table": staging,
    }
