"""Who answers for a run, learned from the run itself and the shared owner map, never by importing other
locations: a location that fails to load must not stop the alerts of the others."""

from dagster import DagsterRun

from dags.common import owner_of_asset


def run_owner(run: DagsterRun) -> str:
    """Who answers for a run: its `owner` tag (jobs carry it), else the owner of the assets it materializes.

    Materializing assets from the UI launches an ad-hoc asset job whose run has no owner tag of its own.
    Several owners come back comma-separated; no owner at all is an empty string.
    """
    if run.tags.get("owner"):
        return run.tags["owner"]
    found = {owner_of_asset(key.path) for key in run.asset_selection or ()}
    return ",".join(sorted(owner for owner in found if owner))


def location_of(run: DagsterRun) -> str:
    origin = run.remote_job_origin
    return origin.location_name if origin is not None else ""
