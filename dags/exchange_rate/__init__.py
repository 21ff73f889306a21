"""Exchange rates for revenue analytics: sources, the ClickHouse table and dictionary, assets and schedules."""

from dags.exchange_rate.assets import (
    exchange_rate_assets,
    exchange_rate_jobs,
    exchange_rate_schedules,
)
from dags.exchange_rate.day_files import IO_MANAGER_KEY, DayRatesIOManagerFactory
from dags.exchange_rate.sources import ExchangeRateSource, exchange_rate_source_from_env

__all__ = [
    "IO_MANAGER_KEY",
    "DayRatesIOManagerFactory",
    "ExchangeRateSource",
    "exchange_rate_assets",
    "exchange_rate_jobs",
    "exchange_rate_resources",
    "exchange_rate_schedules",
    "exchange_rate_source_from_env",
]


def exchange_rate_resources() -> dict[str, object]:
    """The resources the exchange-rate assets need besides the shared ones."""
    return {"exchange_rate_source": exchange_rate_source_from_env(), IO_MANAGER_KEY: DayRatesIOManagerFactory()}
