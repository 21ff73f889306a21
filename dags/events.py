"""The raw `events` table every pipeline reads, and deterministic demo web traffic to fill it locally.

The table's columns are a contract shared with outside tools: change them only in an issue that says so.
Demo traffic is generated inside ClickHouse (`numbers()` and seeded hashes), so ten million events take
seconds, and the same seed, dates and size always give the same rows.
"""

from collections.abc import Sequence
from datetime import date, timedelta

from dagster import (
    AssetExecutionContext,
    AssetSpec,
    Config,
    DailyPartitionsDefinition,
    MaterializeResult,
    asset,
)
from pydantic import Field

from dags.common import (
    CLICKHOUSE_RETRY_POLICY,
    EVENTS_KEY,
    ClickHouseClient,
    ClickHouseCluster,
    ClickHouseResource,
    JobOwners,
    quote_identifier,
    quote_string,
)

DEMO_TEAM_IDS: tuple[int, ...] = (1, 2, 3)
MIN_DEMO_EVENTS = 1
MAX_DEMO_EVENTS = 10_000_000

# On a cluster (CLICKHOUSE_CLUSTER), `events` is Distributed over this local table on every host: a contract
# of the cluster, like `events` itself.
SHARDED_EVENTS = "sharded_events"

# Monthly partitions keep the part count low for years of data; the sorting key starts with
# (team_id, day), so a per-team, per-day scan reads only that team's granules of that day.
EVENTS_TABLE_DDL = """
CREATE TABLE IF NOT EXISTS {table}
(
    uuid UUID,
    event String,
    properties String,
    timestamp DateTime64(6, 'UTC'),
    team_id Int64,
    distinct_id String,
    person_id UUID,
    `$session_id` String,
    inserted_at DateTime64(6, 'UTC') DEFAULT now64(6, 'UTC')
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(timestamp)
ORDER BY (team_id, toDate(timestamp), event, cityHash64(distinct_id), cityHash64(uuid))
"""
CREATE_EVENTS_TABLE = EVENTS_TABLE_DDL.format(table="events")
CREATE_SHARDED_EVENTS_TABLE = EVENTS_TABLE_DDL.format(table=SHARDED_EVENTS)

# A person's events stay on one shard (sessions and bounces are computed within a shard's rows).
CREATE_DISTRIBUTED_EVENTS_TABLE = """
CREATE TABLE IF NOT EXISTS {database_identifier}.events AS {database_identifier}.sharded_events
ENGINE = Distributed({cluster}, {database}, sharded_events, sipHash64(distinct_id))
"""

# When two persons merge (a user logs in on a second device), ingestion records that a distinct_id now belongs to
# another person here instead of rewriting history; `squash_person_overrides` (data platform) squashes them into
# `events.person_id`. A contract: the latest `version` of a (team_id, distinct_id) wins. On a cluster every host
# holds all of it (writers write to each host), so each shard's squash reads it locally.
PERSON_OVERRIDES_TABLE = "person_distinct_id_overrides"
CREATE_PERSON_OVERRIDES_TABLE = """
CREATE TABLE IF NOT EXISTS person_distinct_id_overrides
(
    team_id Int64,
    distinct_id String,
    person_id UUID,
    is_deleted Int8 DEFAULT 0,
    version Int64,
    _timestamp DateTime DEFAULT now()
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (team_id, distinct_id)
"""

EVENTS_ENGINE = "SELECT engine FROM system.tables WHERE database = currentDatabase() AND name = 'events'"

# Inserts into a Distributed `events` reach their shards before the statement returns: the rows are readable
# (and a failed shard fails the insert) at once, instead of waiting in system.distribution_queue.
DISTRIBUTED_INSERT_SETTINGS = {"distributed_foreground_insert": 1}

