"""When `squash_person_overrides` runs: weekly, before the weekly data deletion, once a user turns it on."""

from dagster import DefaultScheduleStatus, ScheduleDefinition

from dags.management.person_overrides.jobs import squash_person_overrides

# Sunday 01:00 UTC, two hours before `data_deletion_weekly_schedule` (03:00), as PostHog runs deletes after a
# squash: a person deletion goes by `person_id`, so the events of a device merged into that person must carry
# its id first. The two never overlap either way: their mutation steps share the `data_deletion` pool.
squash_person_overrides_weekly_schedule = ScheduleDefinition(
    name="squash_person_overrides_weekly_schedule",
    job=squash_person_overrides,
    cron_schedule="0 1 * * 0",
    execution_timezone="UTC",
    default_status=DefaultScheduleStatus.STOPPED,
    description="Every Sunday at 01:00 UTC (before the weekly data deletion at 03:00), squash the person "
    "overrides written more than two days ago into events. Off until turned on.",
)

PERSON_OVERRIDES_SCHEDULES = [squash_person_overrides_weekly_schedule]
