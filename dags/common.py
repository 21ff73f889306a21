"""Shared pieces of every code location: owners, settings, retry policies and the ClickHouse resource.

The ClickHouse resource gives every asset one small interface, whichever way it reaches ClickHouse:

- ``chdb:///path``: the embedded engine (the real ClickHouse, in-process), the local default;
- ``http(s)://user:pass@host:8123/db``: a server over HTTP through clickhouse-connect;
- ``clickhouse://user:pass@host:9000/db``: the native protocol through clickhouse-driver.
"""

from __future__ import annotations

import fcntl
import json
import os
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import date
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import parse_qs, unquote, urlparse, urlunparse

from dagster import (
    Backoff,
    ConfigurableResource,
    EnvVar,
    Failure,
    InitResourceContext,
    Jitter,
    RetryPolicy,
    get_dagster_logger,
)
from pydantic import Field, PrivateAttr

if TYPE_CHECKING:  # pandas and pyarrow load only when used: they would double a code server's start time
    import pandas as pd
    import pyarrow as pa

T = TypeVar("T")

PROJECT_ROOT = Path(__file__).resolve().parent.parent


# --- Ownership -------------------------------------------------------------------------------------------


class JobOwners(StrEnum):
    """Who answers for a job or asset: the value of its ``owner`` tag, which alerts and limits key off."""

    TEAM_REVENUE_ANALYTICS = "team-revenue-analytics"
    TEAM_WEB_ANALYTICS = "team-web-analytics"
    TEAM_DATA_EXPORTS = "team-data-exports"
    TEAM_PLATFORM = "team-platform"

    def tags(self) -> dict[str, str]:
        return {"owner": self.value}


# --- Settings ----------------------------------------------------------------------------------------------


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError as error:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from error


def _env_date(name: str, default: str) -> str:
    raw = os.environ.get(name, "").strip() or default
    try:
        return date.fromisoformat(raw).isoformat()
    except ValueError as error:
        raise ValueError(f"{name} must be a date like 2024-01-01, got {raw!r}") from error


def _env_choice(name: str, choices: tuple[str, ...]) -> str:
    raw = os.environ.get(name, "").strip().lower() or choices[0]
    if raw not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}, got {raw!r}")
    return raw


@dataclass(frozen=True)
class Settings:
    """Every setting the project reads from the environment, read in one place.

    ``DEBUG=1`` forces the local resources (embedded ClickHouse, local export folder, alerts to the log)
    even when production variables are set. Without it each resource takes its production setting
    from the environment and falls back to the local one only when nothing is configured.
    """

    debug: bool
    dagster_home: Path
    clickhouse_url: str | None
    clickhouse_cluster: str | None
    export_destination_url: str | None
    export_write_method: str  # stream or clickhouse (S3 only: ClickHouse writes with s3())
    export_clickhouse_s3_endpoint_url: str | None  # the S3 endpoint as the ClickHouse server reaches it
    export_start_date: str
    export_max_partitions_per_run: int
    web_analytics_start_date: str
    web_preaggregated_max_partitions_per_run: int
    web_analytics_yesterday_cron: str  # the schedule of yesterday's web analytics partition
    web_analytics_today_cron: str  # the schedule of today's web analytics partition
    exchange_rate_start_date: str
    exchange_rate_source: str  # ecb or openexchangerates
    exchange_rate_ecb_url: str
    open_exchange_rates_url: str
    open_exchange_rates_app_id_configured: bool  # the App ID itself is read through EnvVar only
    slack_token_configured: bool  # SLACK_BOT_TOKEN is set (the token itself is read through EnvVar only)
    slack_default_channel: str
    dagster_webserver_url: str

    @property
    def local_clickhouse_url(self) -> str:
        return f"chdb://{self.dagster_home / 'clickhouse'}"

    @property
    def local_export_url(self) -> str:
        return (self.dagster_home / "exports").as_uri()

    @property
    def effective_clickhouse_url(self) -> str:
        if self.debug or not self.clickhouse_url:
            return self.local_clickhouse_url
        return self.clickhouse_url

    @property
    def uses_embedded_clickhouse(self) -> bool:
        return self.effective_clickhouse_url.startswith("chdb:")

    @property
    def effective_export_url(self) -> str:
        if self.debug or not self.export_destination_url:
            return self.local_export_url
        return self.export_destination_url


