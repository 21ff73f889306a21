"""Which copies of a team's data the project made besides the deployment's exports: the batch exports declared
in `BATCH_EXPORTS_FILE` for that team, and the intervals of each that hold a deletion's days.

Read when a deletion run needs them, not when the location loads: a broken file fails the deletion run naming
the variable, and leaves the backups of the same location running.
"""

import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta

from dagster import Failure

from dags.exports.datasets import DATASETS, EVENTS_DATASET, ExportDataset, ExportWindow
from dags.exports.declarations import BatchExport, BatchExportsFileError, load_batch_exports
from dags.exports.destinations.base import Destination
from dags.exports.destinations.postgres import PostgresTable
from dags.exports.manifest import DATA_FILE
from dags.exports.resource import ExportDestination
from dags.exports.settings import load_export_settings
from dags.management.deletion.requests import DeletionRequest


@dataclass(frozen=True)
class BatchCopy:
    """One batch export: a copy of one team's rows of one dataset (a Parquet file per interval, or a table)."""

    export: BatchExport

    @property
    def name(self) -> str:
        return self.export.name

    @property
    def dataset(self) -> ExportDataset:
        return DATASETS[self.export.dataset]

    @property
    def resource(self) -> ExportDestination:
        return ExportDestination(url=self.export.destination, credentials_env=self.export.credentials_env)

    @property
    def columns(self) -> tuple[str, ...]:
        return self.export.columns or self.dataset.columns

    @property
    def holds_persons(self) -> bool:
        """Whether a person's rows can be told apart in this copy (an events copy with `person_id`)."""
        return self.dataset.name == EVENTS_DATASET.name and "person_id" in self.columns

    @property
    def holds_teams(self) -> bool:
        return "team_id" in self.columns

    @property
    def holds_properties(self) -> bool:
        """Whether the copy holds `properties` (an events copy with that column)."""
        return self.dataset.name == EVENTS_DATASET.name and "properties" in self.columns

    def reached_by(self, request: DeletionRequest) -> bool:
        """Whether `request` changes this copy: any request of its team, except a `properties` request for an
        events copy without `properties` (its rows stay and it holds no key); a pre-aggregate copy is reached
        through its recomputed days."""
        if request.team_id != self.export.team_id:
            return False
        return not request.removes_properties or self.dataset.name != EVENTS_DATASET.name or self.holds_properties

    def days(self, event_days: Sequence[date], pre_aggregate_days: Sequence[date]) -> list[date]:
        """The deletion's days this copy may hold: events days for events, recomputed days for the
        pre-aggregates."""
        return sorted(set(event_days if self.dataset.name == EVENTS_DATASET.name else pre_aggregate_days))

    def intervals(self, destination: Destination | PostgresTable, days: Sequence[date]) -> list[ExportWindow]:
        """The intervals of `days` this copy holds: each exported file (a day, or each hour of it) for Parquet;
        each whole day for a table (one transaction replaces it, whatever the export's interval)."""
        if isinstance(destination, PostgresTable):
            return [ExportWindow.of_day(day) for day in days]
        windows: list[ExportWindow] = []
        for day in days:
            day_window = ExportWindow.of_day(day)
            candidates = (
                [ExportWindow.of_hour(day_window.start + timedelta(hours=hour)) for hour in range(24)]
                if self.export.hourly
                else [day_window]
            )
            windows += [window for window in candidates if destination.exists(file_path(self, window))]
        return windows


def file_path(copy: BatchCopy, window: ExportWindow) -> str:
    """The interval's Parquet file, relative to the copy's destination."""
    return f"{window.folder(copy.dataset.name)}/{DATA_FILE}"


def place_of(copy: BatchCopy, destination: Destination | PostgresTable, window: ExportWindow) -> str:
    """How the plan, the log and the audit record name one interval of a copy (never with a credential)."""
    if isinstance(destination, PostgresTable):
        return f"{destination.url} ({copy.dataset.time_column} on {window.label})"
    return destination.url_of(file_path(copy, window))


def planned_places(copies: Sequence[BatchCopy], requests: Sequence[DeletionRequest]) -> list[str]:
    """Every place of `copies` that the planned `requests` of their teams reach."""
    places: list[str] = []
    for copy in copies:
        mine = [request for request in requests if copy.reached_by(request)]
        event_days = [day for request in mine for day in request.event_days]
        pre_aggregate_days = [day for request in mine for day in request.pre_aggregate_days]
        destination = copy.resource.open()
        for window in copy.intervals(destination, copy.days(event_days, pre_aggregate_days)):
            places.append(place_of(copy, destination, window))
    return places


def batch_copies(team_ids: Sequence[int]) -> list[BatchCopy]:
    """The batch exports of these teams declared in `BATCH_EXPORTS_FILE`; a file that cannot be used fails the
    run naming the variable (a missing default file declares none)."""
    settings = load_export_settings()
    try:
        exports = load_batch_exports(
            settings.batch_exports_file,
            settings.dagster_home,
            required=bool(os.environ.get("BATCH_EXPORTS_FILE", "").strip()),
        )
    except BatchExportsFileError as error:
        raise Failure(
            description=f"BATCH_EXPORTS_FILE: the deletion cannot list the batch exports it must reach: {error}",
            allow_retries=False,
        ) from None
    wanted = set(team_ids)
    return [BatchCopy(export) for export in exports if export.team_id in wanted]
