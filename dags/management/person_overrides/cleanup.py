"""Dropping a squash run's snapshot and dictionary: at its end, after a failed step, and for a killed run
(`squash_person_overrides_cleanup`). Never while a mutation still reads the dictionary: a mutation that
outlived its run (killed, or past its timeout) goes on in ClickHouse and would fail without it."""

from collections.abc import Callable, Sequence

from dags.common import ClickHouseClient, ClickHouseCluster, Host
from dags.management.person_overrides.dictionary import drop_dictionary
from dags.management.person_overrides.snapshot import OVERRIDES_TABLE, SquashNames, drop_snapshot
from dags.management.person_overrides.squash import events_table, wait_for_unfinished

LEFT_OVER = """
SELECT name FROM system.tables
WHERE database = currentDatabase() AND name IN {names:Array(String)}
ORDER BY name
"""

USING_DICTIONARY = """
SELECT count() FROM system.mutations
WHERE database = currentDatabase() AND NOT is_done AND table IN {tables:Array(String)}
  AND position(command, {dictionary:String}) > 0
"""


def left_over(client: ClickHouseClient, names: SquashNames) -> list[str]:
    """The run's tables and dictionary on this host (a dictionary is listed in system.tables too)."""
    rows = client.query_rows(LEFT_OVER, {"names": [names.snapshot, names.staging, names.dictionary]})
    return [row["name"] for row in rows]


def mutations_using(client: ClickHouseClient, table: str, names: SquashNames) -> int:
    """Unfinished mutations on this host that read the run's dictionary."""
    return int(client.command(USING_DICTIONARY, {"tables": [table, OVERRIDES_TABLE], "dictionary": names.dictionary}))


def drop_here(client: ClickHouseClient, names: SquashNames) -> list[str]:
    """Drop the run's dictionary, then its snapshot, on this host; returns what was there."""
    found = left_over(client, names)
    drop_dictionary(client, names)
    drop_snapshot(client, names)
    return found


def drop_lookup(cluster: ClickHouseCluster, hosts: Sequence[Host], names: SquashNames) -> dict[Host, list[str]]:
    """Drop the run's dictionary and snapshot on each of `hosts`; returns what each held."""
    return cluster.map_hosts(hosts, lambda client: drop_here(client, names), "Dropping the squash's snapshot")


def drop_unless_in_use(cluster: ClickHouseCluster, names: SquashNames, log: Callable[[str], None]) -> bool:
    """After a failed step: drop on every host unless a mutation still reads the dictionary somewhere (the
    re-execution or `squash_person_overrides_cleanup` drops it then); returns whether it was dropped."""
    table = events_table(cluster)
    busy = cluster.map_all_hosts(lambda client: mutations_using(client, table, names), "Looking for squash mutations")
    if any(busy.values()):
        log(
            f"{names.snapshot} and {names.dictionary} are kept: a mutation still reads them "
            f"({sum(busy.values())} unfinished). Re-execute the run, or run squash_person_overrides_cleanup "
            "once it is done."
        )
        return False
    drop_lookup(cluster, cluster.hosts, names)
    return True


def clean_up_run(
    cluster: ClickHouseCluster, names: SquashNames, timeout_seconds: float, log: Callable[[str], None]
) -> dict[Host, list[str]]:
    """For a killed run: wait on every host for the mutations that read its dictionary, then drop it and the
    snapshot there; returns what each host held."""
    table = events_table(cluster)

    def wait(client: ClickHouseClient) -> None:
        for mutated in (table, OVERRIDES_TABLE):
            wait_for_unfinished(client, mutated, names.dictionary, timeout_seconds, log)

    cluster.map_all_hosts(wait, "Waiting for the run's mutations")
    return drop_lookup(cluster, cluster.hosts, names)
