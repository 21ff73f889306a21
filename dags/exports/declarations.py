"""The batch exports users declare in `BATCH_EXPORTS_FILE` (a contract): one entry per export, validated
whole when the location loads, with every problem listed (entry, field, what is allowed).

```yaml
exports:
  - name: acme_pageviews            # [a-z][a-z0-9_]*, unique; asset key batch_exports/<name>
    team_id: 2
    dataset: events                 # events | web_pre_aggregated_stats | web_pre_aggregated_bounces
    destination: s3://acme-bucket/posthog
    credentials_env: {AWS_ACCESS_KEY_ID: ACME_AWS_KEY_ID, AWS_SECRET_ACCESS_KEY: ACME_AWS_SECRET}
    interval: hour                  # hour | day
    start: 2024-01-01
    events: [$pageview]             # optional (events only)
    exclude_events: [$autocapture]  # optional (events only)
    columns: [uuid, event, timestamp, distinct_id, properties]   # optional subset, in this order
    alert_channel: "#team-2-exports"   # optional: failed runs alert this Slack channel (quoted: # starts a comment)
```

`${DAGSTER_HOME}` in a destination stands for the Dagster instance folder, so that examples can write
under it (`file://${DAGSTER_HOME}/batch_exports/...`); nothing else is expanded.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from yaml.events import AliasEvent

from dags.common import ALERT_CHANNEL_TAG, INT64_MAX
from dags.exports.datasets import DATASETS, ExportSelection
from dags.exports.destination_overlap import overlap_problems
from dags.exports.resource import CREDENTIAL_NAMES, parse_destination_url

NAME_PATTERN = r"^[a-z][a-z0-9_]*$"
# A Slack channel name (lowercase letters, digits, - and _), at most 63 characters after the # so that it fits
# a Dagster asset tag.
ALERT_CHANNEL_PATTERN = r"^#[a-z0-9_-]{1,63}$"
DAGSTER_HOME_PLACEHOLDER = "${DAGSTER_HOME}"


class BatchExportsFileError(ValueError):
    """The batch exports file cannot be used; the message lists every problem in it."""


class BatchExport(BaseModel):
    """One export a user owns: one team's rows of one dataset, to one destination, every hour or day."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=NAME_PATTERN, max_length=100)
    team_id: int = Field(strict=True, ge=1, le=INT64_MAX)
    dataset: Literal["events", "web_pre_aggregated_stats", "web_pre_aggregated_bounces"]
    destination: str
    credentials_env: dict[str, str] = Field(default_factory=dict)
    interval: Literal["hour", "day"]
    start: date
    events: tuple[str, ...] = ()
    exclude_events: tuple[str, ...] = ()
    columns: tuple[str, ...] = ()
    alert_channel: str | None = Field(default=None, pattern=ALERT_CHANNEL_PATTERN)

    @property
    def selection(self) -> ExportSelection:
        return ExportSelection(
            team_ids=(self.team_id,), events=self.events, exclude_events=self.exclude_events, columns=self.columns
        )

    @property
    def hourly(self) -> bool:
        return self.interval == "hour"

    @property
    def alert_tags(self) -> dict[str, str]:
        """The `alert_channel` tag of the export's asset and jobs: the channel without its `#`."""
        return {ALERT_CHANNEL_TAG: self.alert_channel.lstrip("#")} if self.alert_channel else {}


def entry_problems(entry: BatchExport, dagster_home: Path) -> list[tuple[str, str]]:
    """`(field, problem)` for what the field types alone do not catch. `entry` may be partial (built
    from the fields that passed their type checks): a field it lacks is not checked."""
    problems: list[tuple[str, str]] = []
    dataset = DATASETS.get(getattr(entry, "dataset", ""))
    destination: str | None = getattr(entry, "destination", None)
    scheme = ""
    if destination is not None:
        try:
            scheme, _, _ = parse_destination_url(expand_destination(destination, dagster_home))
        except ValueError as error:
            problems.append(("destination", str(error)))
    for name, variable in getattr(entry, "credentials_env", {}).items():
        if name not in CREDENTIAL_NAMES:
            problems.append(
                ("credentials_env", f"{name!r} is not a credential; allowed: {', '.join(CREDENTIAL_NAMES)}")
            )
        if not variable.replace("_", "").isalnum() or variable[0].isdigit():
            problems.append(
                ("credentials_env", f"the value given for {name} must be the name of an environment variable")
            )
    columns: tuple[str, ...] = tuple(getattr(entry, "columns", ()))
    if len(set(columns)) != len(columns):
        problems.append(("columns", "a column is listed twice"))
    if dataset is None:
        return problems
    for field_name in ("events", "exclude_events"):
        if getattr(entry, field_name, ()) and not dataset.has_events:
            problems.append((field_name, f"only the events dataset has events; {dataset.name} has none"))
    unknown = [column for column in columns if column not in dataset.columns]
    if unknown:
        problems.append(
            ("columns", f"{dataset.name} has no column(s) {', '.join(unknown)}; it has {', '.join(dataset.columns)}")
        )
    if scheme == "postgresql" and columns and dataset.time_column not in columns:
        problems.append(
            ("columns", f"a Postgres export must include {dataset.time_column}: a rerun replaces an interval by it")
        )
    return problems


def partial_entry(raw: dict[str, Any], error: ValidationError) -> BatchExport:
    """The fields of `raw` that passed their type checks, unvalidated as a whole, so that the checks of
    `entry_problems` still run on them: a type error in one field hides no other problem of the entry."""
    failed = {issue["loc"][0] for issue in error.errors() if issue["loc"]}
    valid = {name: value for name, value in raw.items() if name in BatchExport.model_fields and name not in failed}
    return BatchExport.model_construct(**valid)


