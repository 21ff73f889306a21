"""Where a ClickHouse URL points, and how names and URLs are made safe to show or to splice into SQL."""

from __future__ import annotations

import os
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlparse, urlunparse


def redact_url(url: str) -> str:
    """The URL without its password, safe for logs, metadata and the UI."""
    parsed = urlparse(url)
    if parsed.password is None:
        return url
    netloc = f"{parsed.username}:***@{parsed.hostname}" + (f":{parsed.port}" if parsed.port else "")
    return urlunparse(parsed._replace(netloc=netloc))


def quote_identifier(name: str) -> str:
    """Backtick-quote an identifier (database, table) that comes from config."""
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


def quote_string(text: str) -> str:
    """A ClickHouse string literal, where a value cannot be bound (engine arguments, dictionary sources)."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


@dataclass(frozen=True)
class ClickHouseTarget:
    """Where a ClickHouse URL points, parsed once."""

    kind: str  # "embedded", "http" or "native"
    url: str
    data_path: str | None  # embedded only
    database: str | None


def _check_server_address(url: str) -> None:
    """A server URL needs a host and, when given, a port from 1 to 65535: otherwise it can never connect."""
    parsed = urlparse(url)
    try:
        port = parsed.port
    except ValueError:
        port = -1
    if not parsed.hostname or port == -1 or port == 0:
        raise ValueError(
            f"CLICKHOUSE_URL must name a host and a port from 1 to 65535 (like http://host:8123/db); "
            f"got {redact_url(url)!r}"
        )


def parse_clickhouse_url(url: str) -> ClickHouseTarget:
    parsed = urlparse(url)
    query = {key: values[0] for key, values in parse_qs(parsed.query).items()}
    if parsed.scheme == "chdb":
        if not parsed.path or parsed.netloc:
            raise ValueError(f"An embedded ClickHouse URL looks like chdb:///absolute/path, got {url!r}")
        return ClickHouseTarget("embedded", url, os.path.realpath(unquote(parsed.path)), query.get("database"))
    if parsed.scheme in {"http", "https", "clickhouse", "clickhouses"}:
        _check_server_address(url)
    if parsed.scheme in {"http", "https"}:
        database = unquote(parsed.path.strip("/")) or query.get("database")
        return ClickHouseTarget("http", url, None, database)
    if parsed.scheme in {"clickhouse", "clickhouses"}:
        database = unquote(parsed.path.strip("/")) or query.get("database")
        return ClickHouseTarget("native", url, None, database)
    raise ValueError(
        f"CLICKHOUSE_URL must start with chdb://, http://, https:// or clickhouse://; got {redact_url(url)!r}"
    )
