"""A Postgres table, exactly once per interval: one transaction deletes the interval's rows, then loads the
new ones with `COPY` fed from the Arrow batches ClickHouse streams.

A rerun replaces the interval; a run killed at any moment (the connection lost, the backend terminated) rolls
back, so the previous rows stay and readers never see half an interval. The password never comes from the
URL: from the variable named in the export's `credentials_env` (`PGPASSWORD`), or libpq's own
`PGPASSWORD` / `.pgpass`.
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlparse, urlunparse

from dags.exports.datasets import EVERYTHING, ExportDataset, ExportSelection, ExportWindow
from dags.exports.destinations.base import DestinationAccessError
from dags.exports.destinations.postgres_values import ValueRepairs, repaired_batches, repairing_query
from dags.exports.sources import require_source

if TYPE_CHECKING:
    import psycopg
    import pyarrow as pa

    from dags.exports.sources import ClientFactory

# Columns whose Postgres type is not the one their Arrow type suggests: UUIDs travel as canonical strings.
UUID_COLUMNS = frozenset({"uuid", "person_id"})
JSON_COLUMNS = frozenset({"properties"})
CONNECT_TIMEOUT_SECONDS = 15


@dataclass(frozen=True)
class PostgresUrl:
    """A `postgresql://user@host:5432/db?table=schema.name` destination, parsed: libpq's connection URL
    (any libpq option but a password) and the table."""

    conninfo: str
    schema: str | None
    table: str

    @property
    def display(self) -> str:
        """The URL as logs, metadata and the UI show it (it never holds a password)."""
        return f"{self.conninfo}{'&' if '?' in self.conninfo else '?'}table={self.qualified_name}"

    @property
    def qualified_name(self) -> str:
        return f"{self.schema}.{self.table}" if self.schema else self.table


def parse_postgres_url(url: str) -> PostgresUrl:
    """Parse a Postgres destination; a bad one raises a ValueError that says why."""
    parsed = urlparse(url.strip())
    if parsed.password is not None:
        raise ValueError(
            "a Postgres destination must not carry a password: name the variable holding it in credentials_env "
            "(PGPASSWORD: YOUR_VARIABLE), or use a .pgpass file"
        )
    options = dict(parse_qsl(parsed.query, keep_blank_values=True))
    if "password" in options:
        raise ValueError("a Postgres destination must not carry a password (password=...): use credentials_env")
    table = options.pop("table", "")
    if not parsed.hostname or not parsed.path.strip("/"):
        raise ValueError(f"{url!r} names no host or database: use postgresql://user@host:5432/db?table=name")
    parts = table.split(".")
    if not table or len(parts) > 2 or not all(part.strip() for part in parts):
        raise ValueError(f"{url!r} names no table: add ?table=name (or ?table=schema.name)")
    conninfo = urlunparse(parsed._replace(query=urlencode(options), fragment=""))
    return PostgresUrl(conninfo, parts[0] if len(parts) == 2 else None, parts[-1])


def postgres_type(name: str, arrow_type: pa.DataType) -> str:
    """The column type a Postgres user expects for an exported column."""
    import pyarrow as pa

    if name in UUID_COLUMNS:
        return "uuid"
    if name in JSON_COLUMNS:
        return "jsonb"
    if pa.types.is_timestamp(arrow_type):
        return "timestamptz"
    if pa.types.is_boolean(arrow_type):
        return "boolean"
    if pa.types.is_integer(arrow_type):
        return "bigint"
    if pa.types.is_floating(arrow_type):
        return "double precision"
    if pa.types.is_date(arrow_type):
        return "date"
    return "text"


def with_team_column(selection: ExportSelection) -> ExportSelection:
    """The selection a Postgres table is loaded with: its columns and `team_id` (every dataset has it), so
    that an interval's delete can always be scoped to the export's team."""
    if not selection.columns or "team_id" in selection.columns:
        return selection
    return replace(selection, columns=(*selection.columns, "team_id"))


@dataclass
class TableExport:
    """What one interval's load into Postgres wrote."""

    window: ExportWindow
    url: str
    rows: int
    bytes: int  # COPY data sent
    seconds: float
    replaced_rows: int
    cleaned_up: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    repairs: ValueRepairs = field(default_factory=ValueRepairs)  # values changed so that Postgres takes them


