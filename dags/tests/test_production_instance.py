"""The production instance (deploy/dagster.yaml): valid as written, and its Postgres storage really works.

A real PostgreSQL 15 (Debian's ``postgresql`` package, which bin/test installs) is started on its own
loopback port and data folder; an asset is materialized on an instance built from the deploy file's
storage section. The Kubernetes run launcher cannot run here, so runs use the default launcher and the
launcher's configuration is checked against dagster-k8s' own schema.
"""

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from dagster import DagsterInstance, DagsterRunStatus, materialize
from dagster._config import validate_config
from dagster._core.instance.config import dagster_instance_config

from dags.common import PROJECT_ROOT, ClickHouseResource
from dags.events import demo_events
from dags.tests.conftest import PostgresServer

DEPLOY_DIR = PROJECT_ROOT / "deploy"


def deploy_config() -> dict:
    return yaml.safe_load((DEPLOY_DIR / "dagster.yaml").read_text())


def test_the_deploy_instance_config_is_valid_for_dagster_and_dagster_k8s() -> None:
    config, _ = dagster_instance_config(str(DEPLOY_DIR))  # the whole file against Dagster's instance schema

    postgres_db = config["storage"]["postgres"]["postgres_db"]
    assert postgres_db["scheme"] == "postgresql+psycopg2"
    assert all(isinstance(postgres_db[key], dict) and "env" in postgres_db[key] for key in ("password", "username"))

    launcher = config["run_launcher"]
    assert (launcher["module"], launcher["class"]) == ("dagster_k8s", "K8sRunLauncher")
    from dagster_k8s import K8sRunLauncher

    result = validate_config(K8sRunLauncher.config_type(), launcher["config"])
    assert result.success, result.errors

    # Production queues runs with the same limits as the local instance.
    local = yaml.safe_load((PROJECT_ROOT / "dagster.yaml").read_text())
    assert config["run_coordinator"]["class"] == "QueuedRunCoordinator"
    # Production holds runs back exactly as the local instance does: the same run limits and pools.
    assert (
        config["concurrency"]["runs"]["tag_concurrency_limits"]
        == local["concurrency"]["runs"]["tag_concurrency_limits"]
    )
    assert config["concurrency"]["pools"] == local["concurrency"]["pools"]


@pytest.fixture
def postgres_instance(
    postgres: PostgresServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[DagsterInstance]:
    """An instance with the deploy file's storage (and queue), the default run launcher instead of Kubernetes."""
    config = deploy_config()
    del config["run_launcher"]
    config["run_monitoring"].pop("max_resume_run_attempts")  # resuming a run needs the Kubernetes launcher
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    for name, value in {
        "DAGSTER_PG_HOST": "127.0.0.1",
        "DAGSTER_PG_PORT": str(postgres.port),
        "DAGSTER_PG_DB": postgres.database,
        "DAGSTER_PG_USERNAME": postgres.user,
        "DAGSTER_PG_PASSWORD": "",
    }.items():
        monkeypatch.setenv(name, value)
    with DagsterInstance.from_config(str(home)) as instance:
        yield instance


def test_an_asset_materializes_on_the_postgres_backed_instance(
    postgres_instance: DagsterInstance, postgres: PostgresServer, clickhouse: ClickHouseResource
) -> None:
    from dagster_postgres import PostgresRunStorage

    assert isinstance(postgres_instance.run_storage, PostgresRunStorage)
    result = materialize(
        [demo_events],
        partition_key="2024-03-15",
        resources={"clickhouse": clickhouse},
        run_config={"ops": {"demo_events": {"config": {"events_per_day": 500}}}},
        instance=postgres_instance,
    )
    assert result.success

    # The run, its events and the asset's materialization are in PostgreSQL, where the UI will read them.
    with postgres.connect() as connection, connection.cursor() as cursor:
        cursor.execute("SELECT status FROM runs WHERE run_id = %s", (result.run_id,))
        assert cursor.fetchone() == (DagsterRunStatus.SUCCESS.value,)
        cursor.execute(
            "SELECT count(*) FROM event_logs WHERE run_id = %s AND dagster_event_type = 'ASSET_MATERIALIZATION'",
            (result.run_id,),
        )
        assert cursor.fetchone() == (1,)

    # A fresh instance on the same database (another pod, a restart) sees the same history.
    with DagsterInstance.from_config(str(Path(postgres_instance.root_directory))) as again:
        latest = again.get_latest_materialization_event(demo_events.key)
        assert latest is not None and latest.run_id == result.run_id
        assert latest.asset_materialization.partition == "2024-03-15"
    with clickhouse.get_client() as ch:
        assert ch.command("SELECT count() FROM events WHERE toDate(timestamp) = '2024-03-15'") == 500
