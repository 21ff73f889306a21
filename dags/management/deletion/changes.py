"""What a management job changed, recorded on the assets it changed: a materialization per asset and partition.

A deletion (or a person overrides squash) rewrites pre-aggregate days and exported files outside those assets'
own runs. Without a record the asset pages would go on showing the old materialization and its counts; with
one, an auditor and a consumer see on the asset itself that the day changed, why, and which run changed it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from dagster import AssetKey, AssetMaterialization, MetadataValue, OpExecutionContext

from dags.exports.datasets import ExportDataset, ExportWindow

REASON = "data deletion"


@dataclass(frozen=True)
class Cause:
    """Why a job rewrote what it records: the `reason` metadata, the description's words, its run's key."""

    reason: str  # "data deletion"
    by: str  # "a data deletion": "Rewritten by <by> (run ...)"
    effect: str  # what changed in the rewritten partition
    run_key: str  # the metadata key of the link to the run: "deletion_run"
    metadata: Mapping[str, Any] = field(default_factory=dict)


def deletion(request_ids: Sequence[str]) -> Cause:
    """A data deletion of these requests."""
    return Cause(
        REASON,
        "a data deletion",
        "what it removed is gone from it",
        "deletion_run",
        {"deletion_requests": MetadataValue.json(list(request_ids))},
    )


def _materialization(
    context: OpExecutionContext, key: AssetKey, partition: str, cause: Cause, metadata: dict
) -> AssetMaterialization:
    return AssetMaterialization(
        asset_key=key,
        partition=partition,
        description=f"Rewritten by {cause.by} (run {context.run_id}): {cause.effect}.",
        metadata={
            "reason": cause.reason,
            cause.run_key: MetadataValue.dagster_run(context.run_id),
            **cause.metadata,
            **metadata,
        },
    )


def record_recomputed_days(
    context: OpExecutionContext,
    rows_by_table_and_day: dict[str, dict[str, int]],
    cause: Cause,
    persons_by_table_and_day: dict[str, dict[str, int]] | None = None,
) -> None:
    """One materialization per pre-aggregate table and recomputed day, with the day's rows and unique persons now."""
    persons_by_table_and_day = persons_by_table_and_day or {}
    for table, by_day in sorted(rows_by_table_and_day.items()):
        for day, rows in sorted(by_day.items()):
            metadata = {"rows_recomputed": rows}  # the recomputed teams' rows of the day
            if table in persons_by_table_and_day:  # every team's, as on the asset's own materializations
                metadata["unique_persons"] = persons_by_table_and_day[table].get(day, 0)
            context.log_event(_materialization(context, AssetKey(table), day, cause, metadata))


def export_asset_key(dataset: ExportDataset) -> AssetKey:
    """The deployment export's asset of `dataset` (`events_export`, `web_pre_aggregated_stats_export`)."""
    return AssetKey(f"{dataset.name}_export")


def record_rewritten_files(
    context: OpExecutionContext, dataset: ExportDataset, files: Iterable[tuple[date, str]], cause: Cause
) -> None:
    """One materialization of the deployment export per rewritten day, naming the file."""
    for day, url in files:
        metadata = {"file": url}
        context.log_event(_materialization(context, export_asset_key(dataset), day.isoformat(), cause, metadata))


def batch_export_partitions_of(window: ExportWindow, hourly: bool) -> list[str]:
    """The partition keys of a batch export that one rewritten interval covers (a day of an hourly export that a
    Postgres table replaces whole covers its 24 hours)."""
    if not hourly:
        return [window.day.isoformat()]
    hours = int((window.end - window.start) / timedelta(hours=1))
    return [(window.start + timedelta(hours=hour)).strftime("%Y-%m-%d-%H:%M") for hour in range(hours)]


def record_rewritten_intervals(
    context: OpExecutionContext,
    export_name: str,
    hourly: bool,
    places: Iterable[tuple[ExportWindow, str]],
    cause: Cause,
) -> None:
    """One materialization of the batch export per partition its rewritten intervals cover."""
    key = AssetKey(["batch_exports", export_name])
    for window, place in places:
        for partition in batch_export_partitions_of(window, hourly):
            context.log_event(_materialization(context, key, partition, cause, {"place": place}))
