"""What a user may set when launching a web analytics run, checked before anything is written."""

import re
from typing import Any

from dagster import Config, Failure
from pydantic import Field

from dags.common import ClickHouseClient


class WebPreaggregatedConfig(Config):
    team_ids: list[int] | None = Field(
        default=None,
        description="Recompute only these teams (their rows of each day are replaced, other teams' are kept): "
        "at least one team id, each 0 or more. Leave it out for every team.",
    )
    extra_clickhouse_settings: dict[str, Any] = Field(
        default_factory=dict,
        description="ClickHouse settings for the computing query, e.g. {max_threads: 4, max_memory_usage: 2e10}.",
    )


_SETTING_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def config_error(message: str) -> Failure:
    """A failure that retrying cannot fix: the run stops at once, before anything is written."""
    return Failure(description=message, allow_retries=False)


def validate_config(client: ClickHouseClient, config: WebPreaggregatedConfig) -> None:
    """Reject bad config before anything is written, with an error that says what to change."""
    if config.team_ids is not None:
        if not config.team_ids:
            raise config_error("team_ids is empty: leave it out to compute every team, or list at least one team id.")
        negative = [team for team in config.team_ids if team < 0]
        if negative:
            raise config_error(f"team_ids must be non-negative team ids, got {negative}.")
    settings = config.extra_clickhouse_settings
    if not settings:
        return
    malformed = [name for name in settings if not _SETTING_NAME.match(name)]
    if malformed:
        raise config_error(f"extra_clickhouse_settings has names that are not ClickHouse settings: {malformed}.")
    not_scalar = [name for name, value in settings.items() if not isinstance(value, str | int | float | bool)]
    if not_scalar:
        raise config_error(f"extra_clickhouse_settings values must be numbers, strings or booleans: {not_scalar}.")
    known = {
        row["name"]
        for row in client.query_rows(
            "SELECT name FROM system.settings WHERE name IN {names:Array(String)}", {"names": list(settings)}
        )
    }
    unknown = sorted(set(settings) - known)
    if unknown:
        raise config_error(
            f"extra_clickhouse_settings names unknown ClickHouse settings: {unknown}. "
            "See SELECT name FROM system.settings for the ones this server knows."
        )
    try:
        client.command("SELECT 1", settings=settings)
    except Exception as error:
        raise config_error(f"ClickHouse rejected extra_clickhouse_settings {settings}: {error}") from None
