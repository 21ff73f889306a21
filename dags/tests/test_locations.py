"""Every code location loads, and shows the assets, jobs and schedules its team expects."""

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from dagster import AssetKey, Definitions

from dags.common import PROJECT_ROOT, JobOwners, owner_of_asset

# What each team's location must show. Add to it when a location gains definitions.
EXPECTED = {
    "shared": {"assets": {"demo_events"}, "jobs": set(), "schedules": set()},
    "revenue_analytics": {
        "assets": {
            "daily_exchange_rates",
            "daily_exchange_rates_in_clickhouse",
            "hourly_exchange_rates",
            "hourly_exchange_rates_in_clickhouse",
        },
        "jobs": {"daily_exchange_rates_job", "hourly_exchange_rates_job"},
        "schedules": {"daily_exchange_rates_schedule", "hourly_exchange_rates_schedule"},
    },
    "web_analytics": {
        "assets": {"web_pre_aggregated_stats", "web_pre_aggregated_bounces"},
        "jobs": {"web_analytics_daily_job"},
        "schedules": {"web_analytics_yesterday_schedule", "web_analytics_today_schedule"},
    },
    "data_exports": {
        "assets": {
            "events_export",
            "web_pre_aggregated_stats_export",
            "web_pre_aggregated_bounces_export",
            # the examples in the shipped batch_exports.yaml
            "batch_exports/team_1_pageviews",
            "batch_exports/team_2_events",
        },
        "jobs": {
            "events_export_job",
            "web_pre_aggregated_exports_job",
            "batch_export_team_1_pageviews_job",
            "batch_export_team_2_events_job",
            # each batch export's "check destination" job
            "batch_export_team_1_pageviews_check_destination",
            "batch_export_team_2_events_check_destination",
        },
        "schedules": {
            "events_export_daily_schedule",
            "web_pre_aggregated_exports_daily_schedule",
            "batch_export_team_1_pageviews_schedule",
            "batch_export_team_2_events_schedule",
        },
    },
    "data_platform": {
        "assets": set(),
        "jobs": {
            "clickhouse_backup_job",
            "clickhouse_restore_job",
            "data_deletion_job",
            "data_deletion_dry_run_job",
            "request_data_deletion",
            "squash_person_overrides",
            "squash_person_overrides_cleanup",
        },
        "schedules": {
            "clickhouse_full_backup_schedule",
            "clickhouse_incremental_backup_schedule",
            "data_deletion_weekly_schedule",
        },
    },
}


def load_location(name: str) -> Definitions:
    return importlib.import_module(f"dags.locations.{name}").defs


def user_jobs(defs: Definitions) -> set[str]:
    return {job.name for job in defs.resolve_all_job_defs() if not job.name.startswith("__")}


@pytest.mark.parametrize("location", sorted(EXPECTED))
def test_location_loads_with_its_assets_jobs_and_schedules(location: str) -> None:
    defs = load_location(location)
    assets = {key.to_user_string() for key in defs.resolve_asset_graph().get_all_asset_keys()}
    assert assets >= EXPECTED[location]["assets"]
    assert user_jobs(defs) >= EXPECTED[location]["jobs"]
    assert {schedule.name for schedule in defs.schedules or []} >= EXPECTED[location]["schedules"]


@pytest.mark.parametrize("location", sorted(EXPECTED))
def test_every_asset_and_job_has_an_owner(location: str) -> None:
    defs = load_location(location)
    owners = {owner.value for owner in JobOwners}
    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        if node.is_external:
            continue
        assert node.tags.get("owner") in owners, f"asset {key.to_user_string()} has no owner tag"
        # Alerts learn owners from this map (they never import other locations): it must agree with the tags.
        assert owner_of_asset(key.path) == node.tags["owner"], f"ASSET_OWNERS disagrees on {key.to_user_string()}"
        # The same team as Dagster's owners, which the catalog filters by.
        assert node.owners == JobOwners(node.tags["owner"]).asset_owners(), f"{key.to_user_string()}'s owners"
    for job in defs.resolve_all_job_defs():
        if not job.name.startswith("__"):
            assert job.tags.get("owner") in owners, f"job {job.name} has no owner tag"


def test_the_raw_events_are_an_asset_upstream_of_every_asset_that_reads_them() -> None:
    from dags.definitions import defs

    graph = defs.resolve_asset_graph()
    events = graph.get(AssetKey("events"))
    assert not events.is_materializable and events.owners == ["team:platform"]
    assert events.parent_keys == {AssetKey("demo_events")}
    readers = {"web_pre_aggregated_stats", "web_pre_aggregated_bounces", "events_export"}
    # Every batch export of the events dataset (batch_exports.yaml declares two).
    readers |= {
        key.to_user_string()
        for key in graph.get_all_asset_keys()
        if key.path[0] == "batch_exports" and graph.get(key).metadata.get("dataset") == "events"
    }
    assert len(readers) >= 5
    assert {key.to_user_string() for key in events.child_keys} == readers


