"""Shared location: platform-owned assets (the raw `events` every reader depends on, demo data for local
development), alerts and run status."""

from dagster import Definitions

from dags.common import clickhouse_resource, location_executor
from dags.events import demo_events, events
from dags.operations.alerts import slack_on_run_failure
from dags.operations.run_status import run_status_sensors
from dags.operations.slack import slack_alerts_from_env

defs = Definitions(
    assets=[demo_events, events],
    sensors=[slack_on_run_failure, *run_status_sensors],
    resources={"clickhouse": clickhouse_resource(), "slack": slack_alerts_from_env()},
    executor=location_executor(),
)
