"""The data exports team's settings, read from the environment when its location loads."""

from dataclasses import dataclass
from pathlib import Path

from dags.common import (
    PROJECT_ROOT,
    env_choice,
    env_date,
    env_positive_int,
    env_text,
    load_settings,
    web_analytics_start_date,
)


@dataclass(frozen=True)
class ExportSettings:
    destination_url: str | None  # EXPORT_DESTINATION_URL; None: the local folder
    local_destination_url: str  # $DAGSTER_HOME/exports
    debug: bool  # DEBUG=1: the local folder whatever EXPORT_DESTINATION_URL says
    write_method: str  # EXPORT_WRITE_METHOD: stream, or clickhouse (S3 only: ClickHouse writes with s3())
    clickhouse_s3_endpoint_url: str | None  # EXPORT_CLICKHOUSE_S3_ENDPOINT_URL: S3 as the ClickHouse server sees it
    start_date: str  # EXPORT_START_DATE: the first day of the events export
    max_partitions_per_run: int  # EXPORT_MAX_PARTITIONS_PER_RUN: days per backfill run
    web_analytics_start_date: str  # WEB_ANALYTICS_START_DATE: the first day of the pre-aggregate exports
    batch_exports_file: Path  # BATCH_EXPORTS_FILE: the exports users declare (relative: to the project root)
    dagster_home: Path  # what ${DAGSTER_HOME} stands for in a batch export's destination
    embedded_clickhouse: bool  # CLICKHOUSE_URL names the embedded engine (a laptop, the demo): no live traffic

    @property
    def effective_destination_url(self) -> str:
        if self.debug or not self.destination_url:
            return self.local_destination_url
        return self.destination_url


def load_export_settings() -> ExportSettings:
    shared = load_settings()
    return ExportSettings(
        destination_url=env_text("EXPORT_DESTINATION_URL"),
        local_destination_url=shared.local_export_url,
        debug=shared.debug,
        write_method=env_choice("EXPORT_WRITE_METHOD", ("stream", "clickhouse")),
        clickhouse_s3_endpoint_url=env_text("EXPORT_CLICKHOUSE_S3_ENDPOINT_URL"),
        start_date=env_date("EXPORT_START_DATE", "2024-01-01"),
        max_partitions_per_run=env_positive_int("EXPORT_MAX_PARTITIONS_PER_RUN", 7),
        web_analytics_start_date=web_analytics_start_date(),
        batch_exports_file=PROJECT_ROOT / (env_text("BATCH_EXPORTS_FILE") or "batch_exports.yaml"),
        dagster_home=shared.dagster_home,
        embedded_clickhouse=shared.uses_embedded_clickhouse,
    )
