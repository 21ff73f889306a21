"""Following the ClickHouse mutations management jobs enqueue (`ALTER TABLE ... DELETE` or `UPDATE`).

Each mutation carries a marker: a string literal in its `WHERE` (`AND {marker:String} != ''`) made from what it
does, so it is found again by text in `system.mutations`, whatever else the server rewrote. A run killed after
enqueueing finds its mutation on the next run and waits for it instead of enqueueing it a second time. On a
cluster a mutation runs on each host that holds its own copy of the table and is followed on each.
"""

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from dags.common import ClickHouseClient, ClickHouseCluster, ClickHouseError, Host, quote_identifier

MUTATION_WITH_MARKER = """
SELECT mutation_id, is_done, parts_to_do, latest_fail_reason
FROM system.mutations
WHERE database = currentDatabase() AND table = {table:String} AND position(command, {marker:String}) > 0
ORDER BY create_time DESC
LIMIT 1
"""

POLL_SECONDS = 0.5


@dataclass(frozen=True)
class MarkedMutation:
    """One mutation: its statement (`{table}` is filled in per host), its values, and its marker."""

    statement: str  # `ALTER TABLE {table} ... AND {{marker:String}} != ''`: `{table}` filled in by `format`
    parameters: Mapping[str, Any]  # bound by the server; must include "marker"
    marker: str
    settings: Mapping[str, Any] = field(default_factory=dict)  # e.g. allow_nondeterministic_mutations

    def __post_init__(self) -> None:
        if self.parameters.get("marker") != self.marker:
            raise ValueError("a mutation's parameters must bind its marker")


def find(client: ClickHouseClient, table: str, marker: str) -> dict | None:
    """The newest mutation of `table` on this host that carries `marker`, or None."""
    rows = client.query_rows(MUTATION_WITH_MARKER, {"table": table, "marker": marker})
    return rows[0] if rows else None


def enqueue_once(client: ClickHouseClient, table: str, mutation: MarkedMutation) -> bool:
    """Enqueue `mutation` on this host unless it is there already; returns whether it was enqueued now."""
    if find(client, table, mutation.marker) is not None:
        return False
    statement = mutation.statement.format(table=quote_identifier(table))
    client.command(statement, dict(mutation.parameters), settings={"mutations_sync": 0, **mutation.settings})
    return True


def wait_for(
    client: ClickHouseClient,
    table: str,
    marker: str,
    timeout_seconds: float,
    log: Callable[[str], None],
    timeout_advice: str,
) -> None:
    """Wait until the mutation with `marker` is done on this host, logging its parts to do; fail after
    `timeout_seconds`, saying `timeout_advice` (which setting to raise)."""
    deadline = time.monotonic() + timeout_seconds
    last_report = ""
    while True:
        found = find(client, table, marker)
        if found is None or found["is_done"]:  # None: the server finished and forgot it, or it was killed
            return
        if found["latest_fail_reason"]:
            raise ClickHouseError(f"mutation {found['mutation_id']} failed: {found['latest_fail_reason']}")
        report = f"mutation {found['mutation_id']}: {found['parts_to_do']} part(s) to do"
        if report != last_report:
            log(report)
            last_report = report
        if time.monotonic() > deadline:
            raise ClickHouseError(
                f"did not finish within {timeout_seconds:.0f}s ({report}); it goes on in ClickHouse "
                f"(system.mutations), and the next run waits for it. {timeout_advice}"
            )
        time.sleep(POLL_SECONDS)


def run_on_every_copy(
    cluster: ClickHouseCluster,
    hosts: Sequence[Host],
    table: str,
    mutation: MarkedMutation,
    timeout_seconds: float,
    log: Callable[[str], None],
    timeout_advice: str,
) -> None:
    """Enqueue `mutation` on each of `hosts` (at most once), then wait until it is done on each."""
    enqueued = cluster.map_hosts(hosts, lambda client: enqueue_once(client, table, mutation), f"Mutating {table}")
    for host in sorted(host for host, now in enqueued.items() if not now):
        where = f"{host}: " if cluster.is_cluster else ""
        log(f"{where}mutation {mutation.marker} was enqueued by an earlier run: waiting for it")
    cluster.map_hosts(
        hosts,
        lambda client: wait_for(client, table, mutation.marker, timeout_seconds, log, timeout_advice),
        f"Mutating {table} (mutation {mutation.marker})",
    )
