"""The request table `data_deletion_requests` (a contract) and each request's status transitions.

Anyone may insert a request with the four request columns; every other column has a default, so
`INSERT INTO data_deletion_requests (team_id, key_type, key, created_at) VALUES (...)` always works.
A `properties` request (remove property keys from a team's events) also sets `properties` and, optionally,
`events`, `start_time` and `end_time`: columns added with defaults, to an existing table too
(`ADD COLUMN IF NOT EXISTS`), so rows and inserts of the older shape keep working.
A transition writes a new version of the request's row (ReplacingMergeTree on `version`, read with
`FINAL`), which works the same on the embedded engine and on a server, and keeps every step durable: a
run killed at any step leaves each request at the last stage it fully reached, and the next run resumes it.
"""

import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, date, datetime
from typing import Any

from dags.common import INT64_MAX, INT64_MIN, ClickHouseClient

TABLE = "data_deletion_requests"

KEY_TYPES = ("person", "team", "properties")
PROPERTIES = "properties"

# The stages a request goes through, in order; `rejected` ends a malformed request.
PENDING = "pending"
PLANNED = "planned"  # what to delete is recorded (days and rows); nothing changed yet
EVENTS_DELETED = "events_deleted"
PRE_AGGREGATES_RECOMPUTED = "pre_aggregates_recomputed"
DONE = "done"
REJECTED = "rejected"
STAGES = (PENDING, PLANNED, EVENTS_DELETED, PRE_AGGREGATES_RECOMPUTED, DONE)
OPEN_STAGES = (PENDING, PLANNED, EVENTS_DELETED, PRE_AGGREGATES_RECOMPUTED)

# The request itself: what a user inserts.
REQUEST_COLUMNS: dict[str, str] = {
    "team_id": "Int64",
    "key_type": "String",  # person: one person's events by person_id; team: every event of the team
    "key": "String",  # the person's UUID as text; empty for a team
    "created_at": "DateTime64(6, 'UTC')",
}

# What a `properties` request removes, each with its default (added to an existing table when missing): part of
# the request, copied unchanged into every status transition. Empty for person and team requests.
SCOPE_COLUMNS: dict[str, tuple[str, str]] = {
    "properties": ("Array(String)", "[]"),  # the property keys to remove (required for key_type properties)
    "events": ("Array(String)", "[]"),  # only these events (empty: every event of the team)
    "start_time": ("Nullable(DateTime64(6, 'UTC'))", "NULL"),  # only events at or after it (NULL: no bound)
    "end_time": ("Nullable(DateTime64(6, 'UTC'))", "NULL"),  # only events before it (NULL: no bound)
}

# What the deletion job records, each with its default. Declared once: the DDL and every transition come
# from here. Only identifiers and counts are stored, never the deleted events.
STATUS_COLUMNS: dict[str, tuple[str, str]] = {
    "status": ("LowCardinality(String)", f"'{PENDING}'"),
    "reason": ("String", "''"),  # why a request was rejected
    "event_days": ("Array(Date)", "[]"),  # the plan: days that held the request's events ...
    "event_rows": ("Array(UInt64)", "[]"),  # ... and their rows, recorded before anything is deleted
    "pre_aggregate_days": ("Array(Date)", "[]"),  # days whose pre-aggregates the deletion changes
    "rows_deleted": ("UInt64", "0"),
    "days_recomputed": ("Array(Date)", "[]"),
    "files_rewritten": ("Array(String)", "[]"),
    "run_id": ("String", "''"),  # the run that last moved the request
    "completed_at": ("Nullable(DateTime64(6, 'UTC'))", "NULL"),
}


def value_type(column_type: str) -> str:
    """The type a value of the column is bound as (`LowCardinality` is a storage choice, not a type)."""
    if column_type.startswith("LowCardinality("):
        return column_type.removeprefix("LowCardinality(").removesuffix(")")
    return column_type


