"""The data exports team's location: its assets, jobs and schedules with the shared resources."""

from dagster import Definitions

from dags.exports import EXPORT_ASSETS, EXPORT_JOBS, EXPORT_SCHEDULES
from dags.locations import shared_executor, shared_resources

defs = Definitions(
    assets=EXPORT_ASSETS,
    jobs=EXPORT_JOBS,
    schedules=EXPORT_SCHEDULES,
    resources=shared_resources(),
    executor=shared_executor(),
)
