"""The dictionary the squash looks overrides up with: `(team_id, distinct_id)` -> `person_id`, `version`,
over the run's snapshot on the same host.

`LIFETIME(0)`: it is loaded once, when created, and never reloaded; the snapshot under it never changes.
Its source names the snapshot's database, as a dictionary's query does not run in the connection's database.
"""

from collections.abc import Sequence

from dags.common import (
    ClickHouseClient,
    ClickHouseCluster,
    ClickHouseNotRetryableError,
    Host,
    quote_identifier,
    quote_string,
)
from dags.management.person_overrides.snapshot import SquashNames, summary

# The source's names cannot be bound (they are the dictionary's own settings): quoted as string literals.
CREATE_DICTIONARY = """
CREATE DICTIONARY IF NOT EXISTS {dictionary}
(
    team_id Int64,
    distinct_id String,
    person_id UUID,
    version Int64
)
PRIMARY KEY team_id, distinct_id
SOURCE(CLICKHOUSE(DB {database} TABLE {table}))
LIFETIME(0)
LAYOUT(COMPLEX_KEY_HASHED())
"""

RELOAD = "SYSTEM RELOAD DICTIONARY {dictionary}"

ELEMENT_COUNT = """
SELECT element_count, status, last_exception
FROM system.dictionaries
WHERE database = currentDatabase() AND name = {name:String}
"""

DROP = "DROP DICTIONARY IF EXISTS {dictionary:Identifier}"


def qualified(client: ClickHouseClient, names: SquashNames) -> str:
    """The dictionary's name as `dictGet` takes it, database included (mutations run without a database)."""
    return f"{client.database}.{names.dictionary}"


def load_dictionary(client: ClickHouseClient, names: SquashNames) -> tuple[int, int]:
    """Create and load this host's dictionary; returns (elements loaded, snapshot rows)."""
    client.command(
        CREATE_DICTIONARY.format(
            dictionary=quote_identifier(names.dictionary),
            database=quote_string(client.database),
            table=quote_string(names.snapshot),
        )
    )
    client.command(RELOAD.format(dictionary=quote_identifier(names.dictionary)))
    rows = client.query_rows(ELEMENT_COUNT, {"name": names.dictionary})
    if not rows:
        raise ClickHouseNotRetryableError(f"dictionary {names.dictionary} is missing from system.dictionaries")
    if rows[0]["last_exception"]:
        raise ClickHouseNotRetryableError(f"dictionary {names.dictionary} failed to load: {rows[0]['last_exception']}")
    return int(rows[0]["element_count"]), summary(client, names)[0]


def create_dictionaries(cluster: ClickHouseCluster, hosts: Sequence[Host], names: SquashNames) -> int:
    """Create and load the dictionary on each of `hosts`; fail naming each host whose dictionary does not
    hold exactly its snapshot's rows. Returns the elements per host."""
    loaded = cluster.map_hosts(hosts, lambda client: load_dictionary(client, names), "Loading the overrides dictionary")
    wrong = {host: counts for host, counts in loaded.items() if counts[0] != counts[1]}
    if wrong:
        listed = "; ".join(
            f"{host}: {got:,} elements for {rows:,} snapshot rows" for host, (got, rows) in sorted(wrong.items())
        )
        raise ClickHouseNotRetryableError(f"The overrides dictionary did not load the whole snapshot: {listed}")
    return next(iter(loaded.values()))[0]


def drop_dictionary(client: ClickHouseClient, names: SquashNames) -> None:
    client.command(DROP, {"dictionary": names.dictionary})