CREATE_REQUESTS_TABLE = (
    f"CREATE TABLE IF NOT EXISTS {TABLE}\n(\n"
    + "".join(f"    {name} {type_},\n" for name, type_ in REQUEST_COLUMNS.items())
    + "".join(f"    {name} {type_} DEFAULT {default},\n" for name, (type_, default) in SCOPE_COLUMNS.items())
    + "".join(f"    {name} {type_} DEFAULT {default},\n" for name, (type_, default) in STATUS_COLUMNS.items())
    # One id per request, the same for every version of its row.
    + "    request_id String MATERIALIZED lower(hex(cityHash64(team_id, key_type, key, created_at))),\n"
    + "    version UInt64 DEFAULT toUnixTimestamp64Micro(now64(6))\n"
    + ")\nENGINE = ReplacingMergeTree(version)\nORDER BY (team_id, key_type, key, created_at)"
)

# A table created before `properties` requests existed gets their columns, with the same defaults.
TABLE_COLUMNS = f"SELECT name FROM system.columns WHERE database = currentDatabase() AND table = '{TABLE}'"
ADD_SCOPE_COLUMNS = f"ALTER TABLE {TABLE} " + ", ".join(
    f"ADD COLUMN IF NOT EXISTS {name} {type_} DEFAULT {default}" for name, (type_, default) in SCOPE_COLUMNS.items()
)

# Times are bound as text ('' for no bound: NULL): the same on every client, whatever it makes of a NULL parameter.
# `time_text` writes them, so a time that does not parse never reaches here.
INSERT_REQUEST = f"""
INSERT INTO {TABLE} (team_id, key_type, key, created_at, properties, events, start_time, end_time)
SELECT {{team_id:Int64}}, {{key_type:String}}, {{key:String}}, now64(6, 'UTC'),
       {{properties:Array(String)}}, {{events:Array(String)}},
       if({{start_time:String}} = '', NULL, toDateTime64OrNull({{start_time:String}}, 6, 'UTC')),
       if({{end_time:String}} = '', NULL, toDateTime64OrNull({{end_time:String}}, 6, 'UTC'))
"""

SELECTED_COLUMNS = ", ".join(["request_id", *REQUEST_COLUMNS, *SCOPE_COLUMNS, *STATUS_COLUMNS])

OPEN_REQUESTS = f"""
SELECT {SELECTED_COLUMNS}
FROM {TABLE} FINAL
WHERE status IN {{stages:Array(String)}}
ORDER BY created_at, request_id
LIMIT {{limit:UInt32}}
"""

REQUESTS_BY_ID = f"""
SELECT {SELECTED_COLUMNS}
FROM {TABLE} FINAL
WHERE request_id IN {{request_ids:Array(String)}}
ORDER BY created_at, request_id
"""

# A transition: the request's identity copied from its current row, every status column bound.
WRITE_STATUS = (
    f"INSERT INTO {TABLE} ({', '.join([*REQUEST_COLUMNS, *SCOPE_COLUMNS, *STATUS_COLUMNS, 'version'])})\n"
    f"SELECT {', '.join([*REQUEST_COLUMNS, *SCOPE_COLUMNS])}, "
    + ", ".join(
        "if({completed:Bool}, now64(6, 'UTC'), NULL)" if name == "completed_at" else f"{{{name}:{value_type(type_)}}}"
        for name, (type_, _) in STATUS_COLUMNS.items()
    )
    + ", greatest(version + 1, toUnixTimestamp64Micro(now64(6)))\n"
    + f"FROM {TABLE} FINAL\nWHERE request_id = {{request_id:String}}"
)

OPEN_REQUEST_COUNT = f"SELECT count() AS requests FROM {TABLE} FINAL WHERE status IN {{stages:Array(String)}}"

OVERDUE_REQUESTS = f"""
SELECT count() AS requests, min(created_at) AS oldest
FROM {TABLE} FINAL
WHERE status IN {{stages:Array(String)}}
  AND created_at < now64(6, 'UTC') - toIntervalHour({{hours:UInt32}})
"""


