"""The demo events the benchmarks read, loaded once per benchmark run into a temporary embedded ClickHouse.

`--events` demo events are spread over a 30-day window (the pre-aggregate backfill reads all of it). The
export reads single days: a day of the window ("1x", about `events / 30` rows) and days after the window
holding 4, 16 and 64 times as many events (64x is about 10 million at the default size). The same events
are loaded into the embedded engine and into the bench's server.
"""

from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

WINDOW_START = date(2024, 3, 1)
EXPORT_MULTIPLIERS = (1, 4, 16, 64)
# What one call of the demo generator inserts at most; larger days are generated in parts.
GENERATOR_MAX_EVENTS = 10_000_000
# A day with few events, after the window: a one-day run there costs what a run costs, not what its SQL costs.
SMALL_DAY_EVENTS = 1_000


@dataclass(frozen=True)
class Dataset:
    events: int
    window_days: int = 30
    export_multipliers: tuple[int, ...] = EXPORT_MULTIPLIERS

    @property
    def window_start(self) -> date:
        return WINDOW_START

    @property
    def window_end(self) -> date:
        """The first day after the window."""
        return WINDOW_START + timedelta(days=self.window_days)

    @property
    def day_events(self) -> int:
        return self.events // self.window_days

    def export_day(self, multiplier: int) -> date:
        """The day exported at this multiple of a day's events: the window's middle day for 1x, else a day of
        its own well after the window (so the backfill's reads around its window never reach it)."""
        if multiplier == 1:
            return WINDOW_START + timedelta(days=self.window_days // 2)
        return self.window_end + timedelta(days=10 + self.export_multipliers.index(multiplier))

    @property
    def small_day(self) -> date:
        """A day of `SMALL_DAY_EVENTS` events after the window, away from the export days."""
        return self.window_end + timedelta(days=5)

    def extra_days(self) -> dict[str, int]:
        """The days after the window and how many events each gets."""
        days = {
            self.export_day(multiplier).isoformat(): multiplier * self.day_events
            for multiplier in self.export_multipliers
            if multiplier != 1
        }
        return {**days, self.small_day.isoformat(): min(SMALL_DAY_EVENTS, self.day_events)}


def build(events: int, window_start: str, window_days: int, extra_days: dict[str, int]) -> dict[str, Any]:
    """Worker: load the demo events and create the pre-aggregate tables; returns the rows of each day loaded."""
    import time

    from bench.common import worker_clickhouse
    from dags.events import generate_demo_events
    from dags.web_analytics.schema import create_web_preaggregated_tables

    started = time.perf_counter()
    with worker_clickhouse().get_client() as client:
        generate_demo_events(
            client, start_date=date.fromisoformat(window_start), days=window_days, events=events, seed=42
        )
        seed = 43
        for day, day_events in sorted(extra_days.items()):
            for part in range(0, day_events, GENERATOR_MAX_EVENTS):
                part_events = min(GENERATOR_MAX_EVENTS, day_events - part)
                generate_demo_events(client, start_date=date.fromisoformat(day), days=1, events=part_events, seed=seed)
                seed += 1
        # One part per month, so that background merges do not run during (and blur) the measurements.
        client.command("OPTIMIZE TABLE events FINAL")
        create_web_preaggregated_tables(client)
        rows = client.query_rows("SELECT toString(toDate(timestamp)) AS day, count() AS rows FROM events GROUP BY day")
    return {
        "rows_by_day": {row["day"]: row["rows"] for row in rows},
        "seconds": time.perf_counter() - started,
    }
