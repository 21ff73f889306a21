"""Every team location merged into one, for `dagster dev -m dags.definitions` and the CLI.

Each location is loaded on its own: one that fails (a broken setting, an invalid `BATCH_EXPORTS_FILE`) is
left out with a warning and replaced by a job `<location>_failed_to_load` whose run fails saying why, so the
other teams' jobs (backups, restores, deletions) still load and run, as with `-w workspace.yaml`.
"""

import importlib

from dagster import Definitions, Failure, JobDefinition, OpExecutionContext, get_dagster_logger, job, op

from dags.common import JobOwners

# Who answers for each location, so the stand-in job of a broken one reaches its team's alerts.
LOCATION_OWNERS = {
    "shared": JobOwners.TEAM_PLATFORM,
    "revenue_analytics": JobOwners.TEAM_REVENUE_ANALYTICS,
    "web_analytics": JobOwners.TEAM_WEB_ANALYTICS,
    "data_exports": JobOwners.TEAM_DATA_EXPORTS,
    "data_platform": JobOwners.TEAM_PLATFORM,
}


def failed_to_load_job(location: str, problem: str) -> JobDefinition:
    """A job that stands in the UI for a location that did not load: its run fails with the problem."""
    message = f"The {location} location did not load, so its jobs are missing: {problem}"

    @op(name=f"{location}_load_failure", description=message)
    def report_load_failure(context: OpExecutionContext) -> None:
        raise Failure(description=message, allow_retries=False)

    @job(name=f"{location}_failed_to_load", description=message, tags=LOCATION_OWNERS[location].tags())
    def stand_in() -> None:
        report_load_failure()

    return stand_in


def load_location(location: str) -> tuple[Definitions, str | None]:
    """The location's definitions and None, or a stand-in job and the problem that kept the location out."""
    try:
        defs = importlib.import_module(f"dags.locations.{location}").defs
        defs.resolve_all_job_defs()  # definitions built lazily fail here rather than in the merged location
        return defs, None
    except Exception as error:
        problem = f"{type(error).__name__}: {error}"
        get_dagster_logger("dags.definitions").warning(f"Leaving out the {location} location: {problem}")
        return Definitions(jobs=[failed_to_load_job(location, problem)]), problem


_LOADED = {location: load_location(location) for location in LOCATION_OWNERS}
# The locations left out, with why: for callers that must not pass over them quietly (bin/demo).
FAILED_LOCATIONS = {location: problem for location, (_, problem) in _LOADED.items() if problem is not None}


def loaded_locations() -> dict[str, Definitions]:
    """The definitions of every location that loaded, by location name."""
    return {location: location_defs for location, (location_defs, problem) in _LOADED.items() if problem is None}


defs = Definitions.merge(*(location_defs for location_defs, _ in _LOADED.values()))
