"""Every team location merged into one, for ``dagster dev -m dags.definitions`` and the CLI."""

from dagster import Definitions

from dags.locations import data_exports, data_platform, revenue_analytics, shared, web_analytics

defs = Definitions.merge(
    shared.defs,
    revenue_analytics.defs,
    web_analytics.defs,
    data_exports.defs,
    data_platform.defs,
)
