"""``bin/sql`` runs SQL on the local data at any time: while another process (a run) holds the embedded engine it
waits, says so, and then answers; the run it waited for is not broken. On a server it connects to it."""

import os
import subprocess
import sys
import time
from pathlib import Path

from dags.common import PROJECT_ROOT, ClickHouseResource

HOLD_THE_ENGINE = """
import sys, time
from dags.common import ClickHouseResource
resource = ClickHouseResource(url=sys.argv[1])
with resource.get_client() as client:       # what a run does: it holds the engine while it works
    print("holding", flush=True)
    time.sleep(float(sys.argv[2]))
    client.command("INSERT INTO numbers_seen SELECT 41")
print("run done", flush=True)
"""


def bin_sql(sql: str, url: str, tmp_path: Path) -> subprocess.Popen:
    env = {**os.environ, "CLICKHOUSE_URL": url, "DAGSTER_HOME": str(tmp_path / "home")}
    return subprocess.Popen(
        [str(PROJECT_ROOT / "bin" / "sql"), sql], cwd=PROJECT_ROOT, env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip


def test_while_a_run_holds_the_local_data_bin_sql_waits_saying_so_and_then_answers(tmp_path: Path) -> None:
    url = f"chdb://{tmp_path / 'clickhouse'}"
    with ClickHouseResource(url=url).get_client() as client:
        client.command("CREATE TABLE numbers_seen (n UInt64) ENGINE = MergeTree ORDER BY n")
        client.command("INSERT INTO numbers_seen SELECT 1")
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_THE_ENGINE, url, "4"], cwd=PROJECT_ROOT, text=True, stdout=subprocess.PIPE
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
    started = time.monotonic()

    query = bin_sql("SELECT sum(n) AS total FROM numbers_seen", url, tmp_path)
    out, err = query.communicate(timeout=120)

    assert holder.wait(timeout=60) == 0, "the run it waited for finished as usual"
    assert query.returncode == 0, err
    assert "Waiting for the embedded ClickHouse" in err
    assert time.monotonic() - started > 2, "it waited for the run instead of opening the data beside it"
    assert out.split() == ["total", "42"], "it answered after the run's insert"


def test_bin_sql_runs_a_command_and_a_query_on_a_server(clickhouse_server_url: str, tmp_path: Path) -> None:
    created = bin_sql("CREATE TABLE t (n UInt8) ENGINE = Memory", clickhouse_server_url, tmp_path)
    assert created.wait(timeout=60) == 0
    inserted = bin_sql("INSERT INTO t VALUES (7), (8)", clickhouse_server_url, tmp_path)
    assert inserted.wait(timeout=60) == 0
    out, err = bin_sql("SELECT n FROM t ORDER BY n", clickhouse_server_url, tmp_path).communicate(timeout=60)
    assert out.split() == ["n", "7", "8"], err
    assert "local-server-password" not in err, "the password is never printed"