def load_settings() -> Settings:
    """Read the settings from the environment now (not at import), so tests and CLIs can change them."""
    home = os.environ.get("DAGSTER_HOME", "").strip()
    return Settings(
        debug=_env_flag("DEBUG"),
        dagster_home=Path(home).resolve() if home else PROJECT_ROOT / ".dagster_home",
        clickhouse_url=os.environ.get("CLICKHOUSE_URL", "").strip() or None,
        clickhouse_cluster=os.environ.get("CLICKHOUSE_CLUSTER", "").strip() or None,
        export_destination_url=os.environ.get("EXPORT_DESTINATION_URL", "").strip() or None,
        export_write_method=_env_choice("EXPORT_WRITE_METHOD", ("stream", "clickhouse")),
        export_clickhouse_s3_endpoint_url=os.environ.get("EXPORT_CLICKHOUSE_S3_ENDPOINT_URL", "").strip() or None,
        export_start_date=_env_date("EXPORT_START_DATE", "2024-01-01"),
        export_max_partitions_per_run=_env_int("EXPORT_MAX_PARTITIONS_PER_RUN", 7),
        web_analytics_start_date=_env_date("WEB_ANALYTICS_START_DATE", "2024-01-01"),
        web_preaggregated_max_partitions_per_run=_env_int("DAGSTER_WEB_PREAGGREGATED_MAX_PARTITIONS_PER_RUN", 1),
        web_analytics_yesterday_cron=os.environ.get("WEB_ANALYTICS_YESTERDAY_CRON", "").strip() or "15 0 * * *",
        web_analytics_today_cron=os.environ.get("WEB_ANALYTICS_TODAY_CRON", "").strip() or "*/20 * * * *",
        exchange_rate_start_date=_env_date("EXCHANGE_RATE_START_DATE", "1999-01-04"),
        exchange_rate_source=_env_choice("EXCHANGE_RATE_SOURCE", ("ecb", "openexchangerates")),
        exchange_rate_ecb_url=os.environ.get("EXCHANGE_RATE_ECB_URL", "").strip()
        or "https://www.ecb.europa.eu/stats/eurofxref",
        open_exchange_rates_url=os.environ.get("OPEN_EXCHANGE_RATES_URL", "").strip()
        or "https://openexchangerates.org/api",
        open_exchange_rates_app_id_configured=bool(os.environ.get("OPEN_EXCHANGE_RATES_APP_ID", "").strip()),
        slack_token_configured=bool(os.environ.get("SLACK_BOT_TOKEN", "").strip()),
        slack_default_channel=os.environ.get("SLACK_DEFAULT_CHANNEL", "").strip() or "#data-alerts",
        dagster_webserver_url=os.environ.get("DAGSTER_WEBSERVER_URL", "").strip().rstrip("/")
        or "http://localhost:3000",
    )


# --- Retry policies ----------------------------------------------------------------------------------------

# The step-level retry for ClickHouse work. The resource already retries transient errors inside a step;
# this covers what is left (a server restart longer than those retries, a lost connection mid-insert).
CLICKHOUSE_RETRY_POLICY = RetryPolicy(max_retries=3, delay=10, backoff=Backoff.EXPONENTIAL, jitter=Jitter.PLUS_MINUS)

# For calls to outside HTTP APIs and object stores.
EXTERNAL_API_RETRY_POLICY = RetryPolicy(max_retries=3, delay=5, backoff=Backoff.EXPONENTIAL, jitter=Jitter.FULL)


# --- ClickHouse errors -------------------------------------------------------------------------------------

# Server error codes that mean "try again later", not "your query is wrong".
TRANSIENT_ERROR_CODES = frozenset(
    {
        3,  # UNEXPECTED_END_OF_FILE
        32,  # ATTEMPT_TO_READ_AFTER_EOF
        202,  # TOO_MANY_SIMULTANEOUS_QUERIES
        209,  # SOCKET_TIMEOUT
        210,  # NETWORK_ERROR
        242,  # TABLE_IS_READ_ONLY (replica lost its Keeper session)
        252,  # TOO_MANY_PARTS
        319,  # UNKNOWN_STATUS_OF_INSERT
        425,  # SYSTEM_ERROR
        999,  # KEEPER_EXCEPTION
    }
)


class ClickHouseError(Exception):
    """A ClickHouse statement failed; the message names the statement and what the server said."""


class ClickHouseBusyError(ClickHouseError):
    """The embedded ClickHouse stayed locked by another process for longer than allowed."""


def first_line(sql: str) -> str:
    """The first non-empty line of a statement, for error messages and logs."""
    for line in sql.strip().splitlines():
        if line.strip():
            return line.strip()[:200]
    return ""


