"""A sharded ClickHouse 26.9 cluster on loopback for the tests: two wheel servers that know each other.

The hosts listen on 127.0.0.1 and 127.0.0.2 with the same HTTP port, as the hosts of a real cluster do, so a
statement can reach each host over HTTP at the URL's port. Their native ports differ: a server takes a replica
on 127.0.0.1 at its own native port for itself, and must not take the other host for itself.

Both servers define two clusters over the same two hosts:
- ``two_shards``: each host is a shard of its own (``events`` rows are spread by ``sipHash64(distinct_id)``);
- ``one_shard_two_copies``: one shard whose two replicas are written by ``Distributed`` itself
  (``internal_replication=false``), the way a cluster without replication keeps copies.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse, urlunparse

from dags.clickhouse.local_server import DEFAULT_PASSWORD, USER, LocalServer

HOSTS = ("127.0.0.1", "127.0.0.2")
TWO_SHARDS = "two_shards"
ONE_SHARD_TWO_COPIES = "one_shard_two_copies"


def _port_free_on_every_host() -> int:
    """A port number free on every address of ``HOSTS``."""
    while True:
        with socket.socket() as probe:
            probe.bind((HOSTS[0], 0))
            port = probe.getsockname()[1]
        try:
            for host in HOSTS[1:]:
                with socket.socket() as other:
                    other.bind((host, port))
            return port
        except OSError:
            continue


def _free_port(host: str) -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def _replica(host: str, tcp_port: int) -> str:
    return (
        f"<replica><host>{host}</host><port>{tcp_port}</port>"
        f"<user>{USER}</user><password>{DEFAULT_PASSWORD}</password></replica>"
    )


def remote_servers(tcp_ports: dict[str, int]) -> str:
    """The ``<remote_servers>`` both servers share."""
    shards = "".join(f"<shard>{_replica(host, port)}</shard>" for host, port in tcp_ports.items())
    copies = "".join(_replica(host, port) for host, port in tcp_ports.items())
    return (
        "<remote_servers>"
        f"<{TWO_SHARDS}>{shards}</{TWO_SHARDS}>"
        f"<{ONE_SHARD_TWO_COPIES}><shard><internal_replication>false</internal_replication>{copies}</shard>"
        f"</{ONE_SHARD_TWO_COPIES}>"
        "</remote_servers>"
    )


@dataclass
class LocalCluster:
    """The running servers of the test cluster, first host first."""

    servers: list[LocalServer]

    def url(self, protocol: str, database: str = "default", host: int = 0) -> str:
        """The URL of one host (``http`` or ``native``) pointing at ``database``."""
        server = self.servers[host]
        base = server.http_url if protocol == "http" else server.native_url
        return urlunparse(urlparse(base)._replace(path=f"/{database}"))

    def stop(self) -> None:
        for server in self.servers:
            server.stop()


def start_cluster(root: Path) -> LocalCluster:
    """Start one server per host of ``HOSTS``, each with the shared ``<remote_servers>``."""
    http_port = _port_free_on_every_host()
    tcp_ports = {host: _free_port(host) for host in HOSTS}
    config = remote_servers(tcp_ports)
    servers = [
        LocalServer(root / f"host{index + 1}", http_port, tcp_ports[host], extra_config=config, host=host)
        for index, host in enumerate(HOSTS)
    ]
    cluster = LocalCluster(servers)
    try:
        for server in servers:
            server.start()
    except BaseException:
        cluster.stop()
        raise
    return cluster


@contextmanager
def database_on_every_host(cluster: LocalCluster, name: str) -> Iterator[str]:
    """A database ``name`` created on every host, dropped on every host after."""
    import clickhouse_connect

    clients = [
        clickhouse_connect.get_client(host=server.host, port=server.http_port, username=USER, password=server.password)
        for server in cluster.servers
    ]
    try:
        for client in clients:
            client.command(f"CREATE DATABASE IF NOT EXISTS `{name}`")
        yield name
    finally:
        for client in clients:
            with suppress(Exception):
                client.command(f"DROP DATABASE IF EXISTS `{name}` SYNC")
            client.close()