class PostgresTable:
    """One Postgres table for one run."""

    def __init__(self, url: str, password: str | None, password_variable: str):
        self.target = parse_postgres_url(url)
        self.url = self.target.display
        self._password = password
        self._password_variable = password_variable

    def _identifier(self) -> Any:
        from psycopg import sql

        if self.target.schema:
            return sql.Identifier(self.target.schema, self.target.table)
        return sql.Identifier(self.target.table)

    def connect(self) -> psycopg.Connection:
        import psycopg

        try:
            return psycopg.connect(
                self.target.conninfo,
                connect_timeout=CONNECT_TIMEOUT_SECONDS,
                application_name="dagster-batch-export",
                **({"password": self._password} if self._password is not None else {}),
            )
        except psycopg.OperationalError as error:
            raise DestinationAccessError(
                f"Cannot connect to {self.url}: {str(error).strip().splitlines()[0]}. Check the host, port, user "
                f"and database in the destination, and the password in {self._password_variable} (or .pgpass)."
            ) from None

    def check_access(self) -> str:
        """Connect, and check that the table can be created (or, when it exists, deleted from and loaded); what
        was checked comes back as a phrase (`INSERT and DELETE on public.events`). Writes nothing."""
        with self.connect() as connection:
            schema = self.target.schema or connection.execute("SELECT current_schema()").fetchone()[0]
            qualified = f"{schema}.{self.target.table}"
            exists = connection.execute("SELECT to_regclass(%s) IS NOT NULL", (qualified,)).fetchone()[0]
            if exists:
                insert, delete = connection.execute(
                    "SELECT has_table_privilege(to_regclass(%s), 'INSERT'), "
                    "has_table_privilege(to_regclass(%s), 'DELETE')",
                    (qualified, qualified),
                ).fetchone()
                missing = [name for name, allowed in (("INSERT", insert), ("DELETE", delete)) if not allowed]
                what = f"INSERT and DELETE on {qualified}"
                lacking = f"{' and '.join(missing)} on {qualified}"
                if not missing and not self._may_add_team_column(connection, qualified):
                    raise DestinationAccessError(
                        f"{qualified} has no team_id column, which every interval's delete needs, and the Postgres "
                        f"user of {self.url} does not own it to add it: as its owner, run ALTER TABLE {qualified} "
                        "ADD COLUMN team_id bigint"
                    )
            else:
                allowed = connection.execute("SELECT has_schema_privilege(%s, 'CREATE')", (schema,)).fetchone()[0]
                what = lacking = f"CREATE in schema {schema} (the table {self.target.table} does not exist yet)"
                missing = [] if allowed else ["CREATE"]
            if missing:
                raise DestinationAccessError(
                    f"The Postgres user of {self.url} lacks {lacking}: grant it, or use another user."
                )
            return what

    @staticmethod
    def _may_add_team_column(connection: psycopg.Connection, qualified: str) -> bool:
        """The table has `team_id`, or the user owns it and can add it."""
        return connection.execute(
            "SELECT EXISTS (SELECT FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attname = 'team_id' "
            "AND NOT attisdropped) OR pg_has_role((SELECT relowner FROM pg_class WHERE oid = to_regclass(%s)), "
            "'USAGE')",
            (qualified, qualified),
        ).fetchone()[0]

    def count_rows(
        self,
        time_column: str,
        window: ExportWindow,
        team_id: int | None = None,
        person_id: str | None = None,
        holding_keys: Sequence[str] = (),
        events: Sequence[str] = (),
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> int:
        """The table's rows of the interval (only one team's, only one person's, only those of `events` in
        `[since, until)` whose `properties` hold one of `holding_keys` at the top level, when given); 0 when the
        table does not exist. Data deletion counts what is left of a request with it."""
        from psycopg import sql

        condition = sql.SQL("{time} >= %(start)s AND {time} < %(end)s").format(time=sql.Identifier(time_column))
        if team_id is not None:
            condition += sql.SQL(" AND team_id = %(team)s::bigint")
        if person_id is not None:
            condition += sql.SQL(" AND person_id = %(person)s::uuid")
        if holding_keys:
            # `?|` also matches a string in an array: only an object's keys count.
            condition += sql.SQL(
                " AND jsonb_typeof(properties::jsonb) = 'object' AND properties::jsonb ?| %(keys)s::text[]"
            )
        if events:
            condition += sql.SQL(" AND event = ANY(%(events)s::text[])")
        if since is not None:
            condition += sql.SQL(" AND {time} >= %(since)s").format(time=sql.Identifier(time_column))
        if until is not None:
            condition += sql.SQL(" AND {time} < %(until)s").format(time=sql.Identifier(time_column))
        with self.connect() as connection:
            schema = self.target.schema or connection.execute("SELECT current_schema()").fetchone()[0]
            qualified = f"{schema}.{self.target.table}"
            if not connection.execute("SELECT to_regclass(%s) IS NOT NULL", (qualified,)).fetchone()[0]:
                return 0
            statement = sql.SQL("SELECT count(*) FROM {} WHERE ").format(self._identifier()) + condition
            parameters = {
                "start": window.start,
                "end": window.end,
                "team": team_id,
                "person": person_id,
                "keys": list(holding_keys),
                "events": list(events),
                "since": since,
                "until": until,
            }
            return int(connection.execute(statement, parameters).fetchone()[0])

    def _create_table(self, cursor: psycopg.Cursor, schema: pa.Schema) -> None:
        from psycopg import sql

        exists = cursor.execute("SELECT to_regclass(%s) IS NOT NULL", (self._identifier().as_string(cursor),))
        if exists.fetchone()[0]:  # CREATE TABLE IF NOT EXISTS needs CREATE on the schema even then
            return
        columns = sql.SQL(", ").join(
            sql.SQL("{} {}").format(sql.Identifier(column.name), sql.SQL(postgres_type(column.name, column.type)))
            for column in schema
        )
        cursor.execute(sql.SQL("CREATE TABLE IF NOT EXISTS {} ({})").format(self._identifier(), columns))

    def _add_team_column(self, cursor: psycopg.Cursor) -> list[str]:
        """Give a table made without `team_id` (by a user, or by an export whose columns omitted it) the
        column every interval's delete filters on; its existing rows keep an unknown (NULL) team."""
        from psycopg import sql

        table = self._identifier().as_string(cursor)
        has_column = cursor.execute(
            "SELECT count(*) FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attname = 'team_id' "
            "AND NOT attisdropped",
            (table,),
        ).fetchone()[0]
        if has_column:  # ALTER TABLE would lock out readers for the whole load even when it changes nothing
            return []
        cursor.execute(sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS team_id bigint").format(self._identifier()))
        kept = cursor.execute(sql.SQL("SELECT count(*) FROM {}").format(self._identifier())).fetchone()[0]
        if not kept:
            return []
        return [
            f"{self.target.qualified_name} had no team_id column: added; its {kept:,} earlier row(s) have team_id "
            "NULL and no export's interval deletes them (if they are this export's, claim them with "
            "UPDATE ... SET team_id = <team> WHERE team_id IS NULL)"
        ]

    def _delete_interval(
        self, cursor: psycopg.Cursor, dataset: ExportDataset, window: ExportWindow, selection: ExportSelection
    ) -> int:
        """Delete the interval's rows of the export's teams (every team's for an export of all teams), whatever
        columns it exports: another export's rows in the same table, or rows of unknown team, stay."""
        from psycopg import sql

        condition = sql.SQL(
            "{time} >= %(start)s AND {time} < %(end)s"
            " AND (cardinality(%(teams)s::bigint[]) = 0 OR team_id = ANY(%(teams)s::bigint[]))"
        ).format(time=sql.Identifier(dataset.time_column))
        cursor.execute(
            sql.SQL("DELETE FROM {} WHERE ").format(self._identifier()) + condition,
            {"start": window.start, "end": window.end, "teams": list(selection.team_ids)},
        )
        return cursor.rowcount

    def export_window(
        self,
        open_client: ClientFactory,
        dataset: ExportDataset,
        window: ExportWindow,
        batch_rows: int,
        selection: ExportSelection = EVERYTHING,
    ) -> TableExport:
        """Replace the interval's rows in the table with the rows ClickHouse streams, in one transaction."""
        import psycopg

        try:
            return self._export_window(open_client, dataset, window, batch_rows, selection)
        except psycopg.OperationalError:
            raise  # a lost connection or a terminated backend: rolled back, and worth a retry
        except psycopg.Error as error:
            # Privileges, a table of another shape, a value Postgres rejects: retrying will not help.
            raise DestinationAccessError(
                f"Postgres refused to load {window.label} into {self.url}: {str(error).strip().splitlines()[0]}"
            ) from None

    def _export_window(
        self,
        open_client: ClientFactory,
        dataset: ExportDataset,
        window: ExportWindow,
        batch_rows: int,
        selection: ExportSelection,
    ) -> TableExport:
        import pyarrow.csv
        from psycopg import sql

        started = time.monotonic()
        selection = with_team_column(selection)
        query, parameters = dataset.query(selection), dataset.parameters(window, selection)
        rows = sent = 0
        repairs = ValueRepairs()
        with open_client() as client:
            require_source(client, dataset, window.day)
            schema = client.query_arrow(f"SELECT * FROM ({query}) LIMIT 0", parameters).schema
            columns = sql.SQL(", ").join(sql.Identifier(name) for name in schema.names)
            copy_statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv)").format(self._identifier(), columns)
            options = pyarrow.csv.WriteOptions(include_header=False)
            repairing = repairing_query(query, schema, JSON_COLUMNS, skip=UUID_COLUMNS)
            with (
                client.query_arrow_stream(repairing, parameters, settings={"max_block_size": batch_rows}) as stream,
                self.connect() as connection,
                connection.transaction(),
                connection.cursor() as cursor,
            ):
                self._create_table(cursor, schema)
                warnings = self._add_team_column(cursor)
                replaced = self._delete_interval(cursor, dataset, window, selection)
                batches = repaired_batches(stream, schema.names, JSON_COLUMNS, repairs)
                with cursor.copy(copy_statement) as copy:
                    for chunk in _csv_chunks(batches, options):
                        rows += chunk[0]
                        sent += len(chunk[1])
                        copy.write(chunk[1])
        seconds = time.monotonic() - started
        return TableExport(window, self.url, rows, sent, seconds, replaced, warnings=warnings, repairs=repairs)


def _csv_chunks(batches: Iterator[pa.RecordBatch], options: Any) -> Iterator[tuple[int, bytes]]:
    """Each record batch as CSV text for `COPY`: Arrow's writer quotes an empty string and leaves a null
    bare, which is how Postgres' CSV format tells them apart."""
    import pyarrow.csv

    for batch in batches:
        if batch.num_rows == 0:
            continue
        buffer = io.BytesIO()
        pyarrow.csv.write_csv(batch, buffer, options)
        yield batch.num_rows, buffer.getvalue()