def _error_code(error: BaseException) -> int | None:
    code = getattr(error, "code", None)
    if isinstance(code, int):
        return code
    text = str(error)
    marker = "Code: "
    if marker in text:
        digits = "".join(ch for ch in text.split(marker, 1)[1][:6] if ch.isdigit())
        return int(digits) if digits else None
    return None


def server_message(error: BaseException) -> str:
    """What the server said, without the stack trace some servers append (one line, at most 500 characters)."""
    lines: list[str] = []
    for line in str(error).splitlines():
        line = line.strip()
        if line.startswith("Stack trace") or (line[:1].isdigit() and ". /" in line[:8]):
            break
        if line:
            lines.append(line)
    text = " ".join(lines).replace("Stack trace:", "").strip()
    return text[:500] or type(error).__name__


def is_transient(error: BaseException) -> bool:
    """Network trouble, an overloaded server or a held lock: worth another try after a pause."""
    if isinstance(error, ConnectionError | TimeoutError | EOFError):
        return True
    from clickhouse_connect.driver.exceptions import OperationalError
    from clickhouse_driver import errors as native_errors

    if isinstance(error, OperationalError | native_errors.NetworkError | native_errors.SocketTimeoutError):
        return True
    return _error_code(error) in TRANSIENT_ERROR_CODES


def redact_url(url: str) -> str:
    """The URL without its password, safe for logs, metadata and the UI."""
    parsed = urlparse(url)
    if parsed.password is None:
        return url
    netloc = f"{parsed.username}:***@{parsed.hostname}" + (f":{parsed.port}" if parsed.port else "")
    return urlunparse(parsed._replace(netloc=netloc))


def retry_with_backoff(
    operation: Callable[[], T],
    *,
    what: str,
    attempts: int,
    base_delay: float,
    should_retry: Callable[[BaseException], bool] = is_transient,
) -> T:
    """Run ``operation``; on a retryable error wait (exponential backoff with jitter) and try again."""
    for attempt in range(1, attempts + 1):
        try:
            return operation()
        except Exception as error:
            if attempt == attempts or not should_retry(error):
                raise
            delay = base_delay * 2 ** (attempt - 1) * random.uniform(0.5, 1.5)
            get_dagster_logger().warning(
                f"{what} failed with a transient error (attempt {attempt}/{attempts}), "
                f"retrying in {delay:.1f}s: {server_message(error)[:300]}"
            )
            time.sleep(delay)
    raise AssertionError("unreachable")


# --- The embedded engine's one-process lock -------------------------------------------------------------


class _EmbeddedEngineLock:
    """Serialises processes that use the same embedded ClickHouse data path.

    chDB lets one process at a time open a data path (a second one fails with ``Cannot lock file
    .../status``) and one path per process. Runs, the code server and the daemon are separate processes,
    so each takes this advisory file lock for as long as it has the engine open, and waits for it when
    another holds it. Threads in one process share the lock (they share the engine too).
    """

    _guard = threading.Lock()
    _held: dict[str, tuple[int, int]] = {}  # data path -> (file descriptor, users in this process)

    @classmethod
    def acquire(cls, data_path: str, timeout_seconds: float) -> None:
        deadline = time.monotonic() + timeout_seconds
        lock_path = data_path.rstrip("/") + ".lock"
        Path(lock_path).parent.mkdir(parents=True, exist_ok=True)
        waited_logged = False
        while True:
            with cls._guard:
                if data_path in cls._held:
                    fd, users = cls._held[data_path]
                    cls._held[data_path] = (fd, users + 1)
                    return
                other_paths = [path for path in cls._held if path != data_path]
                if other_paths:
                    raise ClickHouseError(
                        f"This process already has the embedded ClickHouse at {other_paths[0]} open; "
                        f"chDB allows one data path per process, so {data_path} cannot be opened too."
                    )
                fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    os.close(fd)
                else:
                    cls._held[data_path] = (fd, 1)
                    return
            if time.monotonic() >= deadline:
                raise ClickHouseBusyError(
                    f"The embedded ClickHouse at {data_path} stayed in use by another process for "
                    f"{timeout_seconds:.0f}s (another run, or a script holding it open). Wait for it to finish "
                    "and retry, raise CLICKHOUSE_LOCK_TIMEOUT_SECONDS, or point CLICKHOUSE_URL at a ClickHouse "
                    "server to run in parallel."
                )
            if not waited_logged:
                get_dagster_logger().info(f"Waiting for the embedded ClickHouse at {data_path}: in use elsewhere")
                waited_logged = True
            time.sleep(0.2)

    @classmethod
    def release(cls, data_path: str) -> None:
        with cls._guard:
            fd, users = cls._held[data_path]
            if users > 1:
                cls._held[data_path] = (fd, users - 1)
                return
            del cls._held[data_path]
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


