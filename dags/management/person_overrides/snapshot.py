"""The run's own snapshot of the overrides to squash: the latest version of each (team_id, distinct_id), for
the keys whose latest version was written before the run's `timestamp` and is not a deletion.

Named after the run's root run id, so a re-execution of a killed run finds and reuses it. It is built under a
staging name and renamed when complete: a kill while it is filled never leaves a half snapshot under its name.
On a cluster each host builds its own from its local overrides (every host holds all of them), and every
host's snapshot must hold the same rows (count and checksum) before anything changes.
"""

from collections.abc import Sequence
from dataclasses import dataclass

from dags.common import ClickHouseClient, ClickHouseCluster, ClickHouseNotRetryableError, Host

OVERRIDES_TABLE = "person_distinct_id_overrides"  # dags.events' contract
SNAPSHOT_PREFIX = "person_overrides_snapshot_"
DICTIONARY_PREFIX = "person_overrides_dict_"
UINT64_MAX = 2**64 - 1  # no limit: the LIMIT is always there, bound


@dataclass(frozen=True)
class SquashNames:
    """The tables of one squash run (and of its re-executions): snapshot, staging and dictionary."""

    run_id: str  # the root run id

    @property
    def key(self) -> str:
        return self.run_id.replace("-", "")

    @property
    def snapshot(self) -> str:
        return f"{SNAPSHOT_PREFIX}{self.key}"

    @property
    def staging(self) -> str:
        return f"{self.snapshot}_staging"

    @property
    def dictionary(self) -> str:
        return f"{DICTIONARY_PREFIX}{self.key}"


CREATE_STAGING = """
CREATE TABLE {staging:Identifier}
(
    team_id Int64,
    distinct_id String,
    person_id UUID,
    version Int64
)
ENGINE = MergeTree
ORDER BY (team_id, distinct_id)
"""

# The latest version of each key, when it was written before the run's time and is not a deletion. Keys whose
# latest version is younger are left for a later squash: choosing among the older versions would depend on
# whether ReplacingMergeTree has merged them away yet (on this host), so hosts could disagree. ORDER BY before
# LIMIT: every host keeps the same keys when the run squashes only `limit` of them.
FILL_STAGING = f"""
INSERT INTO {{staging:Identifier}}
SELECT team_id, distinct_id, argMax(person_id, version) AS latest_person_id, max(version) AS latest_version
FROM {OVERRIDES_TABLE}
GROUP BY team_id, distinct_id
HAVING argMax(is_deleted, version) = 0 AND argMax(_timestamp, version) < toDateTime({{before:Int64}}, 'UTC')
ORDER BY team_id, distinct_id
LIMIT {{limit:UInt64}}
"""

SNAPSHOT_SUMMARY = """
SELECT count() AS rows, sum(cityHash64(team_id, distinct_id, person_id, version)) AS checksum
FROM {snapshot:Identifier}
"""

EXISTS = "EXISTS TABLE {table:Identifier}"
DROP = "DROP TABLE IF EXISTS {table:Identifier} SYNC"
RENAME = "RENAME TABLE {staging:Identifier} TO {snapshot:Identifier}"


def build_snapshot(client: ClickHouseClient, names: SquashNames, before: int, limit: int | None) -> bool:
    """Build this host's snapshot unless it is there already; returns whether it was built now."""
    if client.command(EXISTS, {"table": names.snapshot}):
        return False
    client.command(DROP, {"table": names.staging})  # what a run killed while filling it left
    client.command(CREATE_STAGING, {"staging": names.staging})
    client.command(FILL_STAGING, {"staging": names.staging, "before": before, "limit": limit or UINT64_MAX})
    client.command(RENAME, {"staging": names.staging, "snapshot": names.snapshot})
    return True


def summary(client: ClickHouseClient, names: SquashNames) -> tuple[int, int]:
    """(rows, checksum) of this host's snapshot."""
    row = client.query_rows(SNAPSHOT_SUMMARY, {"snapshot": names.snapshot})[0]
    return int(row["rows"]), int(row["checksum"])


def same_on_every_host(summaries: dict[Host, tuple[int, int]]) -> int:
    """The snapshot's rows when every host holds the same; otherwise fail naming each host's count."""
    if len(set(summaries.values())) > 1:
        listed = "; ".join(
            f"{host}: {rows:,} rows, checksum {checksum}" for host, (rows, checksum) in sorted(summaries.items())
        )
        raise ClickHouseNotRetryableError(
            "The hosts' overrides differ, so their snapshots do (a host missed some writes of "
            f"person_distinct_id_overrides); nothing was changed: {listed}"
        )
    return next(iter(summaries.values()))[0]


def create_snapshots(
    cluster: ClickHouseCluster, hosts: Sequence[Host], names: SquashNames, before: int, limit: int | None
) -> int:
    """Build the snapshot on each of `hosts` (reusing one already there) and prove them equal; returns its rows."""
    cluster.map_hosts(hosts, lambda client: build_snapshot(client, names, before, limit), "Snapshotting overrides")
    return same_on_every_host(cluster.map_hosts(hosts, lambda client: summary(client, names), "Checking snapshots"))


def drop_snapshot(client: ClickHouseClient, names: SquashNames) -> None:
    client.command(DROP, {"table": names.snapshot})
    client.command(DROP, {"table": names.staging})
