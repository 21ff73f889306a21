"""``bin/dev`` stops: after Ctrl-C or SIGTERM the UI, the daemon and every code server are gone within seconds,
also when it was started with ``&`` from a script (which leaves SIGINT ignored in it)."""

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from dags.common import PROJECT_ROOT
from dags.tests.conftest import free_port, wait_until

pytestmark = pytest.mark.slow

STOP_SECONDS = 10


@dataclass
class Dev:
    process: subprocess.Popen
    log_path: Path

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]


def session_members(session: int) -> list[str]:
    """Every live process of the session, as its command line (zombies waiting for their parent left out)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            state, _ppid, _pgrp, sid = (entry / "stat").read_text().rsplit(")", 1)[1].split()[:4]
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue  # it ended while we looked
        if int(sid) == session and state != "Z":
            members.append(f"{entry.name}: {command[:160]}")
    return members


@pytest.fixture
def dev(tmp_path: Path) -> Iterator[Dev]:
    """bin/dev on a free port with a fresh DAGSTER_HOME, started as `bin/dev &` from a script starts it: in a
    session of its own, with SIGINT ignored; it answers HTTP 200 before the test starts."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").symlink_to(PROJECT_ROOT / "dagster.yaml")
    env = {**os.environ, "DAGSTER_HOME": str(home), "CLICKHOUSE_URL": f"chdb://{tmp_path / 'clickhouse'}"}
    env.pop("SLACK_BOT_TOKEN", None)
    port = free_port()
    log_path = tmp_path / "dev.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [str(PROJECT_ROOT / "bin" / "dev"), "-h", "127.0.0.1", "-p", str(port)],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
        )
    started = Dev(process, log_path)
    try:

        def answers() -> bool:
            if process.poll() is not None:
                raise RuntimeError(f"bin/dev exited ({process.returncode}):\n{started.log_tail()}")
            return requests.get(f"http://127.0.0.1:{port}/server_info", timeout=5).status_code == 200

        wait_until(answers, 180, "the Dagster UI to answer", interval=1)
        yield started
    finally:
        if session_members(process.pid):
            os.killpg(process.pid, signal.SIGKILL)  # a failed test must not leave a UI running
            for member in session_members(process.pid):
                os.kill(int(member.split(":")[0]), signal.SIGKILL)
        process.wait(timeout=30)


@pytest.mark.parametrize(
    "signum, to_group",
    [(signal.SIGINT, False), (signal.SIGTERM, False), (signal.SIGINT, True)],
    ids=["sigint", "sigterm", "ctrl-c-to-the-group"],
)
def test_bin_dev_stops_the_ui_daemon_and_code_servers_within_seconds(
    dev: Dev, signum: signal.Signals, to_group: bool
) -> None:
    session = dev.process.pid
    members = session_members(session)
    assert any("dagster_webserver" in member for member in members), members
    assert sum("code-server" in member for member in members) >= 5, members  # one per team location

    sent = time.monotonic()
    if to_group:
        os.killpg(dev.process.pid, signum)
    else:
        os.kill(dev.process.pid, signum)
    try:
        dev.process.wait(timeout=STOP_SECONDS)
    except subprocess.TimeoutExpired:
        pytest.fail(f"bin/dev still runs {STOP_SECONDS}s after {signum.name}:\n{dev.log_tail()}")
    left = session_members(session)
    while left and time.monotonic() - sent < STOP_SECONDS:
        time.sleep(0.2)
        left = session_members(session)

    assert left == [], f"still alive {time.monotonic() - sent:.0f}s after {signum.name}: {left}"
