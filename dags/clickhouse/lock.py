"""The embedded engine's one-process-per-data-path rule, kept by an advisory file lock."""

from __future__ import annotations

import fcntl
import os
import threading
import time
from pathlib import Path

from dagster import get_dagster_logger

from dags.clickhouse.errors import ClickHouseBusyError, ClickHouseError


class EmbeddedEngineLock:
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
