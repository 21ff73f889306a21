"""The data platform team's location: management jobs (data deletion requests) run from the UI."""

from dagster import Definitions

from dags.common import clickhouse_resource, location_executor
from dags.exports.resource import export_destination
from dags.management.deletion.jobs import DELETION_JOBS
from dags.management.deletion.schedules import DELETION_SCHEDULES, DELETION_SENSORS

defs = Definitions(
    jobs=DELETION_JOBS,
    schedules=DELETION_SCHEDULES,
    sensors=DELETION_SENSORS,
    resources={"clickhouse": clickhouse_resource(), "export_destination": export_destination()},
    executor=location_executor(),
)
