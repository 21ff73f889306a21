"""What went wrong in ClickHouse, whether trying again may help, and trying again with backoff."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import TypeVar

from dagster import Failure, get_dagster_logger

T = TypeVar("T")

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


class ClickHouseNotRetryableError(ClickHouseError, Failure):
    """A ClickHouse problem that trying again cannot fix: a malformed URL, an unknown database, refused
    credentials, a wrong statement, a server that stayed unreachable for the whole configured wait.

    It is a Dagster `Failure` with retries disallowed, so the step's retry policy does not start the same
    doomed attempt again: the run fails at once with the message, which says what to change.
    """

    def __init__(self, message: str):
        Failure.__init__(self, description=message, allow_retries=False)

    def __str__(self) -> str:
        return self.description or ""


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
    # Over native the server's trace follows "Stack trace:" on the message's own last line.
    for line in str(error).split("Stack trace", 1)[0].splitlines():
        line = line.strip()
        if line.startswith("Stack trace") or (line[:1].isdigit() and ". /" in line[:8]):
            break
        if line:
            lines.append(line)
    text = " ".join(lines).replace("Stack trace:", "").strip()
    return text[:500] or type(error).__name__


def is_transient(error: BaseException) -> bool:
    """Network trouble, an overloaded server or a held lock: worth another try after a pause."""
    if getattr(error, "worth_retrying", False):  # the cluster layer's errors say it of themselves
        return True
    if isinstance(error, ConnectionError | TimeoutError | EOFError):
        return True
    from clickhouse_connect.driver.exceptions import OperationalError
    from clickhouse_driver import errors as native_errors

    if isinstance(error, OperationalError | native_errors.NetworkError | native_errors.SocketTimeoutError):
        return True
    return _error_code(error) in TRANSIENT_ERROR_CODES


def retry_with_backoff(
    operation: Callable[[], T],
    *,
    what: str,
    attempts: int,
    base_delay: float,
    should_retry: Callable[[BaseException], bool] = is_transient,
) -> T:
    """Run `operation`; on a retryable error wait (exponential backoff with jitter) and try again."""
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
