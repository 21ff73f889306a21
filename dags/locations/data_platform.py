"""The data platform team's location: its management jobs (data deletion, the person overrides squash,
ClickHouse backups and restores), their schedules and sensors."""

from dagster import Definitions

from dags.common import clickhouse_resource, location_executor
from dags.exports.resource import export_destination
from dags.management.backups import BACKUP_JOBS, BACKUP_SCHEDULES, BACKUP_SENSORS, backup_resources
from dags.management.deletion.jobs import DELETION_JOBS
from dags.management.deletion.schedules import DELETION_SCHEDULES, DELETION_SENSORS
from dags.management.person_overrides.jobs import PERSON_OVERRIDES_JOBS
from dags.management.person_overrides.schedules import PERSON_OVERRIDES_SCHEDULES

defs = Definitions(
    jobs=[*DELETION_JOBS, *PERSON_OVERRIDES_JOBS, *BACKUP_JOBS],
    schedules=[*DELETION_SCHEDULES, *PERSON_OVERRIDES_SCHEDULES, *BACKUP_SCHEDULES],
    sensors=[*DELETION_SENSORS, *BACKUP_SENSORS],
    resources={"clickhouse": clickhouse_resource(), "export_destination": export_destination(), **backup_resources()},
    executor=location_executor(),
)
