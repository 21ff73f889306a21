"""The revenue analytics team's exchange-rate settings, read from the environment when its location loads."""

from dataclasses import dataclass

from dags.common import env_choice, env_date, env_text


@dataclass(frozen=True)
class ExchangeRateSettings:
    start_date: str  # EXCHANGE_RATE_START_DATE: the first daily partition
    source: str  # EXCHANGE_RATE_SOURCE: ecb or openexchangerates
    ecb_url: str  # EXCHANGE_RATE_ECB_URL
    open_exchange_rates_url: str  # OPEN_EXCHANGE_RATES_URL
    open_exchange_rates_app_id_configured: bool  # OPEN_EXCHANGE_RATES_APP_ID is set (read through EnvVar only)


def load_exchange_rate_settings() -> ExchangeRateSettings:
    return ExchangeRateSettings(
        start_date=env_date("EXCHANGE_RATE_START_DATE", "1999-01-04"),
        source=env_choice("EXCHANGE_RATE_SOURCE", ("ecb", "openexchangerates")),
        ecb_url=env_text("EXCHANGE_RATE_ECB_URL") or "https://www.ecb.europa.eu/stats/eurofxref",
        open_exchange_rates_url=env_text("OPEN_EXCHANGE_RATES_URL") or "https://openexchangerates.org/api",
        open_exchange_rates_app_id_configured=env_text("OPEN_EXCHANGE_RATES_APP_ID") is not None,
    )
