"""The management jobs at size on the bench's server, against the bare mutation statements they are built on.

A database of its own on the server holds a month of demo events (`--management-events`, 50 million by
default, one monthly partition) and nothing downstream of them: no pre-aggregates, no exports, so both ways
do only the events' part and the comparison is the job's own cost (planning, markers, progress, verification,
requests and audit, run records) over the statement.

- **Deleting one person**: a request, then `data_deletion_job` (plan, `ALTER TABLE events DELETE IN PARTITION`,
  followed to the end, verified), against `ALTER TABLE events DELETE WHERE team_id = ... AND person_id = ...`.
  Each repetition deletes two of the busiest people left (one for each way), chosen after the previous
  repetition's squash: a squash re-points the events of the distinct ids it moves to new person ids.
- **Squashing overrides for 1% of the distinct ids**: overrides for one hundredth of the month's distinct ids
  (`cityHash64(distinct_id) % 100`, a new slice each time), then `squash_person_overrides` (snapshot on the
  host, dictionary, plan, `ALTER TABLE events UPDATE person_id = dictGet(...)` per partition, the squashed
  overrides deleted, cleanup), against the bare statements: a snapshot table, a dictionary over it, the UPDATE,
  the DELETE of the overrides.

The two ways run in turns in one worker process.
"""

import statistics
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from bench.common import Engine, Row, Section, Workspace, call_in_worker, seconds, spread
from bench.dataset import GENERATOR_MAX_EVENTS, WINDOW_START

DATABASE = "bench_management"
DAYS = 30
REPORT_OVER = 1.5  # the line: a gap over this is explained in RESULTS.md
SMOKE_EVENTS = 3_000
DEFAULT_EVENTS = 50_000_000