def test_merged_definitions_show_every_location() -> None:
    from dags.definitions import defs

    merged = {key.to_user_string() for key in defs.resolve_asset_graph().get_all_asset_keys()}
    for location in EXPECTED:
        keys = {key.to_user_string() for key in load_location(location).resolve_asset_graph().get_all_asset_keys()}
        assert keys <= merged, f"{location} assets missing from dags.definitions"
    assert user_jobs(defs) >= set().union(*(spec["jobs"] for spec in EXPECTED.values()))


def test_workspace_lists_every_location_file() -> None:
    workspace = yaml.safe_load((PROJECT_ROOT / "workspace.yaml").read_text())
    modules = {entry["python_module"]["module_name"] for entry in workspace["load_from"]}
    files = {
        f"dags.locations.{path.stem}"
        for path in Path(PROJECT_ROOT / "dags" / "locations").glob("*.py")
        if path.stem != "__init__"
    }
    assert modules == files == {f"dags.locations.{name}" for name in EXPECTED}
    from dags.definitions import FAILED_LOCATIONS, LOCATION_OWNERS

    # `-m dags.definitions` loads each of them (one that fails stands in as `<location>_failed_to_load`).
    assert {f"dags.locations.{name}" for name in LOCATION_OWNERS} == modules and FAILED_LOCATIONS == {}


def test_instance_config_limits_web_analytics_to_one_run() -> None:
    config = yaml.safe_load((PROJECT_ROOT / "dagster.yaml").read_text())
    assert config["run_coordinator"]["class"] == "QueuedRunCoordinator"
    limits = config["concurrency"]["runs"]["tag_concurrency_limits"]
    assert {"key": "dagster/job_name", "value": "web_analytics_daily_job", "limit": 1} in limits
    # Pools bind every run of their assets (asset backfills too): one run holds the pool until it ends.
    assert config["concurrency"]["pools"] == {"granularity": "run", "default_limit": 1}
    from dagster._core.instance.config import dagster_instance_config

    dagster_instance_config(str(PROJECT_ROOT))  # valid for Dagster as a whole (run limits in one place only)
    assert config["nux"] == {"enabled": False} and config["telemetry"] == {"enabled": False}
    assert (PROJECT_ROOT / ".dagster_home" / "dagster.yaml").resolve() == (PROJECT_ROOT / "dagster.yaml").resolve()


@pytest.mark.parametrize("location", sorted(EXPECTED))
def test_every_schedule_and_sensor_says_what_it_does(location: str) -> None:
    repository = load_location(location).get_repository_def()
    for definition in [*repository.schedule_defs, *repository.sensor_defs]:
        assert definition.description and len(definition.description) > 20, f"{definition.name} has no description"


DEFAULT_STATUSES = """
import json
from dags.definitions import defs
repository = defs.get_repository_def()
print(json.dumps({d.name: d.default_status.value for d in [*repository.schedule_defs, *repository.sensor_defs]}))
"""


def default_statuses(**env: str) -> dict[str, str]:
    """What each schedule and sensor does before anyone touches it, as ``dagster dev`` would load it."""
    environment = {key: value for key, value in os.environ.items() if key not in ("CLICKHOUSE_URL", "DEBUG")}
    loaded = subprocess.run(
        [sys.executable, "-c", DEFAULT_STATUSES],
        env={**environment, **env},
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    return json.loads(loaded.stdout.strip().splitlines()[-1])


def test_the_web_analytics_and_batch_export_schedules_run_by_default_only_on_a_clickhouse_server() -> None:
    web_analytics = {"web_analytics_yesterday_schedule", "web_analytics_today_schedule"}
    never_by_default = {
        "daily_exchange_rates_schedule",
        "hourly_exchange_rates_schedule",
        "events_export_daily_schedule",
        "web_pre_aggregated_exports_daily_schedule",
    }
    sensors = {
        "slack_on_run_failure",
        "run_status_started",
        "run_status_success",
        "run_status_failure",
        "run_status_canceled",
        "web_analytics_pool_limit_sensor",
    }
    local = default_statuses()
    assert {name for name, status in local.items() if status == "STOPPED"} >= web_analytics | never_by_default
    assert {name for name, status in local.items() if status == "RUNNING"} >= sensors
    server = default_statuses(CLICKHOUSE_URL="http://default:@127.0.0.1:8123/default")
    assert {name for name, status in server.items() if status == "RUNNING"} >= sensors | web_analytics
    assert {name for name, status in server.items() if status == "STOPPED"} >= never_by_default
    # The example batch exports of batch_exports.yaml: on a laptop no events arrive, so they would only write
    # empty files every hour or day; on a server, declaring one is asking for it.
    batch_exports = {"batch_export_team_1_pageviews_schedule", "batch_export_team_2_events_schedule"}
    assert {name: local[name] for name in batch_exports} == dict.fromkeys(batch_exports, "STOPPED")
    assert {name: server[name] for name in batch_exports} == dict.fromkeys(batch_exports, "RUNNING")
    # Nothing else changes with the engine.
    changing = web_analytics | batch_exports
    assert {name: status for name, status in server.items() if name not in changing} == {
        name: status for name, status in local.items() if name not in changing
    }