# One row per demo session: every attribute comes from a seeded hash of the session number, so the same
# seed always draws the same traffic. Kinds: 0 = bounce (one pageview, maybe a pageleave, 0-19 s),
# 1 = ordinary visit, 2 = long visit, 3 = autocapture only (no pageview: left out of web analytics).
DEMO_SESSIONS = """
SELECT
    number AS session_number,
    cityHash64({seed:UInt64}, number, 1) AS h1,
    cityHash64({seed:UInt64}, number, 2) AS h2,
    cityHash64({seed:UInt64}, number, 3) AS h3,
    multiIf(h2 % 100 < 35, 0, h2 % 100 < 90, 1, h2 % 100 < 98, 2, 3) AS kind,
    multiIf(kind = 0, 1 + h3 % 2, kind = 1, 2 + h3 % 7, kind = 2, 15 + h3 % 26, 1 + h3 % 3) AS session_length
FROM numbers({max_sessions:UInt64})
"""

# How many sessions make exactly the requested number of events (the last one may be cut short).
DEMO_SESSION_COUNT = f"""
SELECT session_number, events_before
FROM
(
    SELECT
        session_number,
        sum(session_length) OVER (ORDER BY session_number ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)
            AS events_before
    FROM ({DEMO_SESSIONS})
)
WHERE events_before < {{events:UInt64}}
ORDER BY session_number DESC
LIMIT 1
"""

