"""`bin/sql`: run SQL on the data the pipelines use, at any time, without breaking a run.

On the embedded engine only one process may have the data open: a run holds it for its whole length, and a
second process that opens it with chDB directly fails that run (`Error initializing EmbeddedServer`). This
command takes the same lock the runs take, so it waits for a running run (saying so) and a run that starts
meanwhile waits for it; on a server (`CLICKHOUSE_URL`) it simply connects.

    bin/sql "SELECT toDate(timestamp) AS day, count() FROM events GROUP BY day ORDER BY day"
    echo "SELECT count() FROM events" | bin/sql
"""

from __future__ import annotations

import argparse
import logging
import sys

from dags.common import ClickHouseError, clickhouse_resource, load_settings, redact_url

# Statements that answer with rows; anything else (INSERT, ALTER, CREATE, ...) is run as a command.
ANSWERS_WITH_ROWS = ("SELECT", "WITH", "SHOW", "DESCRIBE", "DESC", "EXISTS", "EXPLAIN", "(")


def answers_with_rows(sql: str) -> bool:
    words = sql.lstrip().split(None, 1)
    return bool(words) and words[0].upper().startswith(ANSWERS_WITH_ROWS)


def run(sql: str) -> str:
    """Run one statement and return what to print: its rows as a table, or what the command answered."""
    with clickhouse_resource().process_config_and_initialize_cm() as clickhouse:
        with clickhouse.get_client() as client:
            if not answers_with_rows(sql):
                answer = client.command(sql)
                return "" if answer is None else str(answer)
            table = client.query_arrow(sql)
    if table.num_columns == 0:
        return ""
    return table.to_pandas().to_string(index=False, max_rows=10_000)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sql", nargs="?", help="one statement; read from standard input when left out")
    args = parser.parse_args(argv)
    sql = args.sql if args.sql is not None else sys.stdin.read()
    if not sql.strip():
        parser.error("give one SQL statement (an argument, or on standard input)")
    # The lock's "Waiting for the embedded ClickHouse ... in use elsewhere" goes to the terminal.
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    print(f"ClickHouse: {redact_url(load_settings().effective_clickhouse_url)}", file=sys.stderr)
    try:
        output = run(sql)
    except ClickHouseError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if output:
        print(output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
