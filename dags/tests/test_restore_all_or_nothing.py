"""A restore over live tables swaps every table in, or none: on demo-like data with the exchange rate
dictionary, in `default` (the embedded engine's `Overlay` database; an `Atomic` one on a server) and in an
`Atomic` database of the test's own. Each test runs the real backup and restore jobs against SeaweedFS."""

import hashlib
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from dagster import DagsterInstance
from filelock import FileLock

from dags.common import PROJECT_ROOT, ClickHouseClient, ClickHouseError, ClickHouseResource
from dags.events import generate_demo_events
from dags.exchange_rate.sources import DayRates
from dags.exchange_rate.storage import write_rates
from dags.management.backups.storage import BackupStorage
from dags.tests.conftest import S3Server, server_url_with_database
from dags.tests.test_backups import backup, failure_message, object_keys, restore, storage  # noqa: F401 - a fixture
from dags.web_analytics.refresh import refresh_window
from dags.web_analytics.sql import BOUNCES, STATS

FIRST_DAY, END_DAY = date(2024, 3, 14), date(2024, 3, 16)
DEMO_TABLES = ("events", "exchange_rate", "web_pre_aggregated_bounces", "web_pre_aggregated_stats")
RATES_AT_BACKUP = {"EUR": Decimal("0.9"), "GBP": Decimal("0.8")}
RATES_AFTER = {"EUR": Decimal("1.5"), "GBP": Decimal("1.25")}


def resource_on(clickhouse: ClickHouseResource, database: str) -> ClickHouseResource:
    """The test's ClickHouse (embedded or server) with ``database`` as the deployment's database."""
    if clickhouse.url.startswith("chdb://"):
        url = re.sub(r"\?.*$", "", clickhouse.url) + f"?database={database}"
    else:
        url = server_url_with_database(clickhouse.url, database)
    return ClickHouseResource(**{**clickhouse.model_dump(), "url": url})


def rates_day(rates: dict[str, Decimal]) -> DayRates:
    return DayRates(day=FIRST_DAY, source="test", published_on=FIRST_DAY, rates=rates)


def drop_demo_objects(client: ClickHouseClient) -> None:
    client.command("DROP DICTIONARY IF EXISTS exchange_rate_dict SYNC")
    leftovers = client.query_rows(
        "SELECT name FROM system.tables WHERE database = {database:String} AND (has({tables:Array(String)}, name) "
        "OR name LIKE '%\\\\_\\\\_restore\\\\_%')",
        {"database": client.database, "tables": list(DEMO_TABLES)},
    )
    for row in leftovers:
        client.command("DROP TABLE IF EXISTS {table:Identifier} SYNC", {"table": row["name"]})


def load_demo_data(client: ClickHouseClient) -> None:
    drop_demo_objects(client)
    generate_demo_events(client, start_date=FIRST_DAY, days=2, events=2_000)
    for pre_aggregate in (STATS, BOUNCES):
        refresh_window(client, pre_aggregate, first_day=FIRST_DAY, end_day=END_DAY, run_id="demo")
    write_rates(client, [rates_day(RATES_AT_BACKUP)])


@contextmanager
def database_to_myself(clickhouse: ClickHouseResource, shared_folder: Path) -> Iterator[None]:
    """Hold the database ``clickhouse`` names against the other test processes: they share an operator's
    server (``CLICKHOUSE_TEST_URL``) and its `default`, where each process's own engines are its alone."""
    name = hashlib.sha256(re.sub(r"//[^@/]*@", "//", clickhouse.url).encode()).hexdigest()[:16]
    with FileLock(shared_folder / f"clickhouse-database-{name}.lock"):
        yield


@pytest.fixture(params=["default", "own"])
def live(
    request: pytest.FixtureRequest, clickhouse: ClickHouseResource, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ClickHouseResource]:
    """The deployment's database with demo-like data: 2,000 events over two days, both pre-aggregates of
    those days, and the exchange rates with `exchange_rate_dict` reading them. `default` is emptied after."""
    resource = clickhouse if request.param == "own" else resource_on(clickhouse, "default")
    with database_to_myself(resource, tmp_path_factory.getbasetemp().parent):
        with resource.get_client() as client:
            load_demo_data(client)
        yield resource
        with resource.get_client() as client:
            drop_demo_objects(client)


def contents(client: ClickHouseClient) -> dict[str, tuple[int, int]]:
    """Every demo table that exists: its row count and an order-independent checksum of its rows."""
    found = client.query_rows(
        "SELECT name FROM system.tables WHERE database = {database:String} AND has({tables:Array(String)}, name)",
        {"database": client.database, "tables": list(DEMO_TABLES)},
    )
    result = {}
    for row in found:
        totals = client.query_rows(
            "SELECT count() AS n, sum(cityHash64(*)) AS h FROM {table:Identifier}", {"table": row["name"]}
        )[0]
        result[row["name"]] = (int(totals["n"]), int(totals["h"]))
    return result


