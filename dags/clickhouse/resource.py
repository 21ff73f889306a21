"""The ClickHouse resource: one small interface for every asset, whichever way ClickHouse is reached."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from dagster import ConfigurableResource, InitResourceContext, get_dagster_logger
from pydantic import Field, PrivateAttr

from dags.clickhouse.backends import ConnectBackend, EmbeddedBackend
from dags.clickhouse.client import ClickHouseClient, describe_context
from dags.clickhouse.cluster import ClickHouseCluster
from dags.clickhouse.errors import (
    ClickHouseNotRetryableError,
    is_transient,
    retry_with_backoff,
    server_message,
)
from dags.clickhouse.lock import EmbeddedEngineLock
from dags.clickhouse.native import DRIVER_SETTINGS, NativeBackend
from dags.clickhouse.url import ClickHouseTarget, parse_clickhouse_url, quote_identifier, redact_url

# While a server does not answer, a line in the run log at least this often (seconds).
CONNECT_PROGRESS_SECONDS = 30.0


class ClickHouseResource(ConfigurableResource):
    """ClickHouse for every asset, the same small interface whichever way it is reached.

    Open a client for the duration of an operation; it names the run, job and asset in the
    `log_comment` of every query, retries transient errors with backoff, and raises errors that name
    the statement. The embedded engine is opened only inside `get_client` (never at import) and is
    shared with other processes by waiting for its lock.

    Example:
        ```python
        @asset
        def daily_totals(context: AssetExecutionContext, clickhouse: ClickHouseResource) -> MaterializeResult:
            with clickhouse.get_client(context) as client:
                client.command("INSERT INTO totals SELECT ... WHERE day = {day:Date}", {"day": "2024-03-15"})
                table = client.query_arrow("SELECT * FROM totals")
            return MaterializeResult(metadata={"rows": table.num_rows})

        Definitions(
            assets=[daily_totals],
            resources={"clickhouse": ClickHouseResource(url=EnvVar("CLICKHOUSE_URL"))},
        )
        ```
    """

    url: str = Field(
        description=(
            "Where ClickHouse is: chdb:///absolute/path (embedded engine, optional ?database=name), "
            "http(s)://user:password@host:8123/database, or clickhouse://user:password@host:9000/database."
        )
    )
    cluster: str | None = Field(
        default=None,
        description="Cluster name from system.clusters; run_on_all_hosts runs statements on each of its hosts.",
    )
    settings: dict[str, Any] = Field(
        default_factory=dict, description="ClickHouse settings applied to every query from this resource."
    )
    max_attempts: int = Field(default=5, description="Tries per statement on transient errors (1 = no retry).")
    retry_base_delay_seconds: float = Field(
        default=1.0, description="First backoff pause on a transient error; doubles on each further try."
    )
    lock_timeout_seconds: float = Field(
        default=1800.0,
        description="How long to wait for the embedded engine when another process holds it, before failing.",
    )
    connect_timeout_seconds: int = Field(default=10, description="Connect timeout for server connections.")
    connect_retry_seconds: float = Field(
        default=45.0,
        gt=0,
        description=(
            "How long to keep trying to reach a server that does not answer (a restart is ridden out) before the "
            "step fails for good; CLICKHOUSE_CONNECT_RETRY_SECONDS."
        ),
    )
    query_timeout_seconds: int = Field(
        default=3600, description="Socket send/receive timeout for one statement on a server connection."
    )

    _target: ClickHouseTarget | None = PrivateAttr(default=None)
    _engine_holder: Any = PrivateAttr(default=None)  # a chDB connection that keeps the engine running for a run

    @property
    def target(self) -> ClickHouseTarget:
        if self._target is None:
            try:
                self._target = parse_clickhouse_url(self.url)
            except ValueError as error:
                named = "CLICKHOUSE_URL" in str(error)
                raise ClickHouseNotRetryableError(f"{error}" + ("" if named else " (set by CLICKHOUSE_URL)")) from None
        return self._target

    @property
    def is_embedded(self) -> bool:
        return self.target.kind == "embedded"

    @property
    def display_url(self) -> str:
        return redact_url(self.url)

    def setup_for_execution(self, context: InitResourceContext) -> None:
        _ = self.target  # a malformed URL fails here, before any asset code runs, and is not retried
        if self.is_embedded and context.run is not None:
            self._keep_engine_running()

    def teardown_after_execution(self, context: InitResourceContext) -> None:
        if self._engine_holder is not None:
            holder, self._engine_holder = self._engine_holder, None
            try:
                holder.close()
            finally:
                EmbeddedEngineLock.release(self.target.data_path or "")

    def _keep_engine_running(self) -> None:
        """Hold the embedded engine open for the whole run (runs only: never in a sensor or a code server).

        chDB shuts the engine down when its last connection closes, and starting it again costs 0.1-0.2 s: paid
        at every `get_client` of every step and check, it was most of a one-day run's fixed cost. The run takes
        the engine's lock once, as each step would have taken it in turn; another process waits for the run
        instead of for its current step.
        """
        import chdb

        data_path = self.target.data_path
        assert data_path is not None
        EmbeddedEngineLock.acquire(data_path, self.lock_timeout_seconds)
        try:
            Path(data_path).mkdir(parents=True, exist_ok=True)
            self._engine_holder = retry_with_backoff(
                lambda: chdb.connect(data_path),
                what=f"Opening the embedded ClickHouse at {data_path}",
                attempts=max(self.max_attempts, 2),
                base_delay=self.retry_base_delay_seconds,
                should_retry=lambda error: "Unable to open the chdb engine" in str(error),
            )
        except BaseException:
            EmbeddedEngineLock.release(data_path)
            raise

    @contextmanager
    def get_client(
        self,
        context: Any = None,
        host: str | None = None,
        port: int | None = None,
        create_database: bool = False,
    ) -> Iterator[ClickHouseClient]:
        """Open a client for one operation; `context` is the asset or op context that names the queries.

        `host` and `port`: one host of the cluster instead of the URL's. `create_database`: on the embedded
        engine, create the URL's database when it is missing. Only what sets up the local default (bin/demo,
        `demo_events`) asks for it; anything else fails on a missing database, so a typo in CLICKHOUSE_URL never
        reads as an empty database.
        """
        target = self.target
        if target.kind == "embedded":
            assert target.data_path is not None
            EmbeddedEngineLock.acquire(target.data_path, self.lock_timeout_seconds)
            try:
                backend = retry_with_backoff(
                    lambda: self._open_embedded(create_database),
                    what=f"Opening the embedded ClickHouse at {target.data_path}",
                    attempts=max(self.max_attempts, 2),
                    base_delay=self.retry_base_delay_seconds,
                    should_retry=lambda error: "Unable to open the chdb engine" in str(error),
                )
                try:
                    yield ClickHouseClient(self, backend, describe_context(context))
                finally:
                    backend.close()
            finally:
                EmbeddedEngineLock.release(target.data_path)
            return
        backend = self._connect(host, port)
        try:
            yield ClickHouseClient(self, backend, describe_context(context))
        finally:
            backend.close()

    def get_cluster(self, context: Any = None) -> ClickHouseCluster:
        """The hosts of `cluster` as read from `system.clusters` (the URL's one host without a cluster)."""
        return ClickHouseCluster.of(self, context)

    def run_on_all_hosts(self, sql: str, parameters: Mapping[str, Any] | None = None, context: Any = None) -> int:
        """Run a statement (`SYSTEM RELOAD DICTIONARY ...`) on every host of the cluster; returns host count.

        Without a cluster, or on the embedded engine, there is one host. Every host is tried even when one
        fails; the error then names every host that failed and why.
        """
        return self.get_cluster(context).command_on_all_hosts(sql, parameters)

    # -- connections --

    def _connect(self, host: str | None, port: int | None = None) -> ConnectBackend | NativeBackend:
        """Connect to the server; one that does not answer is retried until `connect_retry_seconds` have passed.

        The first failed attempt is logged at once with the address, the variable that sets it and how to change
        the wait, then a line at least every 30 s. What retrying cannot fix (refused credentials, an unknown
        database) fails at once. Either way the error is not retried by the step: the wait was the retry.
        """
        logger = get_dagster_logger()
        address = self.display_url + (f" (host {host}" + (f":{port}" if port else "") + ")" if host else "")
        deadline = time.monotonic() + self.connect_retry_seconds
        attempt, last_logged = 0, float("-inf")
        while True:
            attempt += 1
            try:
                return self._open_server(host, port)
            except Exception as error:
                message = server_message(error).replace(self.url, self.display_url)
                if not is_transient(error):
                    raise ClickHouseNotRetryableError(
                        f"ClickHouse at {address} refused the connection: {message}. "
                        "Check CLICKHOUSE_URL (user, password, database)."
                    ) from None
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise ClickHouseNotRetryableError(
                        f"Could not reach ClickHouse at {address} for {self.connect_retry_seconds:.0f}s "
                        f"({attempt} attempts): {message}. Check CLICKHOUSE_URL and that the server is up; "
                        "CLICKHOUSE_CONNECT_RETRY_SECONDS sets how long to keep trying."
                    ) from None
                if time.monotonic() - last_logged >= CONNECT_PROGRESS_SECONDS:
                    logger.warning(
                        f"Cannot reach ClickHouse at {address} (CLICKHOUSE_URL): {message}. Retrying for up to "
                        f"{remaining:.0f}s more (CLICKHOUSE_CONNECT_RETRY_SECONDS={self.connect_retry_seconds:g})."
                    )
                    last_logged = time.monotonic()
                time.sleep(min(self.retry_base_delay_seconds * 2 ** min(attempt - 1, 4), remaining, 10.0))

    def _open_embedded(self, create_database: bool) -> EmbeddedBackend:
        import clickhouse_connect

        target = self.target
        assert target.data_path is not None
        Path(target.data_path).mkdir(parents=True, exist_ok=True)
        client = clickhouse_connect.get_client(dsn=f"chdb://{target.data_path}", settings=dict(self.settings))
        if target.database:
            if create_database:
                client.command(f"CREATE DATABASE IF NOT EXISTS {quote_identifier(target.database)}")
            elif not client.command(
                "SELECT count() FROM system.databases WHERE name = {name:String}", {"name": target.database}
            ):
                client.close()
                raise ClickHouseNotRetryableError(
                    f"The embedded ClickHouse at {target.data_path} has no database {target.database!r}: check the "
                    "?database= of CLICKHOUSE_URL. Nothing is created or read from a database that is not there "
                    "(bin/demo sets up a new one)."
                )
            client.database = target.database
        return EmbeddedBackend(client, target.data_path, target.database, dict(self.settings))

    def _open_server(self, host: str | None, port: int | None = None) -> ConnectBackend | NativeBackend:
        parsed = urlparse(self.url)
        if host:
            port = port or parsed.port
            netloc = (f"[{host}]" if ":" in host else host) + (f":{port}" if port else "")
            credentials = parsed.netloc.rpartition("@")[0]
            parsed = parsed._replace(netloc=(f"{credentials}@" if credentials else "") + netloc)
        database = self.target.database
        if self.target.kind == "http":
            import clickhouse_connect

            client = clickhouse_connect.get_client(
                host=parsed.hostname,
                port=parsed.port or (8443 if parsed.scheme == "https" else 8123),
                username=unquote(parsed.username or "default"),
                password=unquote(parsed.password or ""),
                database=database or "",
                secure=parsed.scheme == "https",
                connect_timeout=self.connect_timeout_seconds,
                send_receive_timeout=self.query_timeout_seconds,
                settings=dict(self.settings),
            )
            return ConnectBackend(client)
        from clickhouse_driver import Client
        from dagster_clickhouse import ClickhouseResource as NativeClickhouseResource
        from dagster_clickhouse.resource import client_kwargs_from_resource_config

        native = NativeClickhouseResource(
            host=parsed.hostname or "localhost",
            port=parsed.port or 9000,
            user=unquote(parsed.username or "default"),
            password=unquote(parsed.password or ""),
            database=database,
            secure=parsed.scheme == "clickhouses",
            settings={**DRIVER_SETTINGS, **self.settings},
        )
        kwargs = client_kwargs_from_resource_config(native.model_dump())

        def connect() -> Client:
            return Client(
                **kwargs,
                connect_timeout=self.connect_timeout_seconds,
                send_receive_timeout=self.query_timeout_seconds,
                # Otherwise the server silently ignores a setting it does not know (a typo), as HTTP does not.
                settings_is_important=True,
            )

        client = connect()
        client.execute("SELECT 1")  # connect now, so a down server is retried here
        return NativeBackend(client, connect)
