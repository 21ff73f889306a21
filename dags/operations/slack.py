"""Slack for failure alerts (the Slack SDK's `WebClient`, as dagster-slack uses it), with each team's channel;
no token means "log only"."""

from typing import TYPE_CHECKING

from dagster import ConfigurableResource, EnvVar
from pydantic import Field

from dags.common import JobOwners, env_text, load_settings

if TYPE_CHECKING:  # the Slack SDK loads when an alert is sent: it would add 0.1 s to every code server's start
    from slack_sdk import WebClient

# slack_sdk's WebClient.BASE_URL, spelled out so that defining the resource does not import the SDK.
SLACK_API_URL = "https://slack.com/api/"

# Where each team hears about its failed runs (the run's `owner` tag). Runs of an unknown owner go to the
# default channel (SLACK_DEFAULT_CHANNEL).
ALERT_CHANNELS: dict[str, str] = {
    JobOwners.TEAM_REVENUE_ANALYTICS: "#alerts-revenue-analytics",
    JobOwners.TEAM_WEB_ANALYTICS: "#alerts-web-analytics",
    JobOwners.TEAM_DATA_EXPORTS: "#alerts-data-exports",
    JobOwners.TEAM_PLATFORM: "#alerts-data-platform",
}


class SlackAlertsResource(ConfigurableResource):
    """Slack's Web API (the same `token` field and `get_client()` as dagster-slack's `SlackResource`), plus
    where alerts go and where the UI is; no token means "log only".

    Example:
        ```python
        SlackAlertsResource(token=EnvVar("SLACK_BOT_TOKEN"), default_channel="#data-alerts")
        ```
    """

    token: str = Field(
        default="",
        description="Slack bot token (chat:write), through EnvVar. Empty: alerts are written to the log.",
    )
    default_channel: str = Field(
        default="#data-alerts", description="Channel for runs whose owner has no channel of its own."
    )
    webserver_url: str = Field(
        default="http://localhost:3000", description="The Dagster UI's address, for links to the run."
    )
    base_url: str = Field(default=SLACK_API_URL, description="Slack Web API address (tests use a local one).")

    @property
    def enabled(self) -> bool:
        return bool(self.token)

    def get_client(self) -> "WebClient":
        from slack_sdk import WebClient
        from slack_sdk.http_retry import ConnectionErrorRetryHandler, RateLimitErrorRetryHandler

        client = WebClient(token=self.token, base_url=self.base_url, timeout=15)
        client.retry_handlers.extend([ConnectionErrorRetryHandler(max_retry_count=2), RateLimitErrorRetryHandler()])
        return client

    def channel_for(self, owner: str | None) -> str:
        return ALERT_CHANNELS.get(owner or "", self.default_channel)

    def run_url(self, run_id: str) -> str:
        return f"{self.webserver_url.rstrip('/')}/runs/{run_id}"


def slack_alerts_from_env() -> SlackAlertsResource:
    """The alerts resource as the environment configures it: Slack with SLACK_BOT_TOKEN, the log without."""
    use_slack = env_text("SLACK_BOT_TOKEN") is not None and not load_settings().debug
    return SlackAlertsResource(
        token=EnvVar("SLACK_BOT_TOKEN") if use_slack else "",
        default_channel=env_text("SLACK_DEFAULT_CHANNEL", "#data-alerts") or "#data-alerts",
        webserver_url=(env_text("DAGSTER_WEBSERVER_URL") or "http://localhost:3000").rstrip("/"),
    )