INSERT_DEMO_EVENTS = f"""
INSERT INTO events (uuid, event, properties, timestamp, team_id, distinct_id, person_id, `$session_id`)
WITH
    {{team_ids:Array(Int64)}} AS team_ids,
    ['/', '/pricing', '/features', '/docs', '/docs/getting-started', '/blog', '/blog/launch-week',
     '/signup', '/login', '/about', '/careers', '/changelog'] AS pathnames,
    [('US', 'San Francisco', 'CA', 'California'), ('US', 'New York', 'NY', 'New York'),
     ('GB', 'London', 'ENG', 'England'), ('DE', 'Berlin', 'BE', 'Berlin'),
     ('BR', 'São Paulo', 'SP', 'São Paulo'), ('IN', 'Bengaluru', 'KA', 'Karnataka'),
     ('FR', 'Paris', 'IDF', 'Île-de-France'), ('CA', 'Toronto', 'ON', 'Ontario')] AS places
SELECT
    reinterpretAsUUID(concat(reinterpretAsString(cityHash64({{seed:UInt64}}, session_number, event_index, 11)),
                             reinterpretAsString(cityHash64({{seed:UInt64}}, session_number, event_index, 12))))
        AS uuid,
    multiIf(
        kind = 3, '$autocapture',
        event_index = 0, '$pageview',
        event_index = session_length - 1 AND session_length > 1, '$pageleave',
        cityHash64({{seed:UInt64}}, session_number, event_index, 13) % 3 = 0, '$autocapture',
        '$pageview') AS event,
    concat('{{',
        -- The visitor's address, as ingestion records it (the demo_events asset's traffic has it).
        if({{with_ip:Bool}},
           concat('"$ip":', toJSONString(IPv4NumToString(toUInt32(bitShiftRight(h5, 20) % 4294967296))), ','), ''),
        '"$host":', toJSONString(host),
        ',"$pathname":', toJSONString(pathname),
        ',"$current_url":', toJSONString(concat('https://', host, pathname)),
        ',"$referring_domain":', toJSONString(referring_domain),
        ',"$device_type":', toJSONString(device_type),
        ',"$browser":', toJSONString(browser),
        ',"$os":', toJSONString(os),
        ',"$viewport_width":', toString(viewport.1),
        ',"$viewport_height":', toString(viewport.2),
        if(has_utm, concat(
            ',"utm_source":', toJSONString(utm_source),
            ',"utm_medium":', toJSONString(utm_medium),
            ',"utm_campaign":', toJSONString(utm_campaign),
            ',"utm_term":', toJSONString(utm_term),
            ',"utm_content":', toJSONString(utm_content)), ''),
        if(has_gclid, concat(',"gclid":', toJSONString(hex(h3))), ''),
        if(has_fbclid, concat(',"fbclid":', toJSONString(hex(h2))), ''),
        ',"$geoip_country_code":', toJSONString(place.1),
        ',"$geoip_city_name":', toJSONString(place.2),
        ',"$geoip_subdivision_1_code":', toJSONString(place.3),
        ',"$geoip_subdivision_1_name":', toJSONString(place.4),
        ',"$session_id":', toJSONString(session_id),
        '}}') AS properties,
    session_start + toIntervalMillisecond(event_index * (gap_seconds * 1000 + 137)) AS timestamp,
    team_id,
    if(anonymous, concat('anon-', toString(team_id), '-', toString(person_number)),
       concat('user-', toString(team_id), '-', toString(person_number))) AS distinct_id,
    -- An anonymous device got a person of its own at first (ingestion could not know better): see DEMO_OVERRIDES.
    reinterpretAsUUID(concat(
        reinterpretAsString(cityHash64({{seed:UInt64}}, team_id, person_number, 21 + 10 * anonymous)),
        reinterpretAsString(cityHash64({{seed:UInt64}}, team_id, person_number, 22 + 10 * anonymous))))
        AS person_id,
    session_id AS `$session_id`
FROM
(
    SELECT
        *,
        team_ids[1 + (h1 % 6) % length(team_ids)] AS team_id,
        cityHash64({{seed:UInt64}}, session_number, 4) AS h4,
        cityHash64({{seed:UInt64}}, session_number, 5) AS h5,
        multiIf(kind = 0, h3 % 20, kind = 1, 3 + h3 % 60, 30 + h3 % 150) AS gap_seconds,
        -- Every session ends on the day it starts, so a day's demo events can be replaced on their own.
        toDateTime64({{start_date:Date}}, 6, 'UTC')
            + toIntervalDay(h4 % {{days:UInt32}})
            + toIntervalSecond(h5 % (86400 - intDiv(session_length * (gap_seconds * 1000 + 137), 1000) - 1))
            AS session_start,
        h1 % greatest(1, intDiv({{max_sessions:UInt64}}, 3)) AS person_number,
        -- One person in ten browses anonymously in some sessions before logging in (same person, other device).
        toUInt8(person_number % 10 = 0 AND bitShiftRight(h3, 8) % 2 = 0) AS anonymous,
        toString(reinterpretAsUUID(concat(reinterpretAsString(h1), reinterpretAsString(h4)))) AS session_id,
        if(team_id = team_ids[1] AND h5 % 5 = 0, 'docs.hogflix.com',
           ['www.hogflix.com', 'shop.globex.io', 'blog.initech.dev', 'app.umbrella.co'][1 + team_id % 4]) AS host,
        ['$direct', '$direct', 'www.google.com', 'news.ycombinator.com', 't.co', 'www.facebook.com',
         'duckduckgo.com'][1 + h4 % 7] AS referring_domain,
        ['Desktop', 'Desktop', 'Mobile', 'Mobile', 'Tablet'][1 + h5 % 5] AS device_type,
        ['Chrome', 'Chrome', 'Safari', 'Firefox', 'Edge'][1 + bitShiftRight(h4, 8) % 5] AS browser,
        multiIf(device_type = 'Desktop', ['Mac OS X', 'Windows', 'Linux'][1 + bitShiftRight(h5, 8) % 3],
                ['iOS', 'Android'][1 + bitShiftRight(h5, 8) % 2]) AS os,
        multiIf(device_type = 'Desktop', [(1920, 1080), (1440, 900), (1280, 720)][1 + bitShiftRight(h5, 16) % 3],
                device_type = 'Mobile', [(390, 844), (412, 915)][1 + bitShiftRight(h5, 16) % 2],
                (820, 1180)) AS viewport,
        bitShiftRight(h4, 16) % 10 < 3 AS has_utm,
        ['google', 'newsletter', 'twitter', 'facebook'][1 + bitShiftRight(h4, 24) % 4] AS utm_source,
        ['cpc', 'email', 'social', 'social'][1 + bitShiftRight(h4, 24) % 4] AS utm_medium,
        ['spring_sale', 'launch_week', 'brand'][1 + bitShiftRight(h4, 32) % 3] AS utm_campaign,
        ['analytics', 'product analytics', ''][1 + bitShiftRight(h4, 40) % 3] AS utm_term,
        ['ad_a', 'ad_b'][1 + bitShiftRight(h4, 48) % 2] AS utm_content,
        has_utm AND utm_source = 'google' AND bitShiftRight(h5, 24) % 2 = 0 AS has_gclid,
        has_utm AND utm_source = 'facebook' AND bitShiftRight(h5, 24) % 2 = 0 AS has_fbclid,
        places[1 + bitShiftRight(h5, 32) % length(places)] AS place
    FROM ({DEMO_SESSIONS})
    WHERE session_number <= {{last_session:UInt64}}
)
ARRAY JOIN range(toUInt64(if(session_number = {{last_session:UInt64}}, {{last_session_length:UInt64}},
                             session_length))) AS event_index
ARRAY JOIN [if(event_index = 0 AND kind != 3, pathnames[1 + bitShiftRight(h1, 8) % 4],
               pathnames[1 + cityHash64({{seed:UInt64}}, session_number, event_index, 14) % length(pathnames)])]
    AS pathname
"""

