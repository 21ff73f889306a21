"""The web analytics team's settings, read from the environment when its location loads."""

from dataclasses import dataclass

from dagster._utils.schedules import is_valid_cron_string

from dags.common import SettingError, env_positive_int, env_text, web_analytics_start_date


@dataclass(frozen=True)
class WebAnalyticsSettings:
    start_date: str  # WEB_ANALYTICS_START_DATE: the first daily partition
    max_partitions_per_run: int  # DAGSTER_WEB_PREAGGREGATED_MAX_PARTITIONS_PER_RUN: days per backfill run
    yesterday_cron: str  # WEB_ANALYTICS_YESTERDAY_CRON: when yesterday's partition is recomputed
    today_cron: str  # WEB_ANALYTICS_TODAY_CRON: when today's partition so far is refreshed


def env_cron(name: str, default: str) -> str:
    value = env_text(name, default) or default
    if not is_valid_cron_string(value):
        raise SettingError(f"{name} must be a cron schedule like '15 0 * * *', got {value!r}")
    return value


def load_web_analytics_settings() -> WebAnalyticsSettings:
    return WebAnalyticsSettings(
        start_date=web_analytics_start_date(),
        max_partitions_per_run=env_positive_int("DAGSTER_WEB_PREAGGREGATED_MAX_PARTITIONS_PER_RUN", 1),
        yesterday_cron=env_cron("WEB_ANALYTICS_YESTERDAY_CRON", "15 0 * * *"),
        today_cron=env_cron("WEB_ANALYTICS_TODAY_CRON", "*/20 * * * *"),
    )
