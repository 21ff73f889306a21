"""The data platform team's location: ClickHouse backup and restore jobs, schedules and the pool sensor."""

from dagster import Definitions

from dags.locations import shared_executor, shared_resources
from dags.management.backups import BACKUP_JOBS, BACKUP_SCHEDULES, BACKUP_SENSORS, backup_resources

defs = Definitions(
    jobs=BACKUP_JOBS,
    schedules=BACKUP_SCHEDULES,
    sensors=BACKUP_SENSORS,
    resources={**shared_resources(), **backup_resources()},
    executor=shared_executor(),
)
