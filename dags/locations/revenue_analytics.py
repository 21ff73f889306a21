"""The revenue analytics team's location: its assets, jobs and schedules with the shared resources."""

from dagster import Definitions

from dags.exchange_rate import (
    exchange_rate_assets,
    exchange_rate_jobs,
    exchange_rate_resources,
    exchange_rate_schedules,
)
from dags.locations import shared_executor, shared_resources

defs = Definitions(
    assets=exchange_rate_assets,
    jobs=exchange_rate_jobs,
    schedules=exchange_rate_schedules,
    resources={**shared_resources(), **exchange_rate_resources()},
    executor=shared_executor(),
)