DELETE_DEMO_DAY = """
DELETE FROM {table:Identifier}
WHERE team_id IN {team_ids:Array(Int64)}
  AND timestamp >= toDateTime64({day:Date}, 6, 'UTC')
  AND timestamp < toDateTime64({day:Date} + 1, 6, 'UTC')
"""


def create_events_table(client: ClickHouseClient) -> None:
    """Create the `events` table on one host if it does not exist (idempotent)."""
    client.command(CREATE_EVENTS_TABLE)


def create_events_tables(cluster: ClickHouseCluster) -> None:
    """Create `events` and `person_distinct_id_overrides` where the deployment expects them (idempotent).

    One host: the `events` MergeTree. A cluster: `sharded_events` on every host and `events`
    `Distributed` over them on every host; the overrides table on every host. Tables a deployment brought
    itself are left as they are.
    """
    if not cluster.is_cluster:
        with cluster.resource.get_client(cluster.context, create_database=True) as client:
            create_events_table(client)
            client.command(CREATE_PERSON_OVERRIDES_TABLE)
        return
    distributed = distributed_events_statement(cluster.name or "", cluster.resource.target.database or "default")

    def create(client: ClickHouseClient) -> None:
        client.command(CREATE_SHARDED_EVENTS_TABLE)
        client.command(distributed)
        client.command(CREATE_PERSON_OVERRIDES_TABLE)

    cluster.map_all_hosts(create, "Creating events and sharded_events")


def distributed_events_statement(cluster_name: str, database: str) -> str:
    """`CREATE TABLE IF NOT EXISTS <database>.events`, Distributed over `<database>.sharded_events` of every
    host of `cluster_name` (engine arguments cannot be bound: quoted here)."""
    return CREATE_DISTRIBUTED_EVENTS_TABLE.format(
        database_identifier=quote_identifier(database),
        cluster=quote_string(cluster_name),
        database=quote_string(database),
    )


# The overrides ingestion records when those anonymous devices log in: `anon-<team>-<n>` is `user-<team>-<n>`'s
# person, recorded at the anonymous device's last event of the day (so the squash's default, overrides older
# than two days, leaves the last two days' for later, as in production).
INSERT_DEMO_OVERRIDES = """
INSERT INTO person_distinct_id_overrides (team_id, distinct_id, person_id, version, _timestamp)
SELECT
    team_id,
    distinct_id,
    reinterpretAsUUID(concat(reinterpretAsString(cityHash64({seed:UInt64}, team_id, person_number, 21)),
                             reinterpretAsString(cityHash64({seed:UInt64}, team_id, person_number, 22))))
        AS person_id,
    1 AS version,
    toDateTime(max(timestamp)) AS _timestamp
FROM events
WHERE team_id IN {team_ids:Array(Int64)} AND distinct_id LIKE 'anon-%'
  AND timestamp >= toDateTime64({start_date:Date}, 6, 'UTC')
  AND timestamp < toDateTime64({start_date:Date}, 6, 'UTC') + toIntervalDay({days:UInt32})
GROUP BY team_id, distinct_id, toUInt64(splitByChar('-', distinct_id)[3]) AS person_number
"""


