"""The data deletion jobs' settings, read from the environment when the data platform location loads."""

from dataclasses import dataclass

from dags.common import UINT32_MAX, env_positive_int, env_positive_seconds

# A century: the wait is subtracted from now() in SQL and in Python, which both stop at a few thousand years.
MAX_WAIT_HOURS = 100 * 366 * 24


@dataclass(frozen=True)
class DeletionSettings:
    max_wait_hours: int  # DATA_DELETION_MAX_WAIT_HOURS: a pending request older than this triggers a run
    mutation_timeout_seconds: float  # DATA_DELETION_MUTATION_TIMEOUT_SECONDS: longest wait for one delete
    max_requests_per_run: int  # DATA_DELETION_MAX_REQUESTS_PER_RUN: requests taken by one run, oldest first


def load_deletion_settings() -> DeletionSettings:
    return DeletionSettings(
        max_wait_hours=env_positive_int("DATA_DELETION_MAX_WAIT_HOURS", 72, MAX_WAIT_HOURS),
        mutation_timeout_seconds=env_positive_seconds("DATA_DELETION_MUTATION_TIMEOUT_SECONDS", 3600.0),
        max_requests_per_run=env_positive_int("DATA_DELETION_MAX_REQUESTS_PER_RUN", 100, UINT32_MAX),
    )