def dictionary_rates(client: ClickHouseClient) -> dict[str, Decimal]:
    rows = client.query_rows(
        "SELECT currency, dictGet('exchange_rate_dict', 'rate', currency, {day:Date}) AS rate "
        "FROM (SELECT arrayJoin(['EUR', 'GBP']) AS currency) ORDER BY currency",
        {"day": FIRST_DAY},
    )
    return {row["currency"]: Decimal(str(row["rate"])) for row in rows}


def staging_tables(client: ClickHouseClient) -> list[str]:
    return [
        row["name"]
        for row in client.query_rows(
            "SELECT name FROM system.tables WHERE database = currentDatabase() "
            "AND name LIKE '%\\\\_\\\\_restore\\\\_%' ORDER BY name"
        )
    ]


def change_everything(client: ClickHouseClient) -> None:
    """What happens after the backup: new events, a pre-aggregate emptied, new rates the dictionary answers."""
    generate_demo_events(client, start_date=FIRST_DAY, days=1, events=300, seed=7)
    client.command("TRUNCATE TABLE web_pre_aggregated_bounces")
    write_rates(client, [rates_day(RATES_AFTER)])
    client.command("SYSTEM RELOAD DICTIONARY exchange_rate_dict")
    assert dictionary_rates(client) == RATES_AFTER


def test_replacing_every_live_table_restores_them_all_and_the_dictionary_answers_the_restored_rates(
    live: ClickHouseResource,
    storage: BackupStorage,  # noqa: F811
    dagster_instance: DagsterInstance,
) -> None:
    with live.get_client() as client:
        at_backup = contents(client)
        assert sorted(at_backup) == sorted(DEMO_TABLES) and all(rows for rows, _ in at_backup.values())
        assert backup(live, storage, dagster_instance).success
        change_everything(client)

        replaced = restore(live, storage, dagster_instance, target_database=client.database, replace=True)

        assert replaced.success, failure_message(replaced)
        assert contents(client) == at_backup
        assert dictionary_rates(client) == RATES_AT_BACKUP
        assert not staging_tables(client)


def readme_restore_config() -> str:
    """The run config README's Backups section gives for `clickhouse_restore_job`, exactly as written."""
    readme = (PROJECT_ROOT / "README.md").read_text()
    line = next(line for line in readme.splitlines() if "-c restore.yaml" in line)
    return line.split("#", 1)[1].strip()


# Sets up or reads the deployment's ClickHouse in a process of its own: the embedded engine opens one data
# path per process, and the test's process holds the session's.
CLICKHOUSE_SCRIPT = """
import json, sys
from dags.common import ClickHouseResource
from dags.tests.test_restore_all_or_nothing import contents, dictionary_rates, load_demo_data
url, action = sys.argv[1:3]
with ClickHouseResource(url=url).get_client(create_database=True) as client:
    if action == "load":
        load_demo_data(client)
    elif action == "drop events":
        client.command("DROP TABLE events SYNC")
    rates = {currency: str(rate) for currency, rate in dictionary_rates(client).items()}
    print(json.dumps({"contents": contents(client), "rates": rates}))
"""


def deployment(url: str, action: str = "read") -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, "-c", CLICKHOUSE_SCRIPT, url, action],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def dagster(*args: str, env: dict[str, str]) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "dagster", *args],
        cwd=PROJECT_ROOT, env={**os.environ, **env}, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-5000:]
    return output


@pytest.mark.slow
def test_readmes_recipe_brings_back_a_dropped_events_table_word_for_word_through_the_cli(
    storage: BackupStorage,  # noqa: F811 - sets CLICKHOUSE_BACKUP_URL and AWS_* as a deployment does
    tmp_path: Path,
) -> None:
    config = readme_restore_config()
    assert yaml.safe_load(config) == {
        "ops": {"restore_clickhouse_backup": {"config": {"target_database": "default", "replace": True}}}
    }
    (tmp_path / "restore.yaml").write_text(config + "\n")
    (tmp_path / "home").mkdir()
    url = f"chdb://{tmp_path / 'clickhouse'}"  # the deployment's database: `default`
    env = {"DAGSTER_HOME": str(tmp_path / "home"), "CLICKHOUSE_URL": url}
    at_backup = deployment(url, "load")
    assert sorted(at_backup["contents"]) == sorted(DEMO_TABLES)

    dagster("job", "execute", "-m", "dags.definitions", "-j", "clickhouse_backup_job", env=env)
    assert "events" not in deployment(url, "drop events")["contents"]
    restore_job = ["job", "execute", "-m", "dags.definitions", "-j", "clickhouse_restore_job"]
    output = dagster(*restore_job, "-c", str(tmp_path / "restore.yaml"), env=env)

    assert "RUN_SUCCESS" in output
    assert deployment(url) == at_backup


