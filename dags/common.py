"""What every location shares: owners, shared settings, retry policies and the ClickHouse resource's face.

Each domain reads its own settings when its location loads (`dags/<domain>/settings.py`) with the readers
below, so a bad value fails that team's location with the variable's name and leaves the others loading.
The ClickHouse resource's insides live in `dags/clickhouse/`; what assets use is re-exported here.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from enum import StrEnum
from functools import cache
from pathlib import Path

from dagster import (
    AssetKey,
    Backoff,
    DagsterInstance,
    DagsterRunStatus,
    EnvVar,
    ExecutorDefinition,
    Failure,
    Jitter,
    RetryPolicy,
    SkipReason,
    in_process_executor,
    multiprocess_executor,
)

from dags.clickhouse import (
    ClickHouseBusyError,
    ClickHouseClient,
    ClickHouseError,
    ClickHouseNotRetryableError,
    ClickHouseResource,
    is_transient,
    quote_identifier,
    quote_string,
    redact_url,
    retry_with_backoff,
    server_message,
)
from dags.clickhouse.cluster import ClickHouseCluster, ClusterHostsError, Host
from dags.clickhouse.errors import first_line

__all__ = [
    "ALERT_CHANNEL_TAG",
    "ASSET_OWNERS",
    "CLICKHOUSE_RETRY_POLICY",
    "EVENTS_KEY",
    "EXTERNAL_API_RETRY_POLICY",
    "PROJECT_ROOT",
    "UNFINISHED_RUN_STATUSES",
    "ClickHouseBusyError",
    "ClickHouseClient",
    "ClickHouseCluster",
    "ClickHouseError",
    "ClickHouseNotRetryableError",
    "ClickHouseResource",
    "ClusterHostsError",
    "Host",
    "NOT_CONFIGURED_METADATA_KEY",
    "JobOwners",
    "NotConfiguredError",
    "SettingError",
    "Settings",
    "clickhouse_resource",
    "clickhouse_resource_from_env",
    "ensure_pool_limits",
    "env_choice",
    "env_date",
    "env_flag",
    "env_positive_int",
    "env_positive_seconds",
    "env_text",
    "first_line",
    "is_transient",
    "load_settings",
    "location_executor",
    "owner_of_asset",
    "quote_identifier",
    "quote_string",
    "redact_url",
    "retry_with_backoff",
    "server_message",
    "web_analytics_start_date",
]

PROJECT_ROOT = Path(__file__).resolve().parent.parent

# The raw `events` table, declared once (in the shared location) as an asset Dagster does not materialize:
# every asset that reads events depends on this key, so lineage runs from the events to everything built on them.
EVENTS_KEY = AssetKey("events")


# --- Ownership -------------------------------------------------------------------------------------------


class JobOwners(StrEnum):
    """Who answers for a job or asset: the value of its `owner` tag, which alerts and limits key off."""

    TEAM_REVENUE_ANALYTICS = "team-revenue-analytics"
    TEAM_WEB_ANALYTICS = "team-web-analytics"
    TEAM_DATA_EXPORTS = "team-data-exports"
    TEAM_PLATFORM = "team-platform"

    def tags(self) -> dict[str, str]:
        return {"owner": self.value}

    def asset_owners(self) -> list[str]:
        """The team as Dagster's `owners=` spells it (`team:web-analytics`): the catalog filters by it."""
        return [f"team:{self.value.removeprefix('team-')}"]


# Who owns each asset, by the first part of its key. Alerts read it for runs without an owner tag (assets
# materialized from the UI) instead of importing every location; a test holds it equal to the assets' tags.
ASSET_OWNERS: dict[str, JobOwners] = {
    "events": JobOwners.TEAM_PLATFORM,
    "demo_events": JobOwners.TEAM_PLATFORM,
    "daily_exchange_rates": JobOwners.TEAM_REVENUE_ANALYTICS,
    "daily_exchange_rates_in_clickhouse": JobOwners.TEAM_REVENUE_ANALYTICS,
    "hourly_exchange_rates": JobOwners.TEAM_REVENUE_ANALYTICS,
    "hourly_exchange_rates_in_clickhouse": JobOwners.TEAM_REVENUE_ANALYTICS,
    "web_pre_aggregated_stats": JobOwners.TEAM_WEB_ANALYTICS,
    "web_pre_aggregated_bounces": JobOwners.TEAM_WEB_ANALYTICS,
    "events_export": JobOwners.TEAM_DATA_EXPORTS,
    "web_pre_aggregated_stats_export": JobOwners.TEAM_DATA_EXPORTS,
    "web_pre_aggregated_bounces_export": JobOwners.TEAM_DATA_EXPORTS,
    "batch_exports": JobOwners.TEAM_DATA_EXPORTS,
}


