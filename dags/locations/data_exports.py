"""The data exports team's location: the export assets, jobs and schedules, with their destination, and the
batch exports users declare in BATCH_EXPORTS_FILE (an invalid file leaves out only the batch exports, with
the stand-in job `batch_exports_failed_to_load` in their place)."""

from dagster import Definitions

from dags.common import clickhouse_resource, location_executor
from dags.exports.assets import EXPORT_ASSETS, EXPORT_JOBS, EXPORT_SCHEDULES
from dags.exports.batch_assets import build_batch_exports_or_stand_in
from dags.exports.resource import export_destination

BATCH_EXPORTS = build_batch_exports_or_stand_in()

defs = Definitions(
    assets=[*EXPORT_ASSETS, *BATCH_EXPORTS.assets],
    jobs=[*EXPORT_JOBS, *BATCH_EXPORTS.jobs],
    schedules=[*EXPORT_SCHEDULES, *BATCH_EXPORTS.schedules],
    resources={"clickhouse": clickhouse_resource(), "export_destination": export_destination()},
    executor=location_executor(),
)
