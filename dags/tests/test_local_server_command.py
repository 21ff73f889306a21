"""`python -m dags.clickhouse.local_server`, as README's "Run on a ClickHouse server" starts it."""

import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from dags.common import PROJECT_ROOT
from dags.tests.conftest import free_port, wait_until


def accepts_connections(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_stopping_the_command_stops_the_server_it_started(tmp_path: Path, stop_signal: signal.Signals) -> None:
    http_port, tcp_port = free_port(), free_port()
    command = [sys.executable, "-m", "dags.clickhouse.local_server", "--root", str(tmp_path / "server")]
    command += ["--http-port", str(http_port), "--tcp-port", str(tcp_port)]
    # As `command &` in a script starts it: SIGINT ignored (Ctrl-C and `kill -INT` must still stop it).
    process = subprocess.Popen(
        command,
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().startswith("CLICKHOUSE_URL=http://pipelines:")
        wait_until(lambda: accepts_connections(tcp_port), 30, "the server's native port")

        process.send_signal(stop_signal)
        process.wait(30)
        wait_until(lambda: not accepts_connections(tcp_port) and not accepts_connections(http_port), 30, "no port")
    finally:
        if process.poll() is None:
            process.kill()
