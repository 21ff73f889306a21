"""Shared location: platform-owned assets (demo data for local development), sensors and alerts."""

from dagster import Definitions

from dags.events import demo_events
from dags.locations import shared_executor, shared_resources
from dags.operations import operations_sensors

defs = Definitions(
    assets=[demo_events],
    sensors=operations_sensors,
    resources=shared_resources(),
    executor=shared_executor(),
)
