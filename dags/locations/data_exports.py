"""The data exports team's location: the export assets, jobs and schedules, with their destination."""

from dagster import Definitions

from dags.common import clickhouse_resource, location_executor
from dags.exports.assets import EXPORT_ASSETS, EXPORT_JOBS, EXPORT_SCHEDULES
from dags.exports.resource import export_destination

defs = Definitions(
    assets=EXPORT_ASSETS,
    jobs=EXPORT_JOBS,
    schedules=EXPORT_SCHEDULES,
    resources={"clickhouse": clickhouse_resource(), "export_destination": export_destination()},
    executor=location_executor(),
)
