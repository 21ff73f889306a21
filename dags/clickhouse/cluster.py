"""The one layer that knows the cluster: its hosts and shards, a statement run on each, and who failed.

Everything that has to happen on more than one host (a table created everywhere, a dictionary reloaded
everywhere, a mutation on every shard) goes through `ClickHouseCluster`; the domains never list hosts
themselves. Without `CLICKHOUSE_CLUSTER` (and on the embedded engine) the cluster is the one host the URL
names, so the same code runs everywhere.

    cluster = clickhouse.get_cluster(context)
    cluster.map_all_hosts(lambda client: client.command("SYSTEM RELOAD DICTIONARY exchange_rate_dict"))
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from dags.clickhouse.client import ClickHouseClient
from dags.clickhouse.errors import (
    ClickHouseError,
    ClickHouseNotRetryableError,
    first_line,
    is_transient,
    server_message,
)

if TYPE_CHECKING:
    from dags.clickhouse.resource import ClickHouseResource

T = TypeVar("T")

CLUSTER_HOSTS = """
SELECT shard_num, replica_num, host_address, port
FROM system.clusters
WHERE cluster = {cluster:String}
ORDER BY shard_num, replica_num
"""


TABLE_ENGINE = "SELECT engine FROM system.tables WHERE database = currentDatabase() AND name = {table:String}"


@dataclass(frozen=True, order=True)
class Host:
    """One host of the cluster: its shard, its replica number within the shard, and how to reach it.

    `port` is the native port the cluster's config gives; `None` means the URL's own port (over HTTP
    every host answers on the URL's port, as `system.clusters` only knows native ports).
    """

    shard: int
    replica: int
    address: str | None  # None: the host CLICKHOUSE_URL names
    port: int | None

    def __str__(self) -> str:
        where = self.address or "the URL's host"
        return f"{where}{f':{self.port}' if self.port else ''} (shard {self.shard}, replica {self.replica})"


class ClusterHostsError(ClickHouseError):
    """A statement failed on some hosts of the cluster, at least one for a transient reason (retry the step);
    the message names each of them and why."""

    worth_retrying = True

    def __init__(self, what: str, failures: Mapping[Host, BaseException], total: int) -> None:
        self.failures = dict(failures)
        listed = "; ".join(f"{host}: {server_message(error)}" for host, error in sorted(self.failures.items()))
        super().__init__(f"{what} failed on {len(self.failures)} of {total} hosts: {listed}")


class ClusterHostsNotRetryableError(ClusterHostsError, ClickHouseNotRetryableError):
    """Some hosts failed and retrying cannot help on any of them (a host that stayed down, a refused statement)."""

    worth_retrying = False

    def __init__(self, what: str, failures: Mapping[Host, BaseException], total: int) -> None:
        ClusterHostsError.__init__(self, what, failures, total)
        ClickHouseNotRetryableError.__init__(self, str(self))


class ClickHouseCluster:
    """The hosts of `CLICKHOUSE_CLUSTER` (or the URL's one host) and a client on any of them."""

    def __init__(self, resource: ClickHouseResource, hosts: Iterable[Host], name: str | None, context: Any) -> None:
        self.resource = resource
        self.hosts = sorted(hosts)
        self.name = name
        self.context = context
        if not self.hosts:
            raise ClickHouseNotRetryableError(
                f"Cluster {name!r} (CLICKHOUSE_CLUSTER) is not in system.clusters on {resource.display_url}"
            )

    @classmethod
    def of(cls, resource: ClickHouseResource, context: Any = None) -> ClickHouseCluster:
        """The cluster `resource` is configured with, its hosts read from `system.clusters`."""
        if resource.is_embedded or not resource.cluster:
            return cls(resource, [Host(1, 1, None, None)], None, context)
        native = resource.target.kind == "native"
        with resource.get_client(context) as client:
            rows = client.query_rows(CLUSTER_HOSTS, {"cluster": resource.cluster})
        hosts = [
            Host(row["shard_num"], row["replica_num"], row["host_address"], row["port"] if native else None)
            for row in rows
        ]
        return cls(resource, hosts, resource.cluster, context)

    @property
    def is_cluster(self) -> bool:
        """A cluster is configured: `events` is `Distributed` over `sharded_events` on every host."""
        return self.name is not None

    @property
    def shards(self) -> dict[int, list[Host]]:
        """The hosts of each shard, by shard number."""
        by_shard: dict[int, list[Host]] = {}
        for host in self.hosts:
            by_shard.setdefault(host.shard, []).append(host)
        return by_shard

    def client(self, host: Host) -> Any:
        """A client on `host` (a context manager, as `ClickHouseResource.get_client`)."""
        return self.resource.get_client(self.context, host=host.address, port=host.port)

    def map_hosts(self, hosts: Iterable[Host], fn: Callable[[ClickHouseClient], T], what: str) -> dict[Host, T]:
        """Run `fn` with a client on each of `hosts` at once; every host is tried even when one fails.

        Raises `ClusterHostsError` naming every host that failed (`ClusterHostsNotRetryableError` when none
        of the failures is transient), after the others have finished.
        """
        chosen = list(hosts)

        def on(host: Host) -> T:
            with self.client(host) as client:
                return fn(client)

        results: dict[Host, T] = {}
        failures: dict[Host, BaseException] = {}
        if not self.is_cluster:  # the URL's one host, in this thread (the embedded engine is this process's)
            return {host: on(host) for host in chosen}
        with ThreadPoolExecutor(max_workers=max(1, len(chosen))) as pool:
            futures = {host: pool.submit(on, host) for host in chosen}
            for host, future in futures.items():
                try:
                    results[host] = future.result()
                except Exception as error:
                    failures[host] = error
        if failures:
            # A host the resource already waited for (connect_retry_seconds) is not retried again by the step.
            if any(is_transient(e) and not isinstance(e, ClickHouseNotRetryableError) for e in failures.values()):
                raise ClusterHostsError(what, failures, len(chosen))
            raise ClusterHostsNotRetryableError(what, failures, len(chosen))
        return results

    def map_all_hosts(self, fn: Callable[[ClickHouseClient], T], what: str = "A statement") -> dict[Host, T]:
        """Run `fn` on every host of the cluster (tables every host has: lookups, local tables)."""
        return self.map_hosts(self.hosts, fn, what)

    def map_one_host_per_shard(self, fn: Callable[[ClickHouseClient], T], what: str = "A statement") -> dict[Host, T]:
        """Run `fn` on the first replica of each shard (what replication carries to the shard's other hosts)."""
        return self.map_hosts([hosts[0] for hosts in self.shards.values()], fn, what)

    def hosts_with_own_copy(self, table: str) -> list[Host]:
        """The hosts where a change to `table` must be made for it to reach every copy of its rows.

        A `Replicated*` table passes a mutation to the shard's other replicas itself: one host per shard.
        Any other table (a cluster whose copies `Distributed` writes, `internal_replication=false`) has
        copies that know nothing of each other: every host.
        """
        first = self.hosts[0]
        with self.client(first) as client:
            engines = client.query_rows(TABLE_ENGINE, {"table": table})
        if engines and str(engines[0]["engine"]).startswith("Replicated"):
            return [hosts[0] for hosts in self.shards.values()]
        return list(self.hosts)

    def map_every_copy(self, table: str, fn: Callable[[ClickHouseClient], T], what: str) -> dict[Host, T]:
        """Run `fn` (a mutation of `table`) where it reaches every copy of the table's rows."""
        return self.map_hosts(self.hosts_with_own_copy(table), fn, what)

    def command_on_all_hosts(self, sql: str, parameters: Mapping[str, Any] | None = None) -> int:
        """Run one statement on every host; returns the number of hosts."""
        return len(self.map_all_hosts(lambda client: client.command(sql, parameters), repr(first_line(sql))))
