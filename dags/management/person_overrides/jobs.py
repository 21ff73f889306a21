"""`squash_person_overrides`: squash the person overrides into `events.person_id` and redo what was computed
from the old ids; `squash_person_overrides_cleanup`: drop what a killed squash run left."""

from dagster import job

from dags.management.deletion.ops import OWNER
from dags.management.person_overrides.follow_through import (
    recompute_squashed_days,
    rewrite_squashed_batch_exports,
    rewrite_squashed_events_exports,
    rewrite_squashed_web_pre_aggregated_bounces_exports,
    rewrite_squashed_web_pre_aggregated_stats_exports,
)
from dags.management.person_overrides.ops import (
    delete_squashed_person_overrides,
    drop_squash_tables,
    drop_squash_tables_on_failure,
    finish_person_overrides_squash,
    plan_person_overrides_squash,
    squash_events,
)

JOB_NAME = "squash_person_overrides"
CLEANUP_JOB_NAME = "squash_person_overrides_cleanup"
MAX_RUNTIME_SECONDS = 12 * 3600  # dagster/max_runtime: every partition of events may be rewritten


@job(
    name=JOB_NAME,
    tags={**OWNER.tags(), "dagster/max_runtime": str(MAX_RUNTIME_SECONDS)},
    hooks={drop_squash_tables_on_failure},
    description="Squash person_distinct_id_overrides into events.person_id: snapshot the overrides written "
    "before `timestamp` (default: two days ago), rewrite events.person_id one monthly partition at a time, "
    "delete exactly the squashed overrides, recompute the changed pre-aggregate days and rewrite their exports. "
    "`dry_run: true` reports and changes nothing.",
)
def squash_person_overrides() -> None:
    _, squash = plan_person_overrides_squash()
    squashed = squash_events(squash)
    recomputed, days = recompute_squashed_days(squashed)
    finish_person_overrides_squash(
        delete_squashed_person_overrides(squashed),
        rewrite_squashed_events_exports(recomputed, days),
        rewrite_squashed_web_pre_aggregated_stats_exports(recomputed, days),
        rewrite_squashed_web_pre_aggregated_bounces_exports(recomputed, days),
        rewrite_squashed_batch_exports(recomputed, days),
        days,
    )


@job(
    name=CLEANUP_JOB_NAME,
    tags={**OWNER.tags(), "dagster/max_runtime": "7200"},
    description=f"Drop the snapshot and dictionary a killed {JOB_NAME} run left on every host (config: its "
    "`run_id`), once the mutations that read them are done.",
)
def squash_person_overrides_cleanup() -> None:
    drop_squash_tables()


PERSON_OVERRIDES_JOBS = [squash_person_overrides, squash_person_overrides_cleanup]
