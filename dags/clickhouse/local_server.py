"""A real ClickHouse 26.9 server on loopback, started from the `chdb-core` wheel.

The wheel holds clickhouse-local's full main: in a process of its own, with a `config.xml` in its current
folder, it serves HTTP and the native protocol until it is sent SIGTERM. Used by the tests and by users:

    python -m dags.clickhouse.local_server --root .dagster_home/clickhouse-server
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

USER = "pipelines"
DEFAULT_PASSWORD = "local-server-password"

# Runs in the child process: listen, publish the chosen ports, then never end.
_SERVE = """
import sys
from chdb import _chdb
_chdb.query(
    "SYSTEM START LISTEN TCP; SYSTEM START LISTEN HTTP; "
    "SELECT getServerPort('tcp_port'), getServerPort('http_port') INTO OUTFILE 'ports.tsv.tmp' FORMAT TSV; "
    "SELECT sleepEachRow(1) FROM system.numbers FORMAT Null SETTINGS max_block_size = 1",
    "TabSeparated",
    path=sys.argv[1],
)
"""


def _config(host: str, http_port: int, tcp_port: int, password: str, root: Path, extra_config: str) -> str:
    return f"""<clickhouse>
    <listen_host>{host}</listen_host>
    <http_port>{http_port}</http_port>
    <tcp_port>{tcp_port}</tcp_port>
    <background_distributed_schedule_pool_size>4</background_distributed_schedule_pool_size>
    <query_log>
        <database>system</database>
        <table>query_log</table>
        <flush_interval_milliseconds>500</flush_interval_milliseconds>
    </query_log>
    <backups>
        <allowed_path>{root / "backups"}/</allowed_path>
    </backups>
    <user_directories>
        <users_xml><path>{root / "config.xml"}</path></users_xml>
    </user_directories>
    <profiles><default/></profiles>
    <quotas><default/></quotas>
    <users>
        <default>
            <password></password>
            <networks><ip>127.0.0.0/8</ip><ip>::1</ip></networks>
            <profile>default</profile>
            <quota>default</quota>
        </default>
        <{USER}>
            <password>{password}</password>
            <networks><ip>127.0.0.0/8</ip><ip>::1</ip></networks>
            <profile>default</profile>
            <quota>default</quota>
            <access_management>1</access_management>
        </{USER}>
    </users>
    {extra_config}
</clickhouse>
"""


class LocalServer:
    """One ClickHouse server process with its data, config and logs under `root`.

    `host` is the loopback address it listens on: servers on 127.0.0.1 and 127.0.0.2 can share port numbers,
    as the hosts of a real cluster do. `extra_config` is XML added to its config (a `<remote_servers>`).
    """

    def __init__(
        self,
        root: Path,
        http_port: int = 0,
        tcp_port: int = 0,
        password: str = DEFAULT_PASSWORD,
        extra_config: str = "",
        host: str = "127.0.0.1",
    ) -> None:
        self.root = Path(root).resolve()
        self.host = host
        self.password = password
        self._wanted = (http_port, tcp_port)
        self._extra_config = extra_config
        self._process: subprocess.Popen[bytes] | None = None
        self.http_port = 0
        self.tcp_port = 0

    @property
    def http_url(self) -> str:
        """`http://pipelines:<password>@127.0.0.1:<port>/default`."""
        return f"http://{USER}:{quote(self.password, safe='')}@{self.host}:{self.http_port}/default"

    @property
    def native_url(self) -> str:
        """`clickhouse://pipelines:<password>@127.0.0.1:<port>/default`."""
        return f"clickhouse://{USER}:{quote(self.password, safe='')}@{self.host}:{self.tcp_port}/default"

    def start(self, timeout: float = 60.0) -> LocalServer:
        """Start the process and wait until both ports are published."""
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "backups").mkdir(exist_ok=True)
        config = _config(self.host, *self._wanted, self.password, self.root, self._extra_config)
        (self.root / "config.xml").write_text(config)
        ports = self.root / "ports.tsv"
        ports.unlink(missing_ok=True)
        (self.root / "ports.tsv.tmp").unlink(missing_ok=True)
        log = (self.root / "server.log").open("ab")
        self._process = subprocess.Popen(
            [sys.executable, "-c", _SERVE, str(self.root / "data")],
            cwd=self.root,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        tmp = self.root / "ports.tsv.tmp"
        while not (tmp.exists() and tmp.read_text().strip()):
            if self._process.poll() is not None:
                raise RuntimeError(f"ClickHouse server exited: {self.log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"ClickHouse server did not listen within {timeout:.0f}s: {self.log_tail()}")
            time.sleep(0.05)
        tcp, http = tmp.read_text().split()
        self.tcp_port, self.http_port = int(tcp), int(http)
        tmp.replace(ports)
        return self

    def log_tail(self) -> str:
        """The last lines the server process wrote."""
        path = self.root / "server.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""

    def stop(self) -> None:
        """Stop the process (SIGTERM, then SIGKILL after 10 s)."""
        if self._process is None or self._process.poll() is not None:
            return
        os.killpg(self._process.pid, signal.SIGTERM)
        try:
            self._process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self._process.pid, signal.SIGKILL)
            self._process.wait()

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> None:
    """Serve until Ctrl-C, printing the URLs."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, required=True, help="folder for config, data and logs")
    parser.add_argument("--http-port", type=int, default=8123)
    parser.add_argument("--tcp-port", type=int, default=9000)
    parser.add_argument("--password", default=os.environ.get("CLICKHOUSE_PASSWORD", DEFAULT_PASSWORD))
    args = parser.parse_args(argv)
    # The server runs in a session of its own: stopping this command (`kill`, Ctrl-C, even when a script
    # started it with `&`, which ignores SIGINT) must stop it too, or it keeps its ports and data folder.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with LocalServer(args.root, args.http_port, args.tcp_port, args.password) as server:
        print(f"CLICKHOUSE_URL={server.http_url}")
        print(f"CLICKHOUSE_URL={server.native_url}", flush=True)
        try:
            while server._process is not None and server._process.poll() is None:
                time.sleep(1)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
