"""What is exported: one SELECT per dataset, a day at a time, read from tables the export does not own.

An export never creates its source: a table that is missing is a wrong setting (another database, a typo)
or a step not yet run, and must fail the run instead of reading as an empty day.
"""

from dataclasses import dataclass
from datetime import date

# Every column of the `events` contract. Sorted by the table's own sorting key (`events.uuid` is the column,
# not the string alias) so ClickHouse reads the day in order instead of sorting it in memory: memory stays
# flat however big the day, and the same day always gives the same file.
EVENTS_EXPORT_QUERY = """
SELECT
    toString(uuid) AS uuid,
    event,
    properties,
    timestamp,
    team_id,
    distinct_id,
    toString(person_id) AS person_id,
    `$session_id`,
    inserted_at
FROM events
WHERE toDate(timestamp) = {day:Date}
ORDER BY team_id, toDate(timestamp), event, cityHash64(distinct_id), cityHash64(events.uuid)
"""

# A pre-aggregate's rows for the day with its aggregate states merged into plain numbers: rows of the same
# key not yet merged by the AggregatingMergeTree are combined here. The key columns (team, hour, the web
# analytics team's dimensions, paths) are taken as the table declares them, so a new dimension is exported
# without a change here. Hours become DateTime64(3) because Parquet has no seconds unit (the Arrow output of
# a DateTime would otherwise be a bare integer).
WEB_STATS_EXPORT_QUERY = """
SELECT * REPLACE (toDateTime64(period_bucket, 3, 'UTC') AS period_bucket)
FROM
(
    SELECT
        * EXCEPT (persons_uniq_state, sessions_uniq_state, pageviews_count_state),
        uniqMerge(persons_uniq_state) AS persons,
        uniqMerge(sessions_uniq_state) AS sessions,
        sumMerge(pageviews_count_state) AS pageviews
    FROM web_pre_aggregated_stats
    WHERE toDate(period_bucket) = {day:Date}
    GROUP BY ALL
)
ORDER BY ALL
"""

WEB_BOUNCES_EXPORT_QUERY = """
SELECT * REPLACE (toDateTime64(period_bucket, 3, 'UTC') AS period_bucket)
FROM
(
    SELECT
        * EXCEPT (
            persons_uniq_state, sessions_uniq_state, pageviews_count_state,
            bounces_count_state, total_session_duration_state, total_session_count_state
        ),
        uniqMerge(persons_uniq_state) AS persons,
        uniqMerge(sessions_uniq_state) AS sessions,
        sumMerge(pageviews_count_state) AS pageviews,
        sumMerge(bounces_count_state) AS bounces,
        sumMerge(total_session_duration_state) AS total_session_duration,
        sumMerge(total_session_count_state) AS total_session_count
    FROM web_pre_aggregated_bounces
    WHERE toDate(period_bucket) = {day:Date}
    GROUP BY ALL
)
ORDER BY ALL
"""


@dataclass(frozen=True)
class ExportDataset:
    """A dataset exported one day at a time: its folder name (a contract), the table it reads, the day's
    SELECT, and whether that table is filled per day by another asset (so an unfilled day is not empty)."""

    name: str
    source_table: str
    query: str  # takes {day:Date}
    filled_per_day: bool = False


EVENTS_DATASET = ExportDataset("events", "events", EVENTS_EXPORT_QUERY)
WEB_STATS_DATASET = ExportDataset(
    "web_pre_aggregated_stats", "web_pre_aggregated_stats", WEB_STATS_EXPORT_QUERY, filled_per_day=True
)
WEB_BOUNCES_DATASET = ExportDataset(
    "web_pre_aggregated_bounces", "web_pre_aggregated_bounces", WEB_BOUNCES_EXPORT_QUERY, filled_per_day=True
)


def day_folder(dataset: str, day: date) -> str:
    """The folder of one day of a dataset, relative to the destination (a contract)."""
    return f"{dataset}/date={day.isoformat()}"