# --- Backends: one per way into ClickHouse ---------------------------------------------------------------


class _ConnectBackend:
    """clickhouse-connect: the embedded engine (``chdb://``) and servers over HTTP."""

    def __init__(self, client: Any):
        self.client = client

    def command(self, sql: str, parameters: Mapping[str, Any] | None, settings: dict[str, Any]) -> Any:
        return self.client.command(sql, parameters=parameters, settings=settings)

    def query_arrow(self, sql: str, parameters: Mapping[str, Any] | None, settings: dict[str, Any]) -> pa.Table:
        return self.client.query_arrow(sql, parameters=parameters, settings=settings)

    @contextmanager
    def query_arrow_stream(
        self, sql: str, parameters: Mapping[str, Any] | None, settings: dict[str, Any]
    ) -> Iterator[Iterator[pa.RecordBatch]]:
        with self.client.query_arrow_stream(sql, parameters=parameters, settings=settings) as stream:
            yield iter(stream)

    def insert_arrow(self, table: str, data: pa.Table, settings: dict[str, Any]) -> int:
        self.client.insert_arrow(table, data, settings=settings)
        return data.num_rows

    def insert_df(self, table: str, data: pd.DataFrame, settings: dict[str, Any]) -> int:
        self.client.insert_df(table, data, settings=settings)
        return len(data)

    def close(self) -> None:
        self.client.close()


STREAM_BATCH_ROWS = 65_536


class _EmbeddedBackend(_ConnectBackend):
    """The embedded engine through clickhouse-connect, with a truly streamed Arrow path.

    clickhouse-connect's chDB backend reads a whole ``ArrowStream`` result (and any query with per-call
    settings) into memory before returning it. Streams therefore use a dedicated chDB handle on the same
    engine: settings go in with ``SET`` on that handle, and chDB's Arrow reader yields record batches as
    the engine produces them, so memory stays flat however large the result.
    """

    def __init__(self, client: Any, data_path: str, database: str | None, resource_settings: dict[str, Any]):
        super().__init__(client)
        self.data_path = data_path
        self.database = database
        self.resource_settings = resource_settings  # the client has them; the stream's own handle needs them too

    @contextmanager
    def query_arrow_stream(
        self, sql: str, parameters: Mapping[str, Any] | None, settings: dict[str, Any]
    ) -> Iterator[Iterator[pa.RecordBatch]]:
        import chdb
        from clickhouse_connect.driver.binding import bind_query

        query, bound = bind_query(sql, dict(parameters) if parameters else None)
        # The engine assigns its own ids (log_comment names ours).
        settings, _ = _without_query_id({**self.resource_settings, **settings})
        handle = chdb.connect(self.data_path)
        stream = None
        try:
            if self.database:
                handle.query(f"USE {quote_identifier(self.database)}")
            for name, value in settings.items():
                handle.query(f"SET {quote_identifier(name)} = {_setting_literal(value)}")
            params = {key.removeprefix("param_"): value for key, value in bound.items()}
            stream = handle.send_query(query, "Arrow", params=params)
            batch_rows = int(settings.get("max_block_size", STREAM_BATCH_ROWS))
            yield iter(stream.record_batch(rows_per_batch=batch_rows))
        finally:
            if stream is not None:
                stream.close()
            handle.close()