# A run (job, asset) with this tag has its failure alert posted to that Slack channel rather than its owner's:
# the channel's name, without the `#` (Dagster's asset tags cannot hold one); several are comma-separated.
ALERT_CHANNEL_TAG = "alert_channel"


def owner_of_asset(key_path: Sequence[str]) -> str:
    """The owner tag value of the asset with this key path, or '' when the map does not know it."""
    owner = ASSET_OWNERS.get(key_path[0]) if key_path else None
    return owner.value if owner else ""


# --- Reading settings: one way for every variable ---------------------------------------------------------


class SettingError(ValueError):
    """An environment variable has a value the project cannot use; the message names the variable."""


# The failure metadata key that marks a step failure as "not configured"; its value is the variable to set.
NOT_CONFIGURED_METADATA_KEY = "not_configured"


class NotConfiguredError(Failure):
    """A step cannot run until someone sets a variable: one line naming it and what to set, not retried.

    It is a configuration to make, not an incident: the failure alert (`slack_on_run_failure`) sends nothing
    for a run whose only failures are of this kind.
    """

    def __init__(self, variable: str, what_to_set: str) -> None:
        super().__init__(
            description=f"{variable} is not set: {what_to_set}",
            metadata={NOT_CONFIGURED_METADATA_KEY: variable},
            allow_retries=False,
        )
        self.variable = variable


def env_text(name: str, default: str | None = None) -> str | None:
    """The variable's value without surrounding blanks; `default` when unset or blank."""
    return os.environ.get(name, "").strip() or default


def env_flag(name: str) -> bool:
    return (env_text(name) or "").lower() in {"1", "true", "yes", "on"}


UINT32_MAX = 2**32 - 1
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1  # team ids are Int64: a larger one would wrap to another team


def env_positive_int(name: str, default: int, maximum: int = UINT32_MAX) -> int:
    """A whole number from 1 to `maximum` (days per run, attempts, retention days).

    `maximum` is the largest value the column type or arithmetic it is bound to holds.
    """
    raw = env_text(name)
    if raw is None:
        return default
    problem = f"{name} must be a whole number from 1 to {maximum}, got {raw!r}"
    try:
        value = int(raw)
    except ValueError:
        raise SettingError(problem) from None
    if not 1 <= value <= maximum:
        raise SettingError(problem)
    return value