@dataclass(frozen=True)
class DeletionRequest:
    """One request and what the deletion job has recorded about it so far."""

    request_id: str
    team_id: int
    key_type: str
    key: str
    created_at: datetime
    properties: list[str] = field(default_factory=list)
    events: list[str] = field(default_factory=list)
    start_time: datetime | None = None
    end_time: datetime | None = None
    status: str = PENDING
    reason: str = ""
    event_days: list[date] = field(default_factory=list)
    event_rows: list[int] = field(default_factory=list)
    pre_aggregate_days: list[date] = field(default_factory=list)
    rows_deleted: int = 0
    days_recomputed: list[date] = field(default_factory=list)
    files_rewritten: list[str] = field(default_factory=list)
    run_id: str = ""
    completed_at: datetime | None = None

    @property
    def is_whole_team(self) -> bool:
        return self.key_type == "team"

    @property
    def removes_properties(self) -> bool:
        """A `properties` request: its rows stay, only the listed keys leave their `properties`."""
        return self.key_type == PROPERTIES

    @property
    def planned_rows(self) -> int:
        return sum(self.event_rows)

    def reached(self, stage: str) -> bool:
        """Whether the request has fully passed `stage` (a resumed request skips what it already did)."""
        return self.status in STAGES and STAGES.index(self.status) >= STAGES.index(stage)

    def describe(self) -> str:
        if self.removes_properties:
            return f"request {self.request_id} (team {self.team_id}, properties {', '.join(self.properties)})"
        who = f"person {self.key}" if self.key_type == "person" else "the whole team"
        return f"request {self.request_id} (team {self.team_id}, {who})"

    def audit(self) -> dict[str, Any]:
        """What an auditor sees: who and what was removed, never the removed data."""
        return {
            "request_id": self.request_id,
            "team_id": self.team_id,
            "key_type": self.key_type,
            "key": self.key,
            **(
                {
                    "properties": list(self.properties),
                    "events": list(self.events),
                    "start_time": self.start_time.isoformat() if self.start_time else None,
                    "end_time": self.end_time.isoformat() if self.end_time else None,
                }
                if self.removes_properties
                else {}
            ),
            "status": self.status,
            "reason": self.reason,
            "rows_by_day": {day.isoformat(): rows for day, rows in zip(self.event_days, self.event_rows, strict=True)},
            "rows_deleted": self.rows_deleted,
            "days_recomputed": [day.isoformat() for day in self.days_recomputed],
            "files_rewritten": list(self.files_rewritten),
            "run_id": self.run_id,
            "completed_at": self.completed_at.isoformat() if self.completed_at else None,
        }


def create_requests_table(client: ClickHouseClient) -> None:
    """Create `data_deletion_requests` if it does not exist, and add the columns an older table lacks
    (idempotent; existing rows read the defaults)."""
    client.command(CREATE_REQUESTS_TABLE)
    present = {row["name"] for row in client.query_rows(TABLE_COLUMNS)}
    if not set(SCOPE_COLUMNS) <= present:
        client.command(ADD_SCOPE_COLUMNS)


def scope_problem(
    key_type: str,
    properties: Sequence[object],
    events: Sequence[object],
    start_time: datetime | None,
    end_time: datetime | None,
) -> str | None:
    """Why a request's `properties`, `events`, `start_time` and `end_time` cannot be carried out (naming the
    field), or None. Only a `properties` request takes them, and it needs at least one key."""
    if key_type != PROPERTIES:
        scope = {"properties": list(properties), "events": list(events), "start_time": start_time, "end_time": end_time}
        for name, value in scope.items():
            if value:
                return f"{name} must be empty for a {key_type} request (only key_type properties takes it), got {value}"
        return None
    if not properties:
        return "properties must list at least one property key to remove, got []"
    for name, values in (("properties", properties), ("events", events)):
        bad = [value for value in values if not isinstance(value, str) or not value]
        if bad:
            return f"{name} must hold non-empty strings only, got {list(values)!r}"
    if start_time is not None and end_time is not None and not start_time < end_time:
        return f"start_time must be before end_time, got start_time {start_time} and end_time {end_time}"
    return None