class _FailingSwaps:
    """A client that makes the swap of ``table`` fail the way the engine would if its restored copy had
    vanished (it drops that copy, then lets the engine refuse), and, with ``refuse_back``, refuses to swap
    back ``refuse_back`` once it has been swapped in."""

    def __init__(self, client: ClickHouseClient, table: str, refuse_back: str | None) -> None:
        self._client, self._table, self._refuse_back = client, table, refuse_back
        self._exchanged: set[str] = set()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def command(self, sql: str, parameters: dict[str, Any] | None = None, **kwargs: Any) -> Any:
        if sql.startswith("EXCHANGE TABLES") and parameters:
            table = parameters["table"]
            if table == self._table:
                self._client.command(
                    "DROP TABLE {database:Identifier}.{staged:Identifier} SYNC",
                    {"database": parameters["database"], "staged": parameters["staged"]},
                )
            elif table == self._refuse_back and table in self._exchanged:
                raise ClickHouseError(f"refused to swap {table} back (injected by the test)")
            self._exchanged.add(table)
        return self._client.command(sql, parameters, **kwargs)


class FailingSwapsClickHouse(ClickHouseResource):
    fail_table: str
    refuse_back: str | None = None

    @contextmanager
    def get_client(self, *args: Any, **kwargs: Any) -> Iterator[Any]:
        with super().get_client(*args, **kwargs) as client:
            yield _FailingSwaps(client, self.fail_table, self.refuse_back)


def failing(live: ClickHouseResource, fail_table: str, refuse_back: str | None = None) -> FailingSwapsClickHouse:
    return FailingSwapsClickHouse(**live.model_dump(), fail_table=fail_table, refuse_back=refuse_back)


def test_a_table_missing_from_the_backup_a_damaged_backup_or_a_swap_failing_midway_leave_every_live_table_as_it_was(
    live: ClickHouseResource,
    storage: BackupStorage,  # noqa: F811
    dagster_instance: DagsterInstance,
    s3_server: S3Server,
) -> None:
    with live.get_client() as client:
        assert backup(live, storage, dagster_instance).success
        change_everything(client)
        # Two tables lost (the dictionary still reads `exchange_rate`): they are renamed in, and back out.
        client.command("DROP TABLE events SYNC")
        client.command("DROP TABLE exchange_rate SYNC SETTINGS check_table_dependencies = 0")
        before = contents(client)
        assert sorted(before) == ["web_pre_aggregated_bounces", "web_pre_aggregated_stats"]
        database = client.database

        not_in_backup = restore(
            live, storage, dagster_instance, target_database=database, replace=True,
            tables=["exchange_rate", "web_pre_aggregated_sessions"],
        )  # fmt: skip
        assert not not_in_backup.success
        assert "has no table web_pre_aggregated_sessions" in failure_message(not_in_backup)
        assert contents(client) == before

        # Tables swap in name order: events, exchange_rate and the bounces are in when the stats fail.
        midway = restore(
            failing(live, "web_pre_aggregated_stats"), storage, dagster_instance,
            target_database=database, replace=True,
        )  # fmt: skip
        assert not midway.success
        message = failure_message(midway)
        assert f"{database}.web_pre_aggregated_stats" in message and "no live table was changed" in message
        assert contents(client) == before
        assert not staging_tables(client)

        # A backup that does not read back: whatever it restored beside the live tables is dropped.
        bucket = s3_server.client()
        keys = [key for key in object_keys(s3_server, storage) if key.endswith("data.bin")]
        damaged = next(key for key in keys if "/web_pre_aggregated_stats/" in key)
        bucket.delete_object(Bucket=storage.location.bucket, Key=damaged)
        unreadable = restore(live, storage, dagster_instance, target_database=database, replace=True)
        assert not unreadable.success
        assert "404" in failure_message(unreadable)
        assert contents(client) == before
        assert not staging_tables(client)


@pytest.mark.parametrize("live", ["own"], indirect=True)
def test_a_table_that_cannot_be_swapped_back_keeps_its_previous_contents_and_the_run_says_where(
    live: ClickHouseResource,
    storage: BackupStorage,  # noqa: F811
    dagster_instance: DagsterInstance,
) -> None:
    with live.get_client() as client:
        assert backup(live, storage, dagster_instance).success
        change_everything(client)
        rates_before = client.query_rows("SELECT * FROM exchange_rate ORDER BY date, currency, version")
        database = client.database

        result = restore(
            failing(live, "web_pre_aggregated_stats", refuse_back="exchange_rate"), storage, dagster_instance,
            target_database=database, replace=True,
        )  # fmt: skip

        assert not result.success
        message = failure_message(result)
        kept = staging_tables(client)
        assert len(kept) == 1 and kept[0].startswith("exchange_rate__restore_")
        assert f"{database}.exchange_rate (its previous contents are in {database}.{kept[0]})" in message
        assert "web_pre_aggregated_stats" in message
        kept_rows = client.query_rows(
            "SELECT * FROM {table:Identifier} ORDER BY date, currency, version", {"table": kept[0]}
        )
        assert kept_rows == rates_before
