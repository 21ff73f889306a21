"""The pre-aggregate tables (contracts: names, columns, partitioning), with the dimensions declared once."""

from dags.common import ClickHouseClient

STATS_TABLE = "web_pre_aggregated_stats"
BOUNCES_TABLE = "web_pre_aggregated_bounces"

# The dimensions every dashboard filters and breaks down by, in table order: each column, its type and the
# event property it comes from. Missing properties read as '' (strings) or 0 (viewport); `has_*` columns
# are true when their property is non-empty.
DIMENSION_PROPERTIES: dict[str, tuple[str, str]] = {
    "host": ("$host", "String"),
    "device_type": ("$device_type", "String"),
    "browser": ("$browser", "String"),
    "os": ("$os", "String"),
    "viewport_width": ("$viewport_width", "Int64"),
    "viewport_height": ("$viewport_height", "Int64"),
    "referring_domain": ("$referring_domain", "String"),
    "utm_source": ("utm_source", "String"),
    "utm_medium": ("utm_medium", "String"),
    "utm_campaign": ("utm_campaign", "String"),
    "utm_term": ("utm_term", "String"),
    "utm_content": ("utm_content", "String"),
    "has_gclid": ("gclid", "String"),
    "has_fbclid": ("fbclid", "String"),
    "country_code": ("$geoip_country_code", "String"),
    "city_name": ("$geoip_city_name", "String"),
    "region_code": ("$geoip_subdivision_1_code", "String"),
    "region_name": ("$geoip_subdivision_1_name", "String"),
}

DIMENSIONS = tuple(DIMENSION_PROPERTIES)


def column_type(column: str) -> str:
    return "Bool" if column.startswith("has_") else DIMENSION_PROPERTIES[column][1]


DIMENSION_LIST = ", ".join(DIMENSIONS)
DIMENSION_COLUMNS = "".join(f",\n    {column} {column_type(column)}" for column in DIMENSIONS)
# The sorting key leads with host, then the table's own path columns, then the other dimensions.
_OTHER_DIMENSIONS = ", ".join(column for column in DIMENSIONS if column != "host")

# AggregatingMergeTree merges rows with equal sorting keys, so the key holds every dimension.
CREATE_STATS_TABLE = f"""
CREATE TABLE IF NOT EXISTS {STATS_TABLE}
(
    team_id UInt64,
    period_bucket DateTime('UTC'){DIMENSION_COLUMNS},
    pathname String,
    persons_uniq_state AggregateFunction(uniq, UUID),
    sessions_uniq_state AggregateFunction(uniq, String),
    pageviews_count_state AggregateFunction(sum, UInt64)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMMDD(period_bucket)
ORDER BY (team_id, period_bucket, host, pathname, {_OTHER_DIMENSIONS})
"""

CREATE_BOUNCES_TABLE = f"""
CREATE TABLE IF NOT EXISTS {BOUNCES_TABLE}
(
    team_id UInt64,
    period_bucket DateTime('UTC'){DIMENSION_COLUMNS},
    entry_pathname String,
    end_pathname String,
    persons_uniq_state AggregateFunction(uniq, UUID),
    sessions_uniq_state AggregateFunction(uniq, String),
    pageviews_count_state AggregateFunction(sum, UInt64),
    bounces_count_state AggregateFunction(sum, UInt64),
    total_session_duration_state AggregateFunction(sum, Int64),
    total_session_count_state AggregateFunction(sum, UInt64)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMMDD(period_bucket)
ORDER BY (team_id, period_bucket, host, entry_pathname, end_pathname, {_OTHER_DIMENSIONS})
"""


def create_web_preaggregated_tables(client: ClickHouseClient) -> None:
    """Create both pre-aggregate tables if they do not exist (idempotent)."""
    client.command(CREATE_STATS_TABLE)
    client.command(CREATE_BOUNCES_TABLE)