def _load(client: Any, events: int) -> None:
    """A month of demo events in parts the generator accepts (days of their own, different seeds)."""
    from dags.events import generate_demo_events

    parts = max(1, -(-events // GENERATOR_MAX_EVENTS))
    days_per_part = -(-DAYS // parts)
    loaded = 0
    for part in range(parts):
        start = WINDOW_START + timedelta(days=part * days_per_part)
        days = min(days_per_part, DAYS - part * days_per_part)
        if days <= 0:
            break
        part_events = events // parts if part < parts - 1 else events - loaded
        generate_demo_events(client, start_date=start, days=days, events=part_events, seed=100 + part)
        loaded += part_events
    client.command("OPTIMIZE TABLE events FINAL")


def _busy_people(client: Any, count: int) -> list[tuple[int, str]]:
    rows = client.query_rows(
        "SELECT team_id, toString(person_id) AS person FROM events GROUP BY team_id, person_id "
        "ORDER BY count() DESC, person LIMIT {count:UInt32}",
        {"count": count},
    )
    return [(row["team_id"], row["person"]) for row in rows]


def _add_overrides(client: Any, slice_number: int) -> int:
    """Overrides for the distinct ids of one hundredth of the month, written three days ago."""
    client.command(
        "INSERT INTO person_distinct_id_overrides (team_id, distinct_id, person_id, version, _timestamp) "
        "SELECT team_id, distinct_id, generateUUIDv4(cityHash64(distinct_id)), 1, now() - INTERVAL 3 DAY "
        "FROM (SELECT DISTINCT team_id, distinct_id FROM events WHERE cityHash64(distinct_id) % 100 = {slice:UInt8})",
        {"slice": slice_number},
    )
    return int(client.command("SELECT count() FROM person_distinct_id_overrides FINAL"))


BARE_SQUASH = [
    "DROP DICTIONARY IF EXISTS bench_bare_squash",
    "DROP TABLE IF EXISTS bench_bare_snapshot SYNC",
    "CREATE TABLE bench_bare_snapshot ENGINE = MergeTree ORDER BY (team_id, distinct_id) AS "
    "SELECT team_id, distinct_id, argMax(person_id, version) AS person_id, max(version) AS latest_version "
    "FROM person_distinct_id_overrides GROUP BY team_id, distinct_id",
    f"CREATE DICTIONARY bench_bare_squash (team_id Int64, distinct_id String, person_id UUID, latest_version Int64) "
    f"PRIMARY KEY team_id, distinct_id SOURCE(CLICKHOUSE(DB '{DATABASE}' TABLE 'bench_bare_snapshot')) "
    "LAYOUT(COMPLEX_KEY_HASHED()) LIFETIME(0)",
    "ALTER TABLE events UPDATE person_id = dictGet('bench_bare_squash', 'person_id', (team_id, distinct_id)) "
    "WHERE dictHas('bench_bare_squash', (team_id, distinct_id)) "
    "SETTINGS mutations_sync = 1, allow_nondeterministic_mutations = 1",
    "ALTER TABLE person_distinct_id_overrides DELETE WHERE dictHas('bench_bare_squash', (team_id, distinct_id)) "
    "SETTINGS mutations_sync = 1, allow_nondeterministic_mutations = 1",
    "DROP DICTIONARY bench_bare_squash",
    "DROP TABLE bench_bare_snapshot SYNC",
]


def measure(server_url: str, events: int, repeat: int) -> dict[str, Any]:
    """Worker: load the month, then each job and its bare statements in turns, `repeat` times; seconds."""
    from urllib.parse import urlparse, urlunparse

    import clickhouse_connect
    from dagster import DagsterInstance

    from dags.common import ClickHouseResource
    from dags.events import create_events_tables
    from dags.exports.resource import export_destination_from_env
    from dags.management.deletion.jobs import data_deletion_job
    from dags.management.deletion.requests import insert_request
    from dags.management.person_overrides.jobs import squash_person_overrides

    admin = clickhouse_connect.get_client(dsn=server_url)
    admin.command(f"DROP DATABASE IF EXISTS {DATABASE} SYNC")
    admin.command(f"CREATE DATABASE {DATABASE}")
    url = urlunparse(urlparse(server_url)._replace(path=f"/{DATABASE}"))
    clickhouse = ClickHouseResource(url=url)
    resources = {"clickhouse": clickhouse, "export_destination": export_destination_from_env()}
    bare = clickhouse_connect.get_client(dsn=url)
    started = time.perf_counter()
    create_events_tables(clickhouse.get_cluster())  # events and the overrides table
    with clickhouse.get_client() as client:
        _load(client, events)
        loaded_seconds = time.perf_counter() - started
        rows = int(client.command("SELECT count() FROM events"))
    timings: dict[str, list[float]] = {"delete_job": [], "delete_bare": [], "squash_job": [], "squash_bare": []}
    figures: dict[str, list[int]] = {"person_rows": [], "bare_person_rows": [], "overrides": [], "rows_updated": []}
    steps: dict[str, list[dict[str, float]]] = {"delete_job": [], "squash_job": []}
    with DagsterInstance.get() as instance:
        for repetition in range(repeat):
            with clickhouse.get_client() as client:
                (job_team, job_person), (bare_team, bare_person) = _busy_people(client, 2)
                person_rows = "SELECT count() FROM events WHERE person_id = toUUID({p:String})"
                for key, person in (("person_rows", job_person), ("bare_person_rows", bare_person)):
                    figures[key].append(int(client.command(person_rows, {"p": person})))
                insert_request(client, job_team, "person", job_person)
            begun = time.perf_counter()
            result = data_deletion_job.execute_in_process(resources=resources, instance=instance)
            timings["delete_job"].append(time.perf_counter() - begun)
            assert result.success
            steps["delete_job"].append(_step_seconds(instance, result.run_id))

            begun = time.perf_counter()
            bare.command(
                "ALTER TABLE events DELETE WHERE team_id = {team:Int64} AND person_id = toUUID({person:String}) "
                "SETTINGS mutations_sync = 1",
                parameters={"team": bare_team, "person": bare_person},
            )
            timings["delete_bare"].append(time.perf_counter() - begun)

            with clickhouse.get_client() as client:
                figures["overrides"].append(_add_overrides(client, 2 * repetition))
                moved = "SELECT count() FROM events WHERE cityHash64(distinct_id) % 100 = {slice:UInt8}"
                figures["rows_updated"].append(int(client.command(moved, {"slice": 2 * repetition})))
            timestamp = (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%S")
            config = {"ops": {"plan_person_overrides_squash": {"config": {"timestamp": timestamp}}}}
            begun = time.perf_counter()
            result = squash_person_overrides.execute_in_process(
                run_config=config, resources=resources, instance=instance
            )
            timings["squash_job"].append(time.perf_counter() - begun)
            assert result.success
            steps["squash_job"].append(_step_seconds(instance, result.run_id))
            with clickhouse.get_client() as client:
                assert int(client.command("SELECT count() FROM person_distinct_id_overrides FINAL")) == 0
                _add_overrides(client, 2 * repetition + 1)
            begun = time.perf_counter()
            for statement in BARE_SQUASH:
                bare.command(statement)
            timings["squash_bare"].append(time.perf_counter() - begun)
    bare.close()
    admin.command(f"DROP DATABASE {DATABASE} SYNC")
    admin.close()
    return {"timings": timings, "figures": figures, "steps": steps, "rows": rows, "load_seconds": loaded_seconds}


def _step_seconds(instance: Any, run_id: str) -> dict[str, float]:
    """Seconds of each step of the run, from Dagster's own step records, in the order the steps started."""
    stats = sorted(instance.get_run_step_stats(run_id), key=lambda stat: stat.start_time or 0)
    return {stat.step_key: (stat.end_time or 0) - (stat.start_time or 0) for stat in stats}


def _steps_table(job: str, runs: list[dict[str, float]], total: float, bare: float) -> str:
    """Median seconds per step of the job's runs, and what the run spent outside its steps."""
    lines = [f"{job} per step (medians of {len(runs)} runs):", "", "| step | seconds |", "|---|---|"]
    medians = {key: statistics.median(run.get(key, 0.0) for run in runs) for key in runs[0]}
    lines += [f"| {key} | {value:.2f} |" for key, value in medians.items()]
    lines.append(f"| (outside the steps: run start, records, process) | {total - sum(medians.values()):.2f} |")
    lines.append(f"| **the bare statements, for comparison** | {bare:.2f} |")
    return "\n".join(lines)


def run(workspace: Workspace, repeat: int, server: Engine, events: int) -> Section:
    result = call_in_worker(
        "bench.management:measure",
        workspace.environment(server),
        workspace.logs / "management.log",
        server_url=server.url("HTTP"),
        events=events,
        repeat=repeat,
    ).value
    timings, figures, rows = result["timings"], result["figures"], result["rows"]
    median = {name: statistics.median(values) for name, values in timings.items()}
    person_rows = statistics.median(figures["person_rows"] + figures["bare_person_rows"])
    overrides = statistics.median(figures["overrides"])
    updated = statistics.median(figures["rows_updated"])
    delete_ratio = median["delete_job"] / median["delete_bare"]
    squash_ratio = median["squash_job"] / median["squash_bare"]
    rows_out = [
        Row(
            f"deleting one person (~{person_rows:,.0f} events) from a month of {rows:,} events, server: "
            "request + data_deletion_job",
            seconds(median["delete_job"]),
            f"bare ALTER TABLE events DELETE {seconds(median['delete_bare'])}",
            delete_ratio,
            f"reported (over {REPORT_OVER}x explained)",
            None,
        ),
        Row(
            f"squashing overrides for 1% of the distinct ids ({overrides:,.0f} overrides, ~{updated:,.0f} events) "
            f"in a month of {rows:,} events, server: squash_person_overrides",
            seconds(median["squash_job"]),
            f"bare snapshot + dictionary + UPDATE + DELETE {seconds(median['squash_bare'])}",
            squash_ratio,
            f"reported (over {REPORT_OVER}x explained)",
            None,
        ),
    ]
    detail = (
        f"Management jobs on the server ({rows:,} events in one monthly partition, loaded in "
        f"{seconds(result['load_seconds'])}; medians of {repeat}, in turns; spread: deletion job "
        f"{spread(timings['delete_job'])}, bare DELETE {spread(timings['delete_bare'])}, squash job "
        f"{spread(timings['squash_job'])}, bare squash {spread(timings['squash_bare'])}). No pre-aggregates or "
        "exports downstream: the jobs' recompute and rewrite steps find nothing to do, so the ratio is the job's "
        "own cost over the statement. People deleted, job / bare, events each: "
        + ", ".join(f"{a:,} / {b:,}" for a, b in zip(figures["person_rows"], figures["bare_person_rows"], strict=True))
        + "."
    )
    tables = [
        _steps_table("data_deletion_job", result["steps"]["delete_job"], median["delete_job"], median["delete_bare"]),
        _steps_table(
            "squash_person_overrides", result["steps"]["squash_job"], median["squash_job"], median["squash_bare"]
        ),
    ]
    return Section(rows_out, "\n\n".join([detail, *tables]))