def insert_demo_overrides(
    client: ClickHouseClient, *, start_date: date, days: int, seed: int, team_ids: Sequence[int] = DEMO_TEAM_IDS
) -> int:
    """Record the overrides of the demo's anonymous devices seen in those days (same seed as their events) into
    this host's `person_distinct_id_overrides`; returns how many."""
    client.command(CREATE_PERSON_OVERRIDES_TABLE)
    parameters = {"seed": seed, "team_ids": list(team_ids), "start_date": start_date, "days": days}
    client.command(INSERT_DEMO_OVERRIDES, parameters)
    return int(
        client.command(
            "SELECT count() FROM person_distinct_id_overrides FINAL WHERE team_id IN {team_ids:Array(Int64)} "
            "AND distinct_id LIKE 'anon-%' AND toDate(_timestamp) >= {start_date:Date} "
            "AND toDate(_timestamp) < {start_date:Date} + {days:UInt32}",
            parameters,
        )
    )


def is_distributed(client: ClickHouseClient) -> bool:
    """Whether `events` on this host is `Distributed` (a cluster's), so inserts go through to the shards."""
    return client.query_rows(EVENTS_ENGINE) == [{"engine": "Distributed"}]


def generate_demo_events(
    client: ClickHouseClient,
    *,
    start_date: date,
    days: int,
    events: int,
    seed: int = 42,
    team_ids: Sequence[int] = DEMO_TEAM_IDS,
    with_ip: bool = False,
) -> int:
    """Insert exactly `events` demo events spread over `days` days from `start_date`; returns the count.

    `with_ip` puts the visitor's address first in `properties` (`"$ip":"10.1.2.3"`), as ingestion does.

    Sessions of `$pageview`, `$autocapture` and `$pageleave` with realistic web properties; some
    bounce (some just under, some just over 10 seconds), some are long, a few have no pageview at all.
    The same arguments always insert the same rows.
    """
    if not MIN_DEMO_EVENTS <= events <= MAX_DEMO_EVENTS:
        raise ValueError(f"events must be between {MIN_DEMO_EVENTS} and {MAX_DEMO_EVENTS:,}, got {events:,}")
    if days < 1:
        raise ValueError(f"days must be at least 1, got {days}")
    if not team_ids:
        raise ValueError("team_ids must name at least one team")
    create_events_table(client)
    # Sessions average about five events: twice the requested events is always enough sessions.
    params = {"seed": seed, "max_sessions": events + 16, "events": events}
    boundary = client.query_rows(DEMO_SESSION_COUNT, params)[0]
    last_session, events_before = boundary["session_number"], boundary["events_before"]
    settings = {"output_format_json_escape_forward_slashes": 0}
    if is_distributed(client):
        settings.update(DISTRIBUTED_INSERT_SETTINGS)
    client.command(
        INSERT_DEMO_EVENTS,
        {
            **params,
            "team_ids": list(team_ids),
            "start_date": start_date,
            "days": days,
            "last_session": last_session,
            "last_session_length": events - events_before,
            "with_ip": with_ip,
        },
        settings=settings,
    )
    return events


DEMO_START_DATE = "2024-01-01"
DEMO_EVENTS_PARTITIONS = DailyPartitionsDefinition(start_date=DEMO_START_DATE, end_offset=1)


class DemoEventsConfig(Config):
    events_per_day: int = Field(
        default=20_000, ge=MIN_DEMO_EVENTS, le=MAX_DEMO_EVENTS, description="Demo events to write for the day."
    )
    seed: int = Field(default=42, ge=0, description="Seed of the generator: same seed, same events.")