def env_positive_seconds(name: str, default: float) -> float:
    """A duration in seconds, greater than 0 (timeouts, waits)."""
    raw = env_text(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingError(f"{name} must be a number of seconds greater than 0, got {raw!r}") from None
    if not value > 0 or value == float("inf"):
        raise SettingError(f"{name} must be a number of seconds greater than 0, got {raw!r}")
    return value


def env_date(name: str, default: str) -> str:
    raw = env_text(name, default) or default
    try:
        return date.fromisoformat(raw).isoformat()
    except ValueError:
        raise SettingError(f"{name} must be a date like 2024-01-01, got {raw!r}") from None


def env_choice(name: str, choices: tuple[str, ...]) -> str:
    """One of `choices` (case-insensitive); the first is the default."""
    raw = (env_text(name) or choices[0]).lower()
    if raw not in choices:
        raise SettingError(f"{name} must be one of {', '.join(choices)}, got {raw!r}")
    return raw


# --- Shared settings ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    """The settings every location shares: where Dagster keeps its files and where ClickHouse is.

    `DEBUG=1` forces the local resources (embedded ClickHouse, local export folder, alerts to the log)
    even when production variables are set. Without it each resource takes its production setting
    from the environment and falls back to the local one only when nothing is configured.
    """

    debug: bool
    dagster_home: Path
    clickhouse_url: str | None
    clickhouse_cluster: str | None
    clickhouse_lock_timeout_seconds: float
    clickhouse_connect_retry_seconds: float

    @property
    def local_clickhouse_url(self) -> str:
        return f"chdb://{self.dagster_home / 'clickhouse'}"

    @property
    def local_export_url(self) -> str:
        return (self.dagster_home / "exports").as_uri()

    @property
    def effective_clickhouse_url(self) -> str:
        if self.debug or not self.clickhouse_url:
            return self.local_clickhouse_url
        return self.clickhouse_url

    @property
    def uses_embedded_clickhouse(self) -> bool:
        return self.effective_clickhouse_url.startswith("chdb:")


def load_settings() -> Settings:
    """Read the shared settings from the environment now (not at import), so tests and CLIs can change them."""
    home = env_text("DAGSTER_HOME")
    return Settings(
        debug=env_flag("DEBUG"),
        dagster_home=Path(home).resolve() if home else PROJECT_ROOT / ".dagster_home",
        clickhouse_url=env_text("CLICKHOUSE_URL"),
        clickhouse_cluster=env_text("CLICKHOUSE_CLUSTER"),
        clickhouse_lock_timeout_seconds=env_positive_seconds("CLICKHOUSE_LOCK_TIMEOUT_SECONDS", 1800.0),
        clickhouse_connect_retry_seconds=env_positive_seconds("CLICKHOUSE_CONNECT_RETRY_SECONDS", 45.0),
    )


def web_analytics_start_date() -> str:
    """The first day of the web analytics pre-aggregates, which their exports share (`WEB_ANALYTICS_START_DATE`)."""
    return env_date("WEB_ANALYTICS_START_DATE", "2024-01-01")


# --- Retry policies ----------------------------------------------------------------------------------------

# The step-level retry for ClickHouse work. The resource already retries transient errors inside a step;
# this covers what is left (a server restart longer than those retries, a lost connection mid-insert).
CLICKHOUSE_RETRY_POLICY = RetryPolicy(max_retries=3, delay=10, backoff=Backoff.EXPONENTIAL, jitter=Jitter.PLUS_MINUS)

# For calls to outside HTTP APIs and object stores.
EXTERNAL_API_RETRY_POLICY = RetryPolicy(max_retries=3, delay=5, backoff=Backoff.EXPONENTIAL, jitter=Jitter.FULL)


# --- The ClickHouse resource every location uses ------------------------------------------------------------


def clickhouse_resource_from_env(settings: Settings | None = None, *, outside_runs: bool = False) -> ClickHouseResource:
    """The ClickHouse resource as the environment configures it (see `Settings`).

    A location's resource names the server by `EnvVar("CLICKHOUSE_URL")`, which Dagster resolves when a run
    starts. `outside_runs=True` gives the same resource holding the URL itself, for code that uses it without
    a run (scripts, the benchmarks); never put that one in a location's definitions.
    """
    settings = settings or load_settings()
    # A server URL carries credentials: EnvVar keeps its value out of the UI and of stored run config.
    uses_server = not settings.debug and settings.clickhouse_url is not None
    server_url = settings.clickhouse_url if outside_runs else EnvVar("CLICKHOUSE_URL")
    return ClickHouseResource(
        url=server_url if uses_server else settings.local_clickhouse_url,
        cluster=None if settings.debug else settings.clickhouse_cluster,
        lock_timeout_seconds=settings.clickhouse_lock_timeout_seconds,
        connect_retry_seconds=settings.clickhouse_connect_retry_seconds,
    )


@cache
def clickhouse_resource() -> ClickHouseResource:
    """The ClickHouse resource of this process; one object, so that `dags.definitions` can merge locations."""
    return clickhouse_resource_from_env()


# --- Concurrency pools and runs in progress ------------------------------------------------------------------

# A run in one of these still holds, or will take, what its job writes: schedules and sensors skip a tick then.
UNFINISHED_RUN_STATUSES = [
    DagsterRunStatus.QUEUED,
    DagsterRunStatus.NOT_STARTED,
    DagsterRunStatus.STARTING,
    DagsterRunStatus.STARTED,
    DagsterRunStatus.CANCELING,
]


def ensure_pool_limits(instance: DagsterInstance, pools: Sequence[str]) -> SkipReason:
    """Write each pool's limit to the instance if it has none yet; a limit set in the UI or with
    `dagster instance concurrency set` stays. What a pool-limit sensor of a location returns.

    Dagster 1.13 stores a pool's default limit (dagster.yaml `concurrency.pools.default_limit`) only while
    deciding its first dequeue pass for that pool, and decides that pass as if the pool were unlimited: on a
    fresh instance, the first queued runs of a pool would all start together. Writing the limit when the
    daemon starts closes that gap.
    """
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return SkipReason("This instance's storage has no concurrency pools; runs are limited by tags only.")
    limits = {pool.name: pool.limit for pool in storage.get_pool_limits()}
    missing = [pool for pool in pools if pool not in limits]
    for pool in missing:
        if instance.global_op_concurrency_default_limit:
            storage.initialize_concurrency_limit_to_default(pool)
        else:
            storage.set_concurrency_slots(pool, 1)
    limits = {pool.name: pool.limit for pool in storage.get_pool_limits()}
    said = [
        f"Set the limit of pool {pool!r} to {limits.get(pool)}."
        if pool in missing
        else f"Pool {pool!r} is limited to {limits[pool]} run(s) at a time."
        for pool in pools
    ]
    return SkipReason(" ".join(said))


@cache
def location_executor() -> ExecutorDefinition:
    """In-process on the embedded ClickHouse (one process may open it at a time), parallel steps otherwise."""
    return in_process_executor if load_settings().uses_embedded_clickhouse else multiprocess_executor
