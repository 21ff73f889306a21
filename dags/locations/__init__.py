"""What every location shares, chosen by the environment (see ``dags.common.Settings``)."""

from functools import cache
from typing import Any

from dagster import ExecutorDefinition, in_process_executor, multiprocess_executor

from dags.common import clickhouse_resource_from_env, load_settings
from dags.exports import export_destination_from_env
from dags.operations import slack_alerts_from_env


@cache
def shared_resources() -> dict[str, Any]:
    """Resources by name, as the environment configures them; nothing is opened or connected here.

    Built once per process so that ``dags.definitions`` can merge the locations (same resource objects).
    """
    settings = load_settings()
    return {
        "clickhouse": clickhouse_resource_from_env(settings),
        "export_destination": export_destination_from_env(settings),
        "slack": slack_alerts_from_env(settings),
    }


@cache
def shared_executor() -> ExecutorDefinition:
    """In-process on the embedded ClickHouse (one process may open it at a time), parallel steps otherwise."""
    return in_process_executor if load_settings().uses_embedded_clickhouse else multiprocess_executor
