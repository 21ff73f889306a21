"""The `exchange_rate` table and the `exchange_rate_dict` dictionary revenue analytics converts with.

Both are contracts. The table keeps every write (`version` = write time, newer wins); the dictionary
reads the newest version of each (currency, date) and answers ``dictGet('exchange_rate_dict', 'rate',
currency, day)`` with the rate of that day, or of the nearest earlier day when that day has none.
"""

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from dags.common import ClickHouseClient, quote_identifier
from dags.exchange_rate.sources import RATE_DECIMALS, DayRates

if TYPE_CHECKING:  # loaded when rates are written, not when a code server loads the location
    import pyarrow as pa

TABLE = "exchange_rate"
DICTIONARY = "exchange_rate_dict"

CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS exchange_rate
(
    currency String,
    date Date,
    rate Decimal64(10),
    version UInt32
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (date, currency)
"""

# Every row opens a range with no end; among the ranges holding a day, 'max' picks the one that starts
# latest, which is that day's own rate or else the nearest earlier day's. The source names the table's
# database because a dictionary's query does not run in the connection's database.
CREATE_DICTIONARY = """
CREATE DICTIONARY IF NOT EXISTS exchange_rate_dict
(
    currency String,
    start_date Date,
    end_date Nullable(Date),
    rate Decimal64(10)
)
PRIMARY KEY currency
SOURCE(CLICKHOUSE(QUERY '{source_query}'))
LIFETIME(MIN 3000 MAX 3600)
LAYOUT(RANGE_HASHED(range_lookup_strategy 'max'))
RANGE(MIN start_date MAX end_date)
"""

DICTIONARY_SOURCE_QUERY = """
SELECT currency, date AS start_date, CAST(NULL AS Nullable(Date)) AS end_date, rate
FROM {table} FINAL
"""

RELOAD_DICTIONARY = "SYSTEM RELOAD DICTIONARY exchange_rate_dict"

# What the dictionary answers for each currency written, on the last day written.
DICTIONARY_ANSWERS = """
SELECT currency, dictGet('exchange_rate_dict', 'rate', currency, {day:Date}) AS rate
FROM (SELECT arrayJoin({currencies:Array(String)}) AS currency)
ORDER BY currency
"""


def arrow_schema() -> "pa.Schema":
    """The Arrow schema of the rows written to the table."""
    import pyarrow as pa

    return pa.schema(
        [
            ("currency", pa.string()),
            ("date", pa.date32()),
            ("rate", pa.decimal128(18, RATE_DECIMALS)),
            ("version", pa.uint32()),
        ]
    )


def _sql_string(text: str) -> str:
    return text.replace("\\", "\\\\").replace("'", "\\'")


def create_exchange_rate_storage(client: ClickHouseClient) -> None:
    """Create the table and the dictionary if they are missing (idempotent)."""
    client.command(CREATE_TABLE)
    table = f"{quote_identifier(client.database)}.{TABLE}"
    source_query = " ".join(DICTIONARY_SOURCE_QUERY.format(table=table).split())
    client.command(CREATE_DICTIONARY.format(source_query=_sql_string(source_query)))


def rates_table(days: Sequence[DayRates], version: int | None = None) -> "pa.Table":
    """The rows for `days`: one per currency and day, all with the same version (the write time)."""
    import pyarrow as pa

    version = int(time.time()) if version is None else version
    rows = [(currency, day.day, rate) for day in days for currency, rate in sorted(day.rates.items())]
    return pa.table(
        {
            "currency": [row[0] for row in rows],
            "date": [row[1] for row in rows],
            "rate": [row[2] for row in rows],
            "version": [version] * len(rows),
        },
        schema=arrow_schema(),
    )


def write_rates(client: ClickHouseClient, days: Sequence[DayRates], version: int | None = None) -> dict[str, Any]:
    """Insert `days` in one insert; a newer version replaces what an earlier run wrote for those days.

    `version` (default: now) is given when the same rows go to several hosts, so every host holds the same.
    """
    create_exchange_rate_storage(client)
    table = rates_table(days, version)
    started = time.monotonic()
    rows = client.insert_arrow(TABLE, table)
    return {"rows_written": rows, "bytes_written": table.nbytes, "insert_seconds": round(time.monotonic() - started, 3)}


def dictionary_answers(client: ClickHouseClient, day: Any, currencies: Sequence[str]) -> dict[str, Any]:
    """What `dictGet` returns for each currency on `day` (0 for a currency it does not know)."""
    rows = client.query_rows(DICTIONARY_ANSWERS, {"day": day, "currencies": list(currencies)})
    return {row["currency"]: row["rate"] for row in rows}