def new_request_problem(
    team_id: object,
    key_type: str,
    key: str,
    properties: Sequence[object] = (),
    events: Sequence[object] = (),
    start_time: datetime | None = None,
    end_time: datetime | None = None,
) -> str | None:
    """Why a request cannot be recorded (naming the field), or None: checked before anything is written."""
    if isinstance(team_id, bool) or not isinstance(team_id, int):
        return f"team_id must be a whole number, got {team_id!r}"
    if not INT64_MIN <= team_id <= INT64_MAX:
        return f"team_id must be between {INT64_MIN} and {INT64_MAX} (Int64), got {team_id}"
    if key_type not in KEY_TYPES:
        return f"key_type must be one of {', '.join(KEY_TYPES)}, got {key_type!r}"
    if key_type == "person":
        try:
            canonical = str(uuid.UUID(key)) == key.lower()
        except ValueError:
            canonical = False
        if not canonical:
            example = "0190f2c4-8a4e-7a6b-9c1d-2e3f4a5b6c7d"
            return f"key must be a person UUID (like {example}), not a distinct_id: got {key!r}"
    elif key:
        return f"key must be empty for a {key_type} request, got {key!r}"
    return scope_problem(key_type, properties, events, start_time, end_time)


def insert_request(
    client: ClickHouseClient,
    team_id: int,
    key_type: str,
    key: str,
    properties: Sequence[str] = (),
    events: Sequence[str] = (),
    start_time: datetime | None = None,
    end_time: datetime | None = None,
) -> str:
    """Record a new pending request; returns its id. Raises `ValueError` naming the field on a bad request."""
    problem = new_request_problem(team_id, key_type, key, properties, events, start_time, end_time)
    if problem is not None:
        raise ValueError(problem)
    create_requests_table(client)
    client.command(
        INSERT_REQUEST,
        {
            "team_id": team_id,
            "key_type": key_type,
            "key": key,
            "properties": list(properties),
            "events": list(events),
            "start_time": time_text(start_time),
            "end_time": time_text(end_time),
        },
    )
    newest = client.query_rows(
        f"SELECT request_id FROM {TABLE} FINAL WHERE team_id = {{team_id:Int64}} AND key_type = {{key_type:String}} "
        "AND key = {key:String} ORDER BY created_at DESC LIMIT 1",
        {"team_id": team_id, "key_type": key_type, "key": key},
    )
    return str(newest[0]["request_id"])


def time_text(moment: datetime | None) -> str:
    """A time as the SQL binds it (`toDateTime64(text, 6, 'UTC')`: UTC, microseconds), or '' for no bound."""
    if moment is None:
        return ""
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment.isoformat(sep=" ", timespec="microseconds")


def _from_row(row: dict[str, Any]) -> DeletionRequest:
    return DeletionRequest(**{name: row[name] for name in DeletionRequest.__dataclass_fields__})


def open_requests(client: ClickHouseClient, limit: int) -> list[DeletionRequest]:
    """Requests not yet done or rejected, oldest first: pending ones and those a killed run left behind."""
    rows = client.query_rows(OPEN_REQUESTS, {"stages": list(OPEN_STAGES), "limit": limit})
    return [_from_row(row) for row in rows]


def requests_by_id(client: ClickHouseClient, request_ids: Sequence[str]) -> list[DeletionRequest]:
    return [_from_row(row) for row in client.query_rows(REQUESTS_BY_ID, {"request_ids": list(request_ids)})]


def write_status(client: ClickHouseClient, request: DeletionRequest, **changes: Any) -> DeletionRequest:
    """Record the request's next state (a new version of its row); returns it."""
    updated = replace(request, **changes)
    values = asdict(updated)
    parameters = {name: values[name] for name in STATUS_COLUMNS if name != "completed_at"}
    client.command(
        WRITE_STATUS,
        {**parameters, "completed": updated.status == DONE, "request_id": request.request_id},
    )
    return updated


def rejection_reason(request: DeletionRequest, team_has_events: bool) -> str | None:
    """Why a pending request cannot be carried out, or None when it is well-formed."""
    if request.key_type not in KEY_TYPES:
        return f"unknown key_type {request.key_type!r}: use one of {', '.join(KEY_TYPES)}"
    if request.key_type == "person":
        try:
            canonical = str(uuid.UUID(request.key)) == request.key.lower()
        except ValueError:
            canonical = False
        if not canonical:
            return f"key {request.key!r} is not a person UUID (like 0190f2c4-8a4e-7a6b-9c1d-2e3f4a5b6c7d)"
    elif request.key:
        return f"a {request.key_type} request takes an empty key, got {request.key!r}"
    scope = scope_problem(request.key_type, request.properties, request.events, request.start_time, request.end_time)
    if scope:
        return scope
    if not team_has_events:
        return f"team {request.team_id} has no events"
    return None
