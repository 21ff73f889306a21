"""ClickHouse for every asset: the resource, its client, and the three ways in (embedded, HTTP, native).

`dags.common` re-exports the public face; this package holds the insides, one concern per module.
"""

from dags.clickhouse.client import ClickHouseClient
from dags.clickhouse.errors import (
    ClickHouseBusyError,
    ClickHouseError,
    ClickHouseNotRetryableError,
    is_transient,
    retry_with_backoff,
    server_message,
)
from dags.clickhouse.resource import ClickHouseResource
from dags.clickhouse.url import parse_clickhouse_url, quote_identifier, quote_string, redact_url

__all__ = [
    "ClickHouseBusyError",
    "ClickHouseClient",
    "ClickHouseError",
    "ClickHouseNotRetryableError",
    "ClickHouseNotRetryableError",
    "ClickHouseResource",
    "is_transient",
    "parse_clickhouse_url",
    "quote_identifier",
    "quote_string",
    "redact_url",
    "retry_with_backoff",
    "server_message",
]