@asset(
    partitions_def=DEMO_EVENTS_PARTITIONS,
    kinds={"clickhouse"},
    tags=JobOwners.TEAM_PLATFORM.tags(),
    owners=JobOwners.TEAM_PLATFORM.asset_owners(),
    retry_policy=CLICKHOUSE_RETRY_POLICY,
    group_name="demo",
)
def demo_events(
    context: AssetExecutionContext, config: DemoEventsConfig, clickhouse: ClickHouseResource
) -> MaterializeResult:
    """Demo web traffic of the demo teams for one day in the raw `events` table, for local development.

    Re-running a day replaces that day's demo events (other teams' events are never touched). Some persons
    browse anonymously before logging in: their anonymous device's events carry a person of their own until
    `squash_person_overrides` applies the overrides the day records in `person_distinct_id_overrides`.
    Partitions: one per day (`YYYY-MM-DD`, UTC) from 2024-01-01 through today.
    """
    day = date.fromisoformat(context.partition_key)
    day_seed = config.seed * 1_000_003 + day.toordinal()
    cluster = clickhouse.get_cluster(context)
    create_events_tables(cluster)
    delete_demo_day(cluster, day)
    with clickhouse.get_client(context) as client:
        written = generate_demo_events(
            client,
            start_date=day,
            days=1,
            events=config.events_per_day,
            seed=day_seed,
            team_ids=DEMO_TEAM_IDS,
            with_ip=True,
        )
        per_event = client.query_rows(
            "SELECT event, count() AS events, uniqExact(`$session_id`) AS sessions FROM events "
            "WHERE team_id IN {team_ids:Array(Int64)} AND toDate(timestamp) = {day:Date} GROUP BY event ORDER BY event",
            {"team_ids": list(DEMO_TEAM_IDS), "day": day},
        )
    # Every host holds all the overrides (see PERSON_OVERRIDES_TABLE).
    overrides = cluster.map_all_hosts(
        lambda client: insert_demo_overrides(client, start_date=day, days=1, seed=day_seed),
        "Recording the demo's person overrides",
    )
    return MaterializeResult(
        metadata={
            "rows_written": written,
            "date": day.isoformat(),
            "teams": list(DEMO_TEAM_IDS),
            "events_by_type": {row["event"]: row["events"] for row in per_event},
            "person_overrides": max(overrides.values()),
        }
    )


# The raw events as an asset of the graph. Ingestion writes them, not Dagster: the asset is never materialized
# here, and `demo_events` is upstream of it because locally the demo traffic is what fills it.
events = AssetSpec(
    EVENTS_KEY,
    description=(
        "Every event of every team, as ingestion writes it: the raw `events` table (on a cluster, `Distributed` "
        "over `sharded_events`). The web analytics pre-aggregates, the exports and the batch exports read it; "
        "data deletions and the person-overrides squash rewrite it. Locally, `demo_events` fills it."
    ),
    deps=[demo_events],
    kinds={"clickhouse"},
    tags=JobOwners.TEAM_PLATFORM.tags(),
    owners=JobOwners.TEAM_PLATFORM.asset_owners(),
    group_name="demo",
    metadata={"table": "events", "columns": "a contract: see dags/events.py"},
)


def delete_demo_day(cluster: ClickHouseCluster, day: date) -> None:
    """Delete the demo teams' events of `day`: from `events`, or on a cluster from every copy of
    `sharded_events` (a `DELETE` cannot go through a `Distributed` table)."""
    parameters = {"team_ids": list(DEMO_TEAM_IDS), "day": day}
    if cluster.is_cluster:
        cluster.map_every_copy(
            SHARDED_EVENTS,
            lambda client: client.command(DELETE_DEMO_DAY, {**parameters, "table": SHARDED_EVENTS}),
            f"Deleting the demo events of {day}",
        )
    else:
        with cluster.resource.get_client(cluster.context) as client:
            client.command(DELETE_DEMO_DAY, {**parameters, "table": "events"})


def recent_days(days: int, until: date | None = None) -> list[date]:
    """The `days` days up to and including `until` (default: yesterday), oldest first."""
    last = until or date.today() - timedelta(days=1)
    return [last - timedelta(days=offset) for offset in range(days - 1, -1, -1)]
