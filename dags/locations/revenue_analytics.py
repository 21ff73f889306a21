"""The revenue analytics team's location: exchange-rate assets, jobs and schedules."""

from dagster import Definitions

from dags.common import clickhouse_resource, location_executor
from dags.exchange_rate import (
    exchange_rate_assets,
    exchange_rate_jobs,
    exchange_rate_resources,
    exchange_rate_schedules,
)

defs = Definitions(
    assets=exchange_rate_assets,
    jobs=exchange_rate_jobs,
    schedules=exchange_rate_schedules,
    resources={"clickhouse": clickhouse_resource(), **exchange_rate_resources()},
    executor=location_executor(),
)