def _setting_literal(value: Any) -> str:
    """A setting's value as a SQL literal for ``SET`` (numbers bare, anything else a quoted string)."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int | float):
        return str(value)
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


def _without_query_id(settings: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    settings = dict(settings)
    return settings, settings.pop("query_id", None)


class _NativeBackend:
    """clickhouse-driver over the native protocol (port 9000), for clusters that expose only it."""

    def __init__(self, client: Any):
        self.client = client

    def _execute(self, sql: str, parameters: Mapping[str, Any] | None, settings: dict[str, Any], **kwargs: Any):
        settings, query_id = _without_query_id(settings)
        return self.client.execute(
            sql, dict(parameters) if parameters else None, settings=settings, query_id=query_id, **kwargs
        )

    def command(self, sql: str, parameters: Mapping[str, Any] | None, settings: dict[str, Any]) -> Any:
        rows = self._execute(sql, parameters, settings)
        if isinstance(rows, list) and len(rows) == 1 and len(rows[0]) == 1:
            return rows[0][0]
        return rows

    def query_arrow(self, sql: str, parameters: Mapping[str, Any] | None, settings: dict[str, Any]) -> pa.Table:
        import pyarrow as pa

        with self.query_arrow_stream(sql, parameters, settings) as batches:
            batch_list = list(batches)
        if not batch_list:
            return pa.table({})
        return pa.Table.from_batches(batch_list)

    @contextmanager
    def query_arrow_stream(
        self, sql: str, parameters: Mapping[str, Any] | None, settings: dict[str, Any]
    ) -> Iterator[Iterator[pa.RecordBatch]]:
        settings, query_id = _without_query_id(settings)
        rows = self.client.execute_iter(
            sql, dict(parameters) if parameters else None, settings=settings, query_id=query_id, with_column_types=True
        )

        def batches(batch_rows: int = 65_536) -> Iterator[pa.RecordBatch]:
            import pyarrow as pa

            names: list[str] | None = None
            chunk: list[tuple] = []
            for item in rows:
                if names is None:  # execute_iter yields the column names and types first
                    names = [name for name, _ in item]
                    continue
                chunk.append(item)
                if len(chunk) >= batch_rows:
                    yield pa.RecordBatch.from_pylist([dict(zip(names, row, strict=True)) for row in chunk])
                    chunk = []
            if chunk and names is not None:
                yield pa.RecordBatch.from_pylist([dict(zip(names, row, strict=True)) for row in chunk])

        yield batches()

    def insert_arrow(self, table: str, data: pa.Table, settings: dict[str, Any]) -> int:
        columns = ", ".join(f"`{name}`" for name in data.column_names)
        self.client.execute(f"INSERT INTO {table} ({columns}) VALUES", data.to_pylist(), settings=settings)
        return data.num_rows

    def insert_df(self, table: str, data: pd.DataFrame, settings: dict[str, Any]) -> int:
        import pyarrow as pa

        return self.insert_arrow(table, pa.Table.from_pandas(data, preserve_index=False), settings)

    def close(self) -> None:
        self.client.disconnect()


# --- The resource ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClickHouseTarget:
    """Where a ClickHouse URL points, parsed once."""

    kind: str  # "embedded", "http" or "native"
    url: str
    data_path: str | None  # embedded only
    database: str | None


def parse_clickhouse_url(url: str) -> ClickHouseTarget:
    parsed = urlparse(url)
    query = {key: values[0] for key, values in parse_qs(parsed.query).items()}
    if parsed.scheme == "chdb":
        if not parsed.path or parsed.netloc:
            raise ValueError(f"An embedded ClickHouse URL looks like chdb:///absolute/path, got {url!r}")
        return ClickHouseTarget("embedded", url, os.path.realpath(unquote(parsed.path)), query.get("database"))
    if parsed.scheme in {"http", "https"}:
        database = unquote(parsed.path.strip("/")) or query.get("database")
        return ClickHouseTarget("http", url, None, database)
    if parsed.scheme in {"clickhouse", "clickhouses"}:
        database = unquote(parsed.path.strip("/")) or query.get("database")
        return ClickHouseTarget("native", url, None, database)
    raise ValueError(
        f"CLICKHOUSE_URL must start with chdb://, http://, https:// or clickhouse://; got {redact_url(url)!r}"
    )


class ClickHouseResource(ConfigurableResource):
    """ClickHouse for every asset, the same small interface whichever way it is reached.

    Open a client for the duration of an operation; it names the run, job and asset in the
    ``log_comment`` of every query, retries transient errors with backoff, and raises errors that name
    the statement. The embedded engine is opened only inside ``get_client`` (never at import) and is
    shared with other processes by waiting for its lock.

    Example:
        .. code-block:: python

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
    query_timeout_seconds: int = Field(
        default=3600, description="Socket send/receive timeout for one statement on a server connection."
    )

    _target: ClickHouseTarget | None = PrivateAttr(default=None)

    @property
    def target(self) -> ClickHouseTarget:
        if self._target is None:
            self._target = parse_clickhouse_url(self.url)
        return self._target

    @property
    def is_embedded(self) -> bool:
        return self.target.kind == "embedded"

    @property
    def display_url(self) -> str:
        return redact_url(self.url)

    def setup_for_execution(self, context: InitResourceContext) -> None:
        parse_clickhouse_url(self.url)  # a malformed URL fails here, before any asset code runs

    @contextmanager
    def get_client(self, context: Any = None, host: str | None = None) -> Iterator[ClickHouseClient]:
        """Open a client for one operation; ``context`` is the asset or op context that names the queries."""
        target = self.target
        if target.kind == "embedded":
            assert target.data_path is not None
            _EmbeddedEngineLock.acquire(target.data_path, self.lock_timeout_seconds)
            try:
                backend = retry_with_backoff(
                    self._open_embedded,
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
                _EmbeddedEngineLock.release(target.data_path)
            return
        try:
            backend = retry_with_backoff(
                lambda: self._open_server(host),
                what=f"Connecting to ClickHouse at {self.display_url}",
                attempts=self.max_attempts,
                base_delay=self.retry_base_delay_seconds,
            )
        except Exception as error:
            message = server_message(error).replace(self.url, self.display_url)
            raise ClickHouseError(f"Could not connect to ClickHouse at {self.display_url}: {message}") from None
        try:
            yield ClickHouseClient(self, backend, describe_context(context))
        finally:
            backend.close()

    def run_on_all_hosts(self, sql: str, parameters: Mapping[str, Any] | None = None, context: Any = None) -> int:
        """Run a statement (``SYSTEM RELOAD DICTIONARY ...``) on every host of the cluster; returns host count.

        Without a cluster, or on the embedded engine, there is one host. Every host is tried even when one
        fails; the error then lists the hosts that failed.
        """
        if self.is_embedded or not self.cluster:
            with self.get_client(context) as client:
                client.command(sql, parameters)
            return 1
        with self.get_client(context) as client:
            hosts = [
                row["host_name"]
                for row in client.query_arrow(
                    "SELECT DISTINCT host_name FROM system.clusters WHERE cluster = {cluster:String}",
                    {"cluster": self.cluster},
                ).to_pylist()
            ]
        if not hosts:
            raise ClickHouseError(f"Cluster {self.cluster!r} is not in system.clusters on {self.display_url}")
        failures: list[str] = []
        for host in hosts:
            try:
                with self.get_client(context, host=host) as client:
                    client.command(sql, parameters)
            except Exception as error:
                failures.append(f"{host}: {server_message(error)}")
        if failures:
            raise ClickHouseError(f"{first_line(sql)!r} failed on {len(failures)} of {len(hosts)} hosts: {failures}")
        return len(hosts)

    # -- connections --

    def _open_embedded(self) -> _EmbeddedBackend:
        import clickhouse_connect

        target = self.target
        assert target.data_path is not None
        Path(target.data_path).mkdir(parents=True, exist_ok=True)
        client = clickhouse_connect.get_client(dsn=f"chdb://{target.data_path}", settings=dict(self.settings))
        if target.database:
            client.command(f"CREATE DATABASE IF NOT EXISTS {quote_identifier(target.database)}")
            client.database = target.database
        return _EmbeddedBackend(client, target.data_path, target.database, dict(self.settings))

    def _open_server(self, host: str | None) -> _ConnectBackend | _NativeBackend:
        parsed = urlparse(self.url)
        if host:
            port = f":{parsed.port}" if parsed.port else ""
            credentials = parsed.netloc.rpartition("@")[0]
            parsed = parsed._replace(netloc=(f"{credentials}@" if credentials else "") + host + port)
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
            return _ConnectBackend(client)
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
            settings=dict(self.settings),
        )
        kwargs = client_kwargs_from_resource_config(native.model_dump())
        client = Client(
            **kwargs,
            connect_timeout=self.connect_timeout_seconds,
            send_receive_timeout=self.query_timeout_seconds,
        )
        client.execute("SELECT 1")  # connect now, so a down server is retried here
        return _NativeBackend(client)


