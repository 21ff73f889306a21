"""The layout holds: layers and independence as pyproject's import-linter contracts say, short modules, and
team locations that load on their own when another team's setting is broken."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import dags
from dags.common import PROJECT_ROOT

LOCATIONS = ("shared", "revenue_analytics", "web_analytics", "data_exports", "data_platform")
MAX_MODULE_LINES = 500


def test_import_contracts_are_kept() -> None:
    result = subprocess.run(
        [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports; sys.exit(lint_imports())"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "broken" in result.stdout and "0 broken" in result.stdout


def test_pytest_silences_exactly_the_dagster_notices_the_project_does() -> None:
    """Only the listed notices, by message, in dags/__init__.py and (pytest resets filters) in pyproject.toml."""
    import tomllib

    ini = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    silenced = [entry.split(":", 1)[1] for entry in ini["filterwarnings"] if entry.startswith("ignore:")]
    assert silenced == list(dags.PROJECT_BETA_NOTICES)
    assert all(entry.count(":") == 1 for entry in ini["filterwarnings"]), "no category-wide filter"


def test_no_production_module_is_longer_than_the_house_allows() -> None:
    production = [path for path in (PROJECT_ROOT / "dags").rglob("*.py") if "tests" not in path.parts]
    too_long = {
        str(path.relative_to(PROJECT_ROOT)): lines
        for path in production
        if (lines := len(path.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert not too_long, f"split these modules by concern: {too_long}"


def load_each_location(environment: dict[str, str], tmp_path: Path) -> dict[str, str]:
    """Import every location in a fresh process with ``environment``; what each one's import said ('ok' or
    its error), as a user would see it in `dagster dev -w workspace.yaml`."""
    script = textwrap.dedent(
        f"""
        import importlib, json, warnings
        warnings.simplefilter("ignore")
        outcome = {{}}
        for name in {list(LOCATIONS)!r}:
            try:
                importlib.import_module(f"dags.locations.{{name}}").defs.resolve_asset_graph()
                outcome[name] = "ok"
            except Exception as error:
                outcome[name] = f"{{type(error).__name__}}: {{error}}"
        print(json.dumps(outcome))
        """
    )
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "DAGSTER_HOME": str(tmp_path), **environment}
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=180
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    ("variable", "value", "broken_locations"),
    [
        ("DAGSTER_WEB_PREAGGREGATED_MAX_PARTITIONS_PER_RUN", "abc", {"web_analytics"}),
        ("EXCHANGE_RATE_SOURCE", "bogus", {"revenue_analytics"}),
        # Data deletion reads the export settings when its run starts: backups and restores never depend on them.
        ("EXPORT_WRITE_METHOD", "bogus", {"data_exports"}),
        ("CLICKHOUSE_BACKUP_URL", "gs://our-backups/clickhouse", {"data_platform"}),
        # Deletion and retention settings are read when their step runs: every location loads.
        ("DATA_DELETION_MAX_WAIT_HOURS", "soon", set()),
        ("CLICKHOUSE_BACKUP_RETENTION_DAYS", "1000000000", set()),
    ],
)
def test_a_broken_setting_fails_only_its_teams_location_and_names_the_variable(
    variable: str, value: str, broken_locations: set[str], tmp_path: Path
) -> None:
    outcome = load_each_location({variable: value}, tmp_path)
    for broken_location in broken_locations:
        assert variable in outcome[broken_location] and repr(value) in outcome[broken_location]
    assert {name: said for name, said in outcome.items() if name not in broken_locations} == {
        name: "ok" for name in LOCATIONS if name not in broken_locations
    }


def test_a_broken_shared_setting_names_its_variable(tmp_path: Path) -> None:
    outcome = load_each_location({"CLICKHOUSE_LOCK_TIMEOUT_SECONDS": "abc"}, tmp_path)
    for said in outcome.values():
        assert "CLICKHOUSE_LOCK_TIMEOUT_SECONDS must be a number of seconds greater than 0, got 'abc'" in said
