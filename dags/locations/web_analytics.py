"""The web analytics team's location: the pre-aggregate assets, their job, schedules and pool sensor."""

from dagster import Definitions

from dags.common import clickhouse_resource, location_executor
from dags.web_analytics.assets import WEB_ANALYTICS_ASSETS, web_analytics_daily_job
from dags.web_analytics.schedules import WEB_ANALYTICS_SCHEDULES, web_analytics_pool_limit_sensor

defs = Definitions(
    assets=WEB_ANALYTICS_ASSETS,
    jobs=[web_analytics_daily_job],
    schedules=WEB_ANALYTICS_SCHEDULES,
    sensors=[web_analytics_pool_limit_sensor],
    resources={"clickhouse": clickhouse_resource()},
    executor=location_executor(),
)