def describe_context(context: Any) -> dict[str, Any]:
    """What a query's ``log_comment`` says about where it came from: run, job, asset and partition."""
    if context is None:
        return {}
    described: dict[str, Any] = {}
    try:
        described["run_id"] = context.run.run_id
        described["job"] = context.run.job_name
    except Exception:
        pass
    try:
        if getattr(context, "has_assets_def", False):
            described["asset"] = ",".join(key.to_user_string() for key in sorted(context.assets_def.keys))
    except Exception:
        pass
    try:
        if context.has_partition_key_range:
            window = context.partition_key_range
            described["partitions"] = window.start if window.start == window.end else f"{window.start}...{window.end}"
    except Exception:
        pass
    return described


class ClickHouseClient:
    """An open connection for one operation. Values are bound by the server: ``{name:Type}`` placeholders."""

    def __init__(self, resource: ClickHouseResource, backend: _ConnectBackend | _NativeBackend, origin: dict[str, Any]):
        self._resource = resource
        self._backend = backend
        self.origin = origin

    @property
    def is_embedded(self) -> bool:
        return self._resource.is_embedded

    @property
    def database(self) -> str:
        """The database this connection works in (unqualified table names resolve here)."""
        return str(self.command("SELECT currentDatabase()"))

    def _settings(self, sql: str, extra: Mapping[str, Any] | None, query_id: str) -> dict[str, Any]:
        # The query id is in log_comment too: the embedded engine does not take a query_id of ours.
        origin = {"dagster": self.origin, "query_id": query_id, "statement": first_line(sql)[:80]}
        return {"log_comment": json.dumps(origin, sort_keys=True), "query_id": query_id, **(extra or {})}

    def _run(self, sql: str, operation: Callable[[str], T], interruptible: bool = True) -> T:
        """Run ``operation(query_id)`` with retries; each attempt gets a fresh query id.

        An interruptible statement runs in a worker thread while this thread waits, so that a run's
        termination (Dagster interrupts the run's main thread) kills the query on the server instead of
        waiting for it: see ``_wait_or_kill``.
        """

        def attempt() -> T:
            query_id = str(uuid.uuid4())
            if not interruptible:
                return operation(query_id)
            return self._wait_or_kill(sql, query_id, lambda: operation(query_id))

        try:
            return retry_with_backoff(
                attempt,
                what=f"ClickHouse statement {first_line(sql)!r}",
                attempts=self._resource.max_attempts,
                base_delay=self._resource.retry_base_delay_seconds,
            )
        except (ClickHouseError, Failure):  # a Failure: the run was interrupted and the query killed
            raise
        except Exception as error:
            message = server_message(error)
            raise ClickHouseError(f"ClickHouse statement {first_line(sql)!r} failed: {message}") from error

    def _wait_or_kill(self, sql: str, query_id: str, statement: Callable[[], T]) -> T:
        """Run ``statement`` in a worker thread; if this thread is interrupted meanwhile, kill the query.

        Terminating a run (from the UI, ``dagster/max_runtime``, Ctrl-C) interrupts the run's main thread, but
        a thread blocked inside a driver call only notices when the server answers, which for a long
        INSERT ... SELECT may be hours later. Waiting here in short steps lets the interrupt arrive at once;
        the query is then killed by its id, so the server stops writing too.
        """
        outcome: dict[str, Any] = {}

        def work() -> None:
            try:
                outcome["result"] = statement()
            except BaseException as error:  # handed to the waiting thread
                outcome["error"] = error

        worker = threading.Thread(target=work, name=f"clickhouse-{query_id[:8]}", daemon=True)
        worker.start()
        try:
            while worker.is_alive():
                worker.join(0.1)
        except BaseException as interrupt:
            self._kill_query(sql, query_id)
            worker.join(60)
            if "error" in outcome:
                get_dagster_logger().warning(f"ClickHouse query {query_id} ended: {server_message(outcome['error'])}")
            from dagster._core.errors import DagsterExecutionInterruptedError

            if not isinstance(interrupt, DagsterExecutionInterruptedError):
                raise  # Ctrl-C outside a Dagster run, or the interpreter exiting
            # Dagster retries an interrupted step that has a RetryPolicy, which would start the query again in
            # a run being terminated. Fail the step for good instead, and hand the interrupt back to the
            # executor so that it starts no further step and ends the run as canceled.
            _hand_interrupt_to_executor()
            raise Failure(
                description=f"The run was interrupted: ClickHouse query {query_id} ({first_line(sql)!r}) was killed.",
                allow_retries=False,
            ) from None
        if "error" in outcome:
            raise outcome["error"]
        return outcome["result"]

    def _kill_query(self, sql: str, query_id: str) -> None:
        """``KILL QUERY`` the statement with this id, on a second connection (this one is busy with it)."""
        logger = get_dagster_logger()
        logger.warning(f"Interrupted: killing ClickHouse query {query_id} ({first_line(sql)!r})")
        if self.is_embedded:  # the embedded engine keeps ids of its own: find the query by its log_comment
            where = "position(Settings['log_comment'], {query_id:String}) > 0"
        else:
            where = "query_id = {query_id:String}"
        running = f"SELECT count() FROM system.processes WHERE {where}"
        parameters = {"query_id": query_id}
        try:
            with self._resource.get_client() as other:
                if not other._backend.command(running, parameters, {}):
                    logger.warning(f"KILL QUERY {query_id}: not running any more")
                    return
                other._backend.command(f"KILL QUERY WHERE {where} SYNC", parameters, {})
                outcome = "still running" if other._backend.command(running, parameters, {}) else "killed"
            logger.warning(f"KILL QUERY {query_id}: {outcome}")
        except Exception as error:
            logger.error(f"Could not kill ClickHouse query {query_id}: {server_message(error)}")

    def command(
        self, sql: str, parameters: Mapping[str, Any] | None = None, settings: Mapping[str, Any] | None = None
    ) -> Any:
        """Run a statement (DDL, INSERT ... SELECT, SYSTEM ...) or a query with a single value."""
        return self._run(
            sql, lambda query_id: self._backend.command(sql, parameters, self._settings(sql, settings, query_id))
        )

    def query_arrow(
        self, sql: str, parameters: Mapping[str, Any] | None = None, settings: Mapping[str, Any] | None = None
    ) -> pa.Table:
        """Run a query and return the whole result as an Arrow table (for small and medium results)."""
        return self._run(
            sql, lambda query_id: self._backend.query_arrow(sql, parameters, self._settings(sql, settings, query_id))
        )

    def query_rows(
        self, sql: str, parameters: Mapping[str, Any] | None = None, settings: Mapping[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        """Run a query and return its rows as dictionaries (for small results)."""
        return self.query_arrow(sql, parameters, settings).to_pylist()

    @contextmanager
    def query_arrow_stream(
        self, sql: str, parameters: Mapping[str, Any] | None = None, settings: Mapping[str, Any] | None = None
    ) -> Iterator[Iterator[pa.RecordBatch]]:
        """Stream a large result as Arrow record batches; memory is bounded by the block size, not the result."""
        with ExitStack() as stack:

            def open_stream(query_id: str) -> Iterator[pa.RecordBatch]:
                stream = self._backend.query_arrow_stream(sql, parameters, self._settings(sql, settings, query_id))
                return stack.enter_context(stream)

            batches = self._run(sql, open_stream, interruptible=False)  # read batch by batch in this thread
            yield _reraise_with_statement(sql, batches)

    def insert_arrow(self, table: str, data: pa.Table, settings: Mapping[str, Any] | None = None) -> int:
        """Insert an Arrow table (columns matched by name); returns rows inserted."""
        sql = f"INSERT INTO {table}"
        return self._run(
            sql, lambda query_id: self._backend.insert_arrow(table, data, self._settings(sql, settings, query_id))
        )

    def insert_df(self, table: str, data: pd.DataFrame, settings: Mapping[str, Any] | None = None) -> int:
        """Insert a pandas DataFrame (columns matched by name); returns rows inserted."""
        sql = f"INSERT INTO {table}"
        return self._run(
            sql, lambda query_id: self._backend.insert_df(table, data, self._settings(sql, settings, query_id))
        )


def _hand_interrupt_to_executor() -> None:
    """Record an interrupt the way Dagster's own SIGINT handler does outside user code (``capture_interrupts``)."""
    from dagster._utils import interrupts

    interrupts._received_interrupt["received"] = True


def _reraise_with_statement(sql: str, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    try:
        yield from batches
    except ClickHouseError:
        raise
    except Exception as error:
        raise ClickHouseError(
            f"ClickHouse statement {first_line(sql)!r} failed while streaming: {server_message(error)}"
        ) from error


def clickhouse_resource_from_env(settings: Settings | None = None) -> ClickHouseResource:
    """The ClickHouse resource as the environment configures it (see ``Settings``)."""
    settings = settings or load_settings()
    # A server URL carries credentials: EnvVar keeps its value out of the UI and of stored run config.
    uses_server = not settings.debug and settings.clickhouse_url is not None
    return ClickHouseResource(
        url=EnvVar("CLICKHOUSE_URL") if uses_server else settings.local_clickhouse_url,
        cluster=None if settings.debug else settings.clickhouse_cluster,
        lock_timeout_seconds=float(os.environ.get("CLICKHOUSE_LOCK_TIMEOUT_SECONDS", "1800")),
    )


def quote_identifier(name: str) -> str:
    """Backtick-quote an identifier (database, table) that comes from config."""
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"
