"""The SQL of backups, restores and their verification: one statement per constant or builder.

Names of databases and tables are bound as `{name:Identifier}` where ClickHouse allows it (the table list
of BACKUP and RESTORE takes quoted identifiers only). The backup's URL and credentials are bound as
`{url:String}`, which BACKUP and RESTORE accept: ClickHouse substitutes them itself, and shows the secret
as `[HIDDEN]` wherever it writes the statement down (`system.query_log`, `system.processes`, `system.backups`).
The first line of every statement names only the action, because errors and logs quote first lines.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from dags.common import quote_identifier

# Which of the wanted tables exist in the database, and how big they are.
EXISTING_TABLES = """
SELECT name, total_rows, total_bytes
FROM system.tables
WHERE database = {database:String} AND has({tables:Array(String)}, name) AND NOT is_temporary
ORDER BY name
"""

# A table's row count and a checksum of its contents (order-independent), to compare a restore with.
TABLE_FINGERPRINT = """
SELECT count() AS rows, sum(cityHash64(*)) AS checksum
FROM {database:Identifier}.{table:Identifier}
"""

# The state of a backup or restore started with ASYNC; the secret in `name` is shown as [HIDDEN].
OPERATION_STATUS = """
SELECT toString(status) AS status, error, num_files, total_size, uncompressed_size, num_entries,
       files_read, bytes_read, start_time, end_time
FROM system.backups
WHERE id = {id:String}
"""

# The dictionaries whose source reads one of the tables (their cache must be reloaded after a swap).
DEPENDENT_DICTIONARIES = """
SELECT DISTINCT dependent.1 AS dictionary_database, dependent.2 AS dictionary
FROM system.tables
ARRAY JOIN arrayZip(loading_dependent_database, loading_dependent_table) AS dependent
WHERE database = {database:String} AND has({tables:Array(String)}, name)
  AND dependent IN (SELECT database, name FROM system.dictionaries)
ORDER BY dictionary_database, dictionary
"""

CREATE_DATABASE = "CREATE DATABASE IF NOT EXISTS {database:Identifier}"
DROP_DATABASE = "DROP DATABASE IF EXISTS {database:Identifier} SYNC"
TABLE_EXISTS = "EXISTS TABLE {database:Identifier}.{table:Identifier}"


def _on_cluster(cluster: str | None) -> str:
    return f" ON CLUSTER {quote_identifier(cluster)}" if cluster else ""


def exchange_statement(cluster: str | None = None) -> str:
    """`EXCHANGE TABLES db.staged AND db.table`: both names swapped at once (its own inverse)."""
    return (
        "EXCHANGE TABLES {database:Identifier}.{staged:Identifier} AND {database:Identifier}.{table:Identifier}"
        + _on_cluster(cluster)
    )


def exchange_by_renames_statement(cluster: str | None = None) -> str:
    """Three renames in one statement, for databases without `EXCHANGE` (`Ordinary`): also its own inverse."""
    return (
        "RENAME TABLE {database:Identifier}.{table:Identifier} TO {database:Identifier}.{aside:Identifier}, "
        "{database:Identifier}.{staged:Identifier} TO {database:Identifier}.{table:Identifier}, "
        "{database:Identifier}.{aside:Identifier} TO {database:Identifier}.{staged:Identifier}"
        f"{_on_cluster(cluster)}\nSETTINGS check_table_dependencies = 0"
    )


DATABASE_ENGINE = "SELECT engine FROM system.databases WHERE name = {database:String}"

# Database engines whose tables can be swapped with EXCHANGE TABLES (chDB's `default` is an Overlay database).
EXCHANGING_ENGINES = frozenset({"Atomic", "Replicated", "Overlay"})


def rename_statement(cluster: str | None = None) -> str:
    """`RENAME TABLE db.source TO db.target`, allowed while dictionaries or views read `source`."""
    return (
        "RENAME TABLE {database:Identifier}.{source:Identifier} TO {database:Identifier}.{target:Identifier}"
        f"{_on_cluster(cluster)}\nSETTINGS check_table_dependencies = 0"
    )


def drop_table_statement(cluster: str | None = None) -> str:
    return f"DROP TABLE IF EXISTS {{database:Identifier}}.{{table:Identifier}}{_on_cluster(cluster)} SYNC"


def reload_dictionary_statement(cluster: str | None = None) -> str:
    return f"SYSTEM RELOAD DICTIONARY{_on_cluster(cluster)} {{database:Identifier}}.{{dictionary:Identifier}}"


def backup_statement(
    database: str,
    tables: Sequence[str],
    engine: str,
    base_engine: str | None = None,
    cluster: str | None = None,
) -> str:
    """`BACKUP TABLE db.a, TABLE db.b ... TO <engine> [SETTINGS base_backup = <engine>] ASYNC`.

    `engine` is the clause from `BackupStorage.engine`; its parameters are bound separately.
    """
    listed = ",\n    ".join(f"TABLE {quote_identifier(database)}.{quote_identifier(table)}" for table in tables)
    settings = f"\nSETTINGS base_backup = {base_engine}" if base_engine else ""
    return f"BACKUP{_on_cluster(cluster)}\n    {listed}\nTO {engine}{settings}\nASYNC"


def restore_statement(
    source_database: str,
    tables: Sequence[str],
    target_database: str,
    engine: str,
    cluster: str | None = None,
    names: Mapping[str, str] | None = None,
) -> str:
    """`RESTORE TABLE src.a AS target.a, ... FROM <engine> ASYNC`: tables restored under a new database,
    each under its name in `names` when given (`{"events": "events__restore_..."}`)."""
    source, target = quote_identifier(source_database), quote_identifier(target_database)
    names = names or {}
    listed = ",\n    ".join(
        f"TABLE {source}.{quote_identifier(table)} AS {target}.{quote_identifier(names.get(table, table))}"
        for table in tables
    )
    return f"RESTORE{_on_cluster(cluster)}\n    {listed}\nFROM {engine}\nASYNC"
