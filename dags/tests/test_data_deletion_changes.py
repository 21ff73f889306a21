"""A deletion is recorded on the assets it changed: each recomputed pre-aggregate day and each rewritten export
file gets a materialization of its asset and partition, naming the reason, the deletion's run and requests, so
the asset pages show that the day changed and why."""

from pathlib import Path
from typing import Any

import pytest
from dagster import AssetKey, DagsterInstance

from dags.common import ClickHouseResource
from dags.exports.manifest import DATA_FILE
from dags.tests.test_data_deletion import (
    DAYS,
    no_batch_exports,  # noqa: F401  (the autouse fixture: no batch exports here)
    person_deletion_requested,
    request_rows,
    run_deletion,
)

pytestmark = pytest.mark.end_to_end  # see conftest: embedded only unless every_engine


def deletion_records(instance: DagsterInstance, key: AssetKey) -> dict[str, dict[str, Any]]:
    """The asset's materializations recorded by a deletion, by partition: what the asset page lists."""
    records = instance.fetch_materializations(key, limit=1000).records
    found = {}
    for record in records:
        materialization = record.asset_materialization
        assert materialization is not None
        metadata = {name: value.value for name, value in materialization.metadata.items()}
        if metadata.get("reason") == "data deletion":
            found[materialization.partition] = {**metadata, "run_id": record.run_id}
    return found


def test_the_days_and_files_a_deletion_rewrote_are_recorded_on_their_assets_with_the_reason_and_run(
    clickhouse: ClickHouseResource, dagster_instance: DagsterInstance, tmp_path: Path
) -> None:
    exports, team, _, request_id = person_deletion_requested(clickhouse, tmp_path)

    result = run_deletion(clickhouse, exports, dagster_instance)

    assert result.success
    with clickhouse.get_client() as client:
        [request] = request_rows(client)
    changed_days = [day.isoformat() for day in request["days_recomputed"]]
    assert changed_days == [DAYS[1].isoformat()]
    for table in ("web_pre_aggregated_stats", "web_pre_aggregated_bounces"):
        recorded = deletion_records(dagster_instance, AssetKey(table))
        assert sorted(recorded) == changed_days, table  # the changed day, and no other
        entry = recorded[changed_days[0]]
        assert entry["run_id"] == result.run_id and entry["deletion_requests"] == [request_id]
        with clickhouse.get_client() as client:
            rows_of_team = client.command(
                f"SELECT count() FROM {table} WHERE team_id = {{team:Int64}} AND toDate(period_bucket) = {{day:Date}}",
                {"team": team, "day": DAYS[1]},
            )
        assert entry["rows_recomputed"] == rows_of_team
    for asset in ("events_export", "web_pre_aggregated_stats_export", "web_pre_aggregated_bounces_export"):
        recorded = deletion_records(dagster_instance, AssetKey(asset))
        assert sorted(recorded) == changed_days, asset
        dataset = asset.removesuffix("_export")
        assert recorded[changed_days[0]]["file"] == f"{exports.resource.url}/{dataset}/date={DAYS[1]}/{DATA_FILE}"
        assert recorded[changed_days[0]]["run_id"] == result.run_id


def test_a_dry_run_records_nothing_on_the_assets(
    clickhouse: ClickHouseResource, dagster_instance: DagsterInstance, tmp_path: Path
) -> None:
    exports, *_ = person_deletion_requested(clickhouse, tmp_path)

    assert run_deletion(clickhouse, exports, dagster_instance, dry_run=True).success

    for asset in ("web_pre_aggregated_stats", "events_export"):
        assert deletion_records(dagster_instance, AssetKey(asset)) == {}