def expand_destination(destination: str, dagster_home: Path) -> str:
    """The destination with `${DAGSTER_HOME}` replaced by the instance folder (the only placeholder)."""
    home = dagster_home.as_posix().lstrip("/")
    return destination.replace(f"file://{DAGSTER_HOME_PLACEHOLDER}", f"file:///{home}")


MAX_ALIASES = 20  # bounds what aliases can expand to (an alias bomb: a few lines, gigabytes) yet allows anchors


class _NoAliasLoader(yaml.SafeLoader):
    """A safe loader that refuses more than `MAX_ALIASES` YAML aliases."""

    aliases = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(AliasEvent):
            self.aliases += 1
            if self.aliases > MAX_ALIASES:
                mark = self.peek_event().start_mark
                raise BatchExportsFileError(
                    f"more than {MAX_ALIASES} aliases (*name) in a batch exports file (line {mark.line + 1})"
                )
        return super().compose_node(parent, index)


def read_document(path: Path, required: bool) -> Any:
    """The YAML document in `path`; every way the file cannot be read is a `BatchExportsFileError`."""
    if not path.exists():
        if required:
            raise BatchExportsFileError(f"BATCH_EXPORTS_FILE names {path}, which does not exist")
        return {}
    try:
        text = path.read_bytes().decode("utf-8")
    except IsADirectoryError:
        raise BatchExportsFileError(f"{path} is a folder, not a batch exports file") from None
    except UnicodeDecodeError as error:
        raise BatchExportsFileError(f"{path} is not UTF-8 text (byte {error.start})") from None
    except OSError as error:
        raise BatchExportsFileError(f"{path} cannot be read: {error.strerror}") from None
    try:
        return yaml.load(text, Loader=_NoAliasLoader) or {}  # noqa: S506 - a SafeLoader subclass
    except BatchExportsFileError as error:
        raise BatchExportsFileError(f"{path}: {error}") from None
    except yaml.YAMLError as error:
        raise BatchExportsFileError(f"{path} is not valid YAML: {error}") from None
    except ValueError as error:  # e.g. an impossible date such as 2024-02-30
        raise BatchExportsFileError(f"{path} holds a value YAML cannot read: {error}") from None


def load_batch_exports(
    path: Path, dagster_home: Path, *, required: bool = False, deployment_destinations: dict[str, str] | None = None
) -> list[BatchExport]:
    """The exports declared in `path`, with destinations expanded; every problem raises together.

    A missing file declares no exports (a deployment without batch exports) unless `required`
    (`BATCH_EXPORTS_FILE` named it). `deployment_destinations` (variable -> URL) are places no export may
    overlap.
    """
    document = read_document(path, required)
    if not isinstance(document, dict) or set(document) - {"exports"}:
        raise BatchExportsFileError(f"{path}: the file must hold one key, exports: a list of exports")
    entries = document.get("exports") or []
    if not isinstance(entries, list):
        raise BatchExportsFileError(f"{path}: exports must be a list of exports")

    problems: list[str] = []
    exports: list[BatchExport] = []
    places: list[tuple[str, str]] = []  # (label, expanded destination) of every entry that names one
    seen: dict[str, int] = {}
    for index, raw in enumerate(entries):
        name = raw.get("name") if isinstance(raw, dict) else None
        where = f"exports[{index}]" + (f" ({name})" if name else "")
        if isinstance(name, str) and name in seen:
            problems.append(f"{where}.name: {name!r} is already the name of exports[{seen[name]}]")
        if isinstance(name, str):
            seen.setdefault(name, index)
        if isinstance(raw, dict) and "alert_channel" in raw and raw["alert_channel"] is None:
            problems.append(
                f'{where}.alert_channel: empty; quote the channel, alert_channel: "#team-exports" '
                "(YAML reads an unquoted # as the start of a comment)"
            )
        try:
            entry = BatchExport.model_validate(raw)
        except ValidationError as error:
            problems.extend(f"{where}.{_field(issue)}: {_message(issue)}" for issue in error.errors())
            if not isinstance(raw, dict):
                continue
            entry = partial_entry(raw, error)
        else:
            exports.append(
                entry.model_copy(update={"destination": expand_destination(entry.destination, dagster_home)})
            )
        problems.extend(f"{where}.{field}: {problem}" for field, problem in entry_problems(entry, dagster_home))
        if isinstance(getattr(entry, "destination", None), str):
            places.append((where, expand_destination(entry.destination, dagster_home)))
    problems.extend(overlap_problems(places, list((deployment_destinations or {}).items())))
    if problems:
        raise BatchExportsFileError(
            f"{path} has {len(problems)} problem(s):\n" + "\n".join(f"- {problem}" for problem in problems)
        )
    return exports


def _field(issue: dict[str, Any]) -> str:
    return ".".join(str(part) for part in issue["loc"]) or "(entry)"


def _message(issue: dict[str, Any]) -> str:
    if issue["type"] == "extra_forbidden":
        return f"unknown field; allowed: {', '.join(BatchExport.model_fields)}"
    if issue["type"] == "missing":
        return "required"
    if issue["type"] == "string_pattern_mismatch" and issue["loc"][:1] == ("alert_channel",):
        return (
            f"{issue['input']!r} is not a Slack channel: # then at most 63 lowercase letters, digits, - and _ "
            '(e.g. "#team-2-exports")'
        )
    if issue["type"] == "string_pattern_mismatch":
        return f"{issue['input']!r} must be lowercase letters, digits and _, starting with a letter"
    if issue["type"] == "literal_error":
        return f"{issue['input']!r} is not allowed; {issue['msg'][0].lower()}{issue['msg'][1:]}"
    return f"{issue['msg']} (got {issue['input']!r})"
