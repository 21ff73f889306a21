"""What a day of the default schedules costs, counted from the definitions: the runs the schedules request in
24 hours (every tick evaluated on an idle instance) times the steps and asset materializations (and asset checks)
each run executes, as dollars a month at what Dagster+ charges per credit: one credit per step executed and one
per asset materialization (per partition), asset checks free (Dagster+'s "Credit usage" page).

Counted twice: with the deployment's own schedules only (no batch exports), and with the example batch exports
of `batch_exports.yaml`. Each count loads every location in a fresh process, as a code server does.
"""

from datetime import UTC, datetime, timedelta
from typing import Any

from bench.common import PROJECT_ROOT, Row, Section, Workspace, call_in_worker

# The range of what teams quote for a Dagster+ credit, in USD.
CREDIT_USD = (0.02, 0.04)
DAYS_PER_MONTH = 30
# Any day will do: every schedule here repeats daily or weekly; a Sunday holds the weekly ones.
COUNTED_DAY = datetime(2026, 11, 22, tzinfo=UTC)


def count(day: str) -> dict[str, Any]:
    """Worker: per schedule, its ticks on `day`, the runs it requests (each tick evaluated, as the daemon
    would on an idle instance) and what those runs materialize and check."""
    from dagster import DagsterInstance, build_schedule_context
    from dagster._utils.schedules import cron_string_iterator

    from dags.definitions import defs

    start = datetime.fromisoformat(day)
    end = start + timedelta(days=1)
    repository = defs.get_repository_def()
    schedules = []
    with DagsterInstance.local_temp() as instance:
        for schedule in repository.schedule_defs:
            crons = [schedule.cron_schedule] if isinstance(schedule.cron_schedule, str) else schedule.cron_schedule
            ticks = []
            for cron in crons:
                # The iterator yields ticks from the start time on, the start itself included when it matches.
                for tick in cron_string_iterator(start.timestamp() - 1, cron, schedule.execution_timezone or "UTC"):
                    if tick >= end:
                        break
                    if tick >= start:
                        ticks.append(tick)
            runs = 0
            for tick in ticks:
                with build_schedule_context(
                    instance=instance,
                    scheduled_execution_time=tick,
                    repository_def=repository,
                    resources=repository.get_top_level_resources(),
                ) as context:
                    runs += len(schedule.evaluate_tick(context).run_requests or [])
            job = repository.get_job(schedule.job_name)
            assets = len(job.asset_layer.executable_asset_keys)
            schedules.append(
                {
                    "schedule": schedule.name,
                    "cron": " | ".join(crons),
                    "job": job.name,
                    "ticks": len(ticks),
                    "runs": runs,
                    # A scheduled run covers one partition (each schedule here requests one partition key).
                    "materializations": runs * assets,
                    "materializations_every_tick": len(ticks) * assets,
                    "checks": runs * len(job.asset_layer.asset_graph.asset_check_keys),
                    "steps": runs * len(job.nodes_in_topological_order),
                    "steps_every_tick": len(ticks) * len(job.nodes_in_topological_order),
                }
            )
    for entry in schedules:
        entry["credits"] = entry["steps"] + entry["materializations"]
        entry["credits_every_tick"] = entry["steps_every_tick"] + entry["materializations_every_tick"]
    return {"schedules": sorted(schedules, key=lambda s: -s["credits"])}


def _dollars(credits_per_day: float) -> str:
    low, high = (credits_per_day * DAYS_PER_MONTH * price for price in CREDIT_USD)
    return f"${low:,.2f}-{high:,.2f}/month"


def run(workspace: Workspace, repeat: int) -> Section:
    del repeat  # a count, not a timing
    log = workspace.logs / "cost_per_day.log"
    no_batch_exports = workspace.root / "no_batch_exports.yaml"
    no_batch_exports.write_text("exports: []\n")
    variants = {
        "default schedules, no batch exports": workspace.environment(BATCH_EXPORTS_FILE=str(no_batch_exports)),
        "with the example batch exports": workspace.environment(
            BATCH_EXPORTS_FILE=str(PROJECT_ROOT / "batch_exports.yaml")
        ),
    }
    rows, details = [], []
    totals: dict[str, int] = {}
    for label, env in variants.items():
        schedules = call_in_worker("bench.cost_per_day:count", env, log, day=COUNTED_DAY.isoformat()).value["schedules"]
        credits = sum(s["credits"] for s in schedules)
        materializations = sum(s["materializations"] for s in schedules)
        every_tick = sum(s["credits_every_tick"] for s in schedules)
        checks = sum(s["checks"] for s in schedules)
        steps = sum(s["steps"] for s in schedules)
        measured = (
            f"{credits:,} credits ({_dollars(credits)}): {steps:,} steps + {materializations:,} materializations; "
            f"{checks:,} check evaluations (free)"
        )
        if not totals:  # the deployment's own schedules: against a run at every tick of their crons
            baseline = f"a run at every cron tick: {every_tick:,} credits ({_dollars(every_tick)})"
            ratio = credits / every_tick
        else:  # with batch exports: against the deployment's own schedules
            first = next(iter(totals.values()))
            baseline = f"without batch exports: {first:,} credits ({_dollars(first)})"
            ratio = credits / first
        totals[label] = credits
        rows.append(
            Row(
                f"cost per day, {label} (24 h of schedules, {COUNTED_DAY:%A}; "
                f"${CREDIT_USD[0]}-{CREDIT_USD[1]} a credit)",
                measured,
                baseline,
                ratio,
                "reported",
                None,
            )
        )
        lines = [
            f"Cost per day, {label} (ticks on {COUNTED_DAY:%Y-%m-%d}, a {COUNTED_DAY:%A}, UTC; one partition per "
            "run; a month is 30 such days):",
            "",
            "| schedule | cron | ticks | runs | steps | materializations | credits | check evaluations | per month |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for s in schedules:
            lines.append(
                f"| {s['schedule']} | `{s['cron']}` | {s['ticks']} | {s['runs']} | {s['steps']} | "
                f"{s['materializations']} | {s['credits']} | {s['checks']} | {_dollars(s['credits'])} |"
            )
        details.append("\n".join(lines))
    return Section(rows, "\n\n".join(details))
