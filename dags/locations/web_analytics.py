"""The web analytics team's location: its assets, jobs and schedules with the shared resources."""

from dagster import Definitions

from dags.locations import shared_executor, shared_resources
from dags.web_preaggregated import (
    WEB_ANALYTICS_ASSETS,
    WEB_ANALYTICS_SCHEDULES,
    web_analytics_daily_job,
    web_analytics_pool_limit_sensor,
)

defs = Definitions(
    assets=WEB_ANALYTICS_ASSETS,
    jobs=[web_analytics_daily_job],
    schedules=WEB_ANALYTICS_SCHEDULES,
    sensors=[web_analytics_pool_limit_sensor],
    resources=shared_resources(),
    executor=shared_executor(),
)
