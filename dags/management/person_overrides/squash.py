"""The squash's mutations: `events.person_id` rewritten from the dictionary, one monthly partition at a time,
then the squashed overrides deleted, each a marked mutation (`dags.management.mutations`) on every copy.

Markers are made of the snapshot's name (the root run's) and the partition: a re-execution of a killed run
finds its mutations and waits for them. A fresh run first waits for any unfinished squash of an earlier run
(marker prefix `person_overrides_squash:`), so it plans only what is still to change and never mutates the
same rows twice.
"""

import time
from collections.abc import Callable, Sequence

from dags.common import ClickHouseClient, ClickHouseCluster, ClickHouseError, Host
from dags.management.deletion.events import SHARDED_EVENTS
from dags.management.mutations import MarkedMutation, run_on_every_copy
from dags.management.person_overrides.snapshot import OVERRIDES_TABLE, SquashNames

SQUASH_MARKER_PREFIX = "person_overrides_squash:"
DELETE_MARKER_PREFIX = "person_overrides_delete:"
TIMEOUT_ADVICE = "Raise PERSON_OVERRIDES_MUTATION_TIMEOUT_SECONDS for larger partitions."
# dictGet reads a dictionary, which a server may call nondeterministic in a mutation.
MUTATION_SETTINGS = {"allow_nondeterministic_mutations": 1}
POLL_SECONDS = 0.5

UPDATE_PERSON_ID = """
ALTER TABLE {table}
UPDATE person_id = dictGet({{dictionary:String}}, 'person_id', (team_id, distinct_id))
IN PARTITION ID {{partition:String}}
WHERE dictHas({{dictionary:String}}, (team_id, distinct_id)) AND {{marker:String}} != ''
"""

# Exactly the squashed overrides: a version written meanwhile (or after the snapshot's time) is newer, and stays.
DELETE_SQUASHED_OVERRIDES = """
ALTER TABLE {table}
DELETE WHERE dictHas({{dictionary:String}}, (team_id, distinct_id))
  AND version <= dictGet({{dictionary:String}}, 'version', (team_id, distinct_id))
  AND {{marker:String}} != ''
"""

UNFINISHED_SQUASHES = """
SELECT mutation_id, parts_to_do, latest_fail_reason
FROM system.mutations
WHERE database = currentDatabase() AND table = {table:String} AND NOT is_done
  AND position(command, {prefix:String}) > 0
ORDER BY create_time
"""


def squash_marker(names: SquashNames, partition: str) -> str:
    return f"{SQUASH_MARKER_PREFIX}{names.snapshot}:{partition}"


def delete_marker(names: SquashNames) -> str:
    return f"{DELETE_MARKER_PREFIX}{names.snapshot}"


def events_table(cluster: ClickHouseCluster) -> str:
    """The table a mutation of `events` goes to: each host's `sharded_events` on a cluster."""
    return SHARDED_EVENTS if cluster.is_cluster else "events"


def marked(statement: str, database: str, names: SquashNames, marker: str, **values: str) -> MarkedMutation:
    dictionary = f"{database}.{names.dictionary}"
    parameters = {"dictionary": dictionary, "marker": marker, **values}
    return MarkedMutation(statement, parameters, marker, MUTATION_SETTINGS)


def events_hosts(cluster: ClickHouseCluster) -> list[Host]:
    """Where a mutation of `events` reaches every copy of its rows."""
    return cluster.hosts_with_own_copy(events_table(cluster))


def overrides_hosts(cluster: ClickHouseCluster) -> list[Host]:
    """Where a mutation of the overrides reaches every copy (every host on a cluster, unless replicated)."""
    return cluster.hosts_with_own_copy(OVERRIDES_TABLE)


def lookup_hosts(cluster: ClickHouseCluster) -> list[Host]:
    """The hosts that run a squash mutation, and so need the snapshot and its dictionary."""
    return sorted(set(events_hosts(cluster)) | set(overrides_hosts(cluster)))


def database_of(cluster: ClickHouseCluster, hosts: Sequence[Host]) -> str:
    """The database the dictionaries live in (the URL's, the same on each host)."""
    with cluster.client(hosts[0]) as client:
        return client.database


def squash_partitions(
    cluster: ClickHouseCluster,
    hosts: Sequence[Host],
    names: SquashNames,
    partitions: Sequence[str],
    timeout_seconds: float,
    log: Callable[[str], None],
) -> None:
    """Rewrite `person_id` in each of `partitions`, one mutation at a time on every copy of `events`."""
    table = events_table(cluster)
    database = database_of(cluster, hosts)
    for number, partition in enumerate(partitions, start=1):
        log(f"squash {number}/{len(partitions)}: partition {partition} of {table} on {len(hosts)} host(s)")
        mutation = marked(UPDATE_PERSON_ID, database, names, squash_marker(names, partition), partition=partition)
        run_on_every_copy(cluster, hosts, table, mutation, timeout_seconds, log, TIMEOUT_ADVICE)


def delete_squashed_overrides(
    cluster: ClickHouseCluster,
    hosts: Sequence[Host],
    names: SquashNames,
    timeout_seconds: float,
    log: Callable[[str], None],
) -> None:
    """Delete the overrides the snapshot squashed, on every host holding overrides."""
    database = database_of(cluster, hosts)
    mutation = marked(DELETE_SQUASHED_OVERRIDES, database, names, delete_marker(names))
    log(f"deleting the squashed overrides from {OVERRIDES_TABLE} on {len(hosts)} host(s)")
    run_on_every_copy(cluster, hosts, OVERRIDES_TABLE, mutation, timeout_seconds, log, TIMEOUT_ADVICE)


def unfinished(client: ClickHouseClient, table: str, prefix: str) -> list[dict]:
    return client.query_rows(UNFINISHED_SQUASHES, {"table": table, "prefix": prefix})


def wait_for_unfinished(
    client: ClickHouseClient, table: str, prefix: str, timeout_seconds: float, log: Callable[[str], None]
) -> int:
    """Wait until no mutation of `table` whose marker starts with `prefix` is unfinished on this host; returns
    how many there were."""
    deadline = time.monotonic() + timeout_seconds
    first = unfinished(client, table, prefix)
    found = first
    last_report = ""
    while found:
        failed = [row for row in found if row["latest_fail_reason"]]
        if failed:
            raise ClickHouseError(f"mutation {failed[0]['mutation_id']} failed: {failed[0]['latest_fail_reason']}")
        report = ", ".join(f"{row['mutation_id']}: {row['parts_to_do']} part(s) to do" for row in found)
        if report != last_report:
            log(f"waiting for an earlier squash's mutations of {table}: {report}")
            last_report = report
        if time.monotonic() > deadline:
            raise ClickHouseError(
                f"an earlier squash's mutations did not finish within {timeout_seconds:.0f}s ({report}). "
                f"{TIMEOUT_ADVICE}"
            )
        time.sleep(POLL_SECONDS)
        found = unfinished(client, table, prefix)
    return len(first)


def wait_for_earlier_squashes(
    cluster: ClickHouseCluster, hosts: Sequence[Host], prefix: str, timeout_seconds: float, log: Callable[[str], None]
) -> int:
    """Wait on each of `hosts` for the unfinished squashes of `events` (marker starting with `prefix`)."""
    table = events_table(cluster)
    waited = cluster.map_hosts(
        hosts, lambda client: wait_for_unfinished(client, table, prefix, timeout_seconds, log), "Waiting for squashes"
    )
    return sum(waited.values())
