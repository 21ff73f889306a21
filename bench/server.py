"""The ClickHouse server the benchmarks measure against: a real ClickHouse 26.9 server on loopback.

It is the one the tests use (`dags.clickhouse.local_server`, from the `chdb-core` wheel), started under the
bench's workspace for the length of a run. It runs on the same two cores as the benchmark's own processes,
as a server on the same host as its client would: rows still cross a socket, in the protocol's own format.
"""

from collections.abc import Iterator
from contextlib import contextmanager

from bench.common import Engine, Workspace
from dags.clickhouse.local_server import LocalServer


@contextmanager
def running_server(workspace: Workspace) -> Iterator[Engine]:
    """Start the bench's server under `workspace`; the engine it is, until the block ends."""
    server = LocalServer(workspace.root / "clickhouse-server").start()
    try:
        yield Engine("server", server.http_url, server.native_url)
    finally:
        server.stop()
