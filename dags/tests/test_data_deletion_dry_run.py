"""A dry run is unmistakable: ``data_deletion_dry_run_job`` (no config that could make it real) and every dry run
of ``data_deletion_job`` carry the ``dry_run: "true"`` tag and say "Dry run: nothing was changed.", and nothing
changes: no event, no pre-aggregate part, no file, no request status."""

from pathlib import Path

import pytest
from dagster import DagsterInstance, DagsterInvalidConfigError, ExecuteInProcessResult

from dags.common import ClickHouseResource
from dags.locations import data_platform
from dags.management.deletion.jobs import data_deletion_dry_run_job
from dags.tests.test_data_deletion import (
    local_exports,
    output_metadata,
    person_deletion_requested,
    request_rows,
    run_deletion,
    snapshot,
)

pytestmark = pytest.mark.end_to_end  # see conftest: embedded only


@pytest.fixture(autouse=True)
def no_batch_exports(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The project's own batch_exports.yaml writes under the developer's .dagster_home: none here."""
    path = tmp_path / "no_batch_exports.yaml"
    path.write_text("exports: []\n")
    monkeypatch.setenv("BATCH_EXPORTS_FILE", str(path))


def run_tags(instance: DagsterInstance, result: ExecuteInProcessResult) -> dict[str, str]:
    """The tags the Runs list shows for the run."""
    run = instance.get_run_by_id(result.run_id)
    assert run is not None
    return dict(run.tags)


def logged(instance: DagsterInstance, result: ExecuteInProcessResult) -> list[str]:
    return [entry.user_message for entry in instance.all_logs(result.run_id)]


def test_the_dry_run_job_is_tagged_says_so_and_changes_nothing(
    clickhouse: ClickHouseResource, tmp_path: Path, dagster_instance: DagsterInstance
) -> None:
    exports, team, person, _ = person_deletion_requested(clickhouse, tmp_path)
    with clickhouse.get_client() as client:
        their_rows = client.command(
            "SELECT count() FROM events WHERE person_id = toUUID({person:String})", {"person": person}
        )
        before_requests = request_rows(client)
    before = snapshot(clickhouse, exports)

    result = data_deletion_dry_run_job.execute_in_process(
        resources={"clickhouse": clickhouse, "export_destination": exports.resource},
        instance=dagster_instance,
        raise_on_error=False,
    )

    assert result.success
    assert run_tags(dagster_instance, result)["dry_run"] == "true"
    assert snapshot(clickhouse, exports) == before  # events, parts, pre-aggregates, files: byte for byte
    with clickhouse.get_client() as client:
        assert request_rows(client) == before_requests
    assert [row["status"] for row in before_requests] == ["pending"]
    summary = output_metadata(result, "plan_deletions", "report")["summary"]
    assert summary.startswith("Dry run: nothing was changed. Would delete ")
    assert f"{their_rows:,} rows for 1 request(s)" in summary
    assert summary in logged(dagster_instance, result)
    skipped = {event.node_name for event in result.all_events if event.is_step_skipped}
    assert {"delete_requested_events", "verify_and_complete"} <= skipped


def test_the_dry_run_job_is_a_dry_run_from_launch_and_cannot_be_configured_into_a_real_run(
    clickhouse: ClickHouseResource, tmp_path: Path, dagster_instance: DagsterInstance
) -> None:
    # The job as the data platform location serves it to the UI: its tags go on every run from launch, so a
    # dry run still queued shows the tag too (the real job's runs get it only when their first step starts).
    listed = data_platform.defs.resolve_job_def("data_deletion_dry_run_job")
    assert listed.tags["dry_run"] == "true"
    with pytest.raises(DagsterInvalidConfigError):
        data_deletion_dry_run_job.execute_in_process(
            run_config={"ops": {"plan_deletions": {"config": {"dry_run": False}}}},
            resources={"clickhouse": clickhouse, "export_destination": local_exports(tmp_path).resource},
            instance=dagster_instance,
        )


def test_a_dry_run_of_the_real_job_is_tagged_and_a_real_run_is_not(
    clickhouse: ClickHouseResource, tmp_path: Path, dagster_instance: DagsterInstance
) -> None:
    exports = local_exports(tmp_path / "exports")
    dry = run_deletion(clickhouse, exports, dagster_instance, dry_run=True)
    real = run_deletion(clickhouse, exports, dagster_instance)

    assert dry.success and real.success
    assert run_tags(dagster_instance, dry)["dry_run"] == "true"
    assert "dry_run" not in run_tags(dagster_instance, real)
    assert output_metadata(dry, "plan_deletions", "report")["summary"].startswith("Dry run: nothing was changed.")
    assert not output_metadata(real, "plan_deletions", "report")["summary"].startswith("Dry run")
