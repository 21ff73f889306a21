"""The data platform team's location: ClickHouse backup and restore jobs, schedules and the pool sensor."""

from dagster import Definitions

from dags.common import clickhouse_resource, location_executor
from dags.management.backups import BACKUP_JOBS, BACKUP_SCHEDULES, BACKUP_SENSORS, backup_resources

defs = Definitions(
    jobs=BACKUP_JOBS,
    schedules=BACKUP_SCHEDULES,
    sensors=BACKUP_SENSORS,
    resources={"clickhouse": clickhouse_resource(), **backup_resources()},
    executor=location_executor(),
)
