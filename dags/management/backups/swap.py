"""Putting restored tables in place of the live ones: every table or none.

Each table is first restored next to the live one, in the same database, under a staging name
(`events__restore_<time>`), so that the swap never moves a table between databases: the embedded engine's
`default` database (`Overlay`) refuses `EXCHANGE` and `RENAME` across databases, but exchanges tables
within itself, as an `Atomic` database does. A live table is swapped with `EXCHANGE TABLES` (atomic, and
allowed while dictionaries and views read the table), or with three renames in one statement in a database
without `EXCHANGE` (`Ordinary`); a table that is missing is renamed into place. If one
swap fails, every swap already made is undone in reverse order, so the live tables are as they were.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from dags.common import ClickHouseClient, ClickHouseError
from dags.management.backups.sql import (
    DATABASE_ENGINE,
    DEPENDENT_DICTIONARIES,
    EXCHANGING_ENGINES,
    drop_table_statement,
    exchange_by_renames_statement,
    exchange_statement,
    reload_dictionary_statement,
    rename_statement,
)

STAGING_INFIX = "__restore_"


class SwapError(Exception):
    """A swap failed; the message says which table, and whether every live table was put back."""

    def __init__(self, message: str, kept: Sequence[str] = ()):
        super().__init__(message)
        self.kept = list(kept)  # staging tables that hold live contents and must not be dropped


@dataclass(frozen=True)
class Swap:
    """Table `table` of `database` and its restored copy `staged` beside it; `replaces`: it is live."""

    database: str
    table: str
    staged: str
    replaces: bool

    @property
    def name(self) -> str:
        return f"{self.database}.{self.table}"


def staged_name(table: str, stamp: str) -> str:
    return f"{table}{STAGING_INFIX}{stamp}"


def _swap(client: ClickHouseClient, swap: Swap, cluster: str | None, back: bool = False) -> None:
    names = {"database": swap.database}
    if swap.replaces and client.command(DATABASE_ENGINE, names) in EXCHANGING_ENGINES:  # its own inverse
        client.command(exchange_statement(cluster), {**names, "staged": swap.staged, "table": swap.table})
    elif swap.replaces:  # so are the three renames
        aside = f"{swap.staged}_aside"
        client.command(
            exchange_by_renames_statement(cluster),
            {**names, "staged": swap.staged, "table": swap.table, "aside": aside},
        )
    elif back:
        client.command(rename_statement(cluster), {**names, "source": swap.table, "target": swap.staged})
    else:
        client.command(rename_statement(cluster), {**names, "source": swap.staged, "target": swap.table})


def swap_in(
    client: ClickHouseClient, swaps: Sequence[Swap], log: Callable[[str], None], cluster: str | None = None
) -> None:
    """Swap every staged copy in, or, when one swap fails, swap back the ones already made and raise."""
    done: list[Swap] = []
    for swap in swaps:
        try:
            _swap(client, swap, cluster)
        except ClickHouseError as error:
            not_back = _swap_back(client, done, log, cluster)
            raise _failure(swap, done, not_back, error) from None
        done.append(swap)
        log(f"{swap.name} now holds the restored contents")


def _swap_back(
    client: ClickHouseClient, done: Sequence[Swap], log: Callable[[str], None], cluster: str | None
) -> list[Swap]:
    """Undo `done` newest first; the swaps that could not be undone."""
    not_back = []
    for swap in reversed(done):
        try:
            _swap(client, swap, cluster, back=True)
            log(f"{swap.name} swapped back to what it held before the restore")
        except ClickHouseError:
            not_back.append(swap)
    return not_back


def _failure(failed: Swap, done: Sequence[Swap], not_back: Sequence[Swap], error: ClickHouseError) -> SwapError:
    cause = f"Swapping the restored copy of {failed.name} in failed ({error})"
    if not not_back:
        undone = f"; the {len(done)} tables already swapped were swapped back" if done else ""
        return SwapError(f"{cause}{undone}: no live table was changed")
    where = ", ".join(
        f"{swap.name} (its previous contents are in {swap.database}.{swap.staged})"
        if swap.replaces
        else f"{swap.name} (was missing before: drop it to go back)"
        for swap in not_back
    )
    return SwapError(f"{cause}; these could not be swapped back: {where}", [s.staged for s in not_back if s.replaces])


def drop_staged(
    client: ClickHouseClient, swaps: Sequence[Swap], cluster: str | None = None, keep: Sequence[str] = ()
) -> None:
    """Drop the staging tables (restored copies, or live contents swapped out), except those in `keep`."""
    for swap in swaps:
        if swap.staged not in keep:
            client.command(drop_table_statement(cluster), {"database": swap.database, "table": swap.staged})


def reload_dependent_dictionaries(
    client: ClickHouseClient, database: str, tables: Sequence[str], log: Callable[[str], None], cluster: str | None
) -> list[str]:
    """Reload the dictionaries that read `tables`: they cache what the table held before the swap."""
    reloaded = []
    for row in client.query_rows(DEPENDENT_DICTIONARIES, {"database": database, "tables": list(tables)}):
        database, dictionary = row["dictionary_database"], row["dictionary"]
        client.command(reload_dictionary_statement(cluster), {"database": database, "dictionary": dictionary})
        reloaded.append(f"{database}.{dictionary}")
        log(f"Reloaded dictionary {reloaded[-1]}, which reads the restored tables")
    return reloaded
