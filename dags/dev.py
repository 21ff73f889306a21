"""Run `dagster dev` so that Ctrl-C or SIGTERM stops all of it within seconds: `python -m dags.dev <command>`
(what `bin/dev` calls; standard library only, so it starts at once).

Why a supervisor:

- Started with `&` from a script, a process inherits SIGINT ignored, and `dagster dev` maps SIGTERM to
  whatever SIGINT does: it then ignores both, and so do its code servers.
- Ctrl-C in a terminal (or a signal to the whole process group) reaches every code server at the same moment as
  `dagster dev`, whose code server manager restarts a code server it sees exit before its own shutdown
  starts; that new one lives on until its heartbeat times out (45 s).

So `dagster dev` runs in a process group of its own, with SIGINT back to its default; the first SIGINT or
SIGTERM here becomes one SIGINT to `dagster dev` alone (its clean shutdown of the UI, daemon and code servers);
whatever of its group is still alive after `STOP_SECONDS`, or at a second signal, is killed.
"""

import ctypes
import os
import signal
import subprocess
import sys
import time
from types import FrameType

STOP_SECONDS = 6.0  # dagster dev stops its UI, daemon and code servers in about 4 s
KILL_GRACE_SECONDS = 1.0
PR_SET_PDEATHSIG = 1


def _in_own_group() -> None:
    """In the child before exec: SIGINT back to its default, and SIGINT when this supervisor dies (even killed)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGINT)
    except (OSError, AttributeError):
        pass  # not Linux: a killed supervisor leaves dagster dev to its own devices


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _kill_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        pass


def supervise(command: list[str]) -> int:
    """Run `command` in its own process group until it exits or a signal asks this process to stop."""
    stopping: list[int] = []

    def on_signal(signum: int, _: FrameType | None) -> None:
        stopping.append(signum)

    # Installed before the child starts, so no signal falls between; Python may install a handler for a signal
    # ignored at its start, which bash cannot.
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    child = subprocess.Popen(command, process_group=0, preexec_fn=_in_own_group)  # noqa: PLW1509
    pgid = child.pid
    stop_sent_at: float | None = None
    while True:
        try:
            code = child.wait(timeout=0.2)
        except subprocess.TimeoutExpired:
            code = None
        if code is not None and stop_sent_at is None and not stopping:
            break  # it ended on its own (an error it reported): its group gets the same clean-up below
        if code is not None or (stop_sent_at is not None and time.monotonic() - stop_sent_at > STOP_SECONDS):
            break
        if stopping and stop_sent_at is None:
            stop_sent_at = time.monotonic()
            os.kill(child.pid, signal.SIGINT)
        elif len(stopping) > 1:
            break  # asked twice: stop waiting
    if _group_alive(pgid):
        _kill_group(pgid, signal.SIGTERM)
        deadline = time.monotonic() + KILL_GRACE_SECONDS
        while _group_alive(pgid) and time.monotonic() < deadline:
            time.sleep(0.05)
        _kill_group(pgid, signal.SIGKILL)
    if child.poll() is None:
        child.wait()
    return 0 if stopping else (child.returncode or 0)


def main() -> None:
    if len(sys.argv) < 2:
        sys.exit("usage: python -m dags.dev <command> [args...]")
    sys.exit(supervise(sys.argv[1:]))


if __name__ == "__main__":
    main()
