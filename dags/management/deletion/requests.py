"""The request table `data_deletion_requests` (a contract) and each request's status transitions.

Anyone may insert a request with the four request columns; every status column has a default, so
`INSERT INTO data_deletion_requests (team_id, key_type, key, created_at) VALUES (...)` always works.
A transition writes a new version of the request's row (ReplacingMergeTree on `version`, read with
`FINAL`), which works the same on the embedded engine and on a server, and keeps every step durable: a
run killed at any step leaves each request at the last stage it fully reached, and the next run resumes it.
"""

import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import date, datetime
from typing import Any

from dags.common import INT64_MAX, INT64_MIN, ClickHouseClient

TABLE = "data_deletion_requests"

KEY_TYPES = ("person", "team")

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
    + "".join(f"    {name} {type_} DEFAULT {default},\n" for name, (type_, default) in STATUS_COLUMNS.items())
    # One id per request, the same for every version of its row.
    + "    request_id String MATERIALIZED lower(hex(cityHash64(team_id, key_type, key, created_at))),\n"
    + "    version UInt64 DEFAULT toUnixTimestamp64Micro(now64(6))\n"
    + ")\nENGINE = ReplacingMergeTree(version)\nORDER BY (team_id, key_type, key, created_at)"
)

INSERT_REQUEST = f"""
INSERT INTO {TABLE} (team_id, key_type, key, created_at)
SELECT {{team_id:Int64}}, {{key_type:String}}, {{key:String}}, now64(6, 'UTC')
"""

SELECTED_COLUMNS = ", ".join(["request_id", *REQUEST_COLUMNS, *STATUS_COLUMNS])

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
    f"INSERT INTO {TABLE} ({', '.join([*REQUEST_COLUMNS, *STATUS_COLUMNS, 'version'])})\n"
    f"SELECT {', '.join(REQUEST_COLUMNS)}, "
    + ", ".join(
        "if({completed:Bool}, now64(6, 'UTC'), NULL)" if name == "completed_at" else f"{{{name}:{value_type(type_)}}}"
        for name, (type_, _) in STATUS_COLUMNS.items()
    )
    + ", greatest(version + 1, toUnixTimestamp64Micro(now64(6)))\n"
    + f"FROM {TABLE} FINAL\nWHERE request_id = {{request_id:String}}"
)

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
    def planned_rows(self) -> int:
        return sum(self.event_rows)

    def reached(self, stage: str) -> bool:
        """Whether the request has fully passed `stage` (a resumed request skips what it already did)."""
        return self.status in STAGES and STAGES.index(self.status) >= STAGES.index(stage)

    def describe(self) -> str:
        who = f"person {self.key}" if self.key_type == "person" else "the whole team"
        return f"request {self.request_id} (team {self.team_id}, {who})"

    def audit(self) -> dict[str, Any]:
        """What an auditor sees: who and what was removed, never the removed data."""
        return {
            "request_id": self.request_id,
            "team_id": self.team_id,
            "key_type": self.key_type,
            "key": self.key,
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
    """Create `data_deletion_requests` if it does not exist (idempotent)."""
    client.command(CREATE_REQUESTS_TABLE)


def new_request_problem(team_id: object, key_type: str, key: str) -> str | None:
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
        return f"key must be empty for a team request, got {key!r}"
    return None


def insert_request(client: ClickHouseClient, team_id: int, key_type: str, key: str) -> str:
    """Record a new pending request; returns its id. Raises `ValueError` naming the field on a bad request."""
    problem = new_request_problem(team_id, key_type, key)
    if problem is not None:
        raise ValueError(problem)
    create_requests_table(client)
    client.command(INSERT_REQUEST, {"team_id": team_id, "key_type": key_type, "key": key})
    newest = client.query_rows(
        f"SELECT request_id FROM {TABLE} FINAL WHERE team_id = {{team_id:Int64}} AND key_type = {{key_type:String}} "
        "AND key = {key:String} ORDER BY created_at DESC LIMIT 1",
        {"team_id": team_id, "key_type": key_type, "key": key},
    )
    return str(newest[0]["request_id"])


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
        return f"a team request takes an empty key, got {request.key!r}"
    if not team_has_events:
        return f"team {request.team_id} has no events"
    return None
