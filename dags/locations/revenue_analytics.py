"""The revenue analytics team's location: its assets, jobs and schedules with the shared resources."""

from dagster import Definitions

from dags.locations import shared_executor, shared_resources

defs = Definitions(
    assets=[],
    resources=shared_resources(),
    executor=shared_executor(),
)
