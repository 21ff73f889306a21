"""The op of `data_deletion_job` that reaches the batch exports: each batch export of a request's team
rewritten over the days the deletion changed (see `copy_rewrite`); `verify_and_complete` reads them back."""

from dagster import In, MetadataValue, OpExecutionContext, Output, op

from dags.common import ClickHouseResource
from dags.management.deletion import requests as store
from dags.management.deletion.changes import deletion, record_rewritten_intervals
from dags.management.deletion.copies import batch_copies
from dags.management.deletion.copy_rewrite import rewrite_copy
from dags.management.deletion.ops import DELETION_POOL, OP_TAGS, days_of, log_to, retried_when_transient


@op(
    ins={"request_ids": In(list)},
    pool=DELETION_POOL,
    tags=OP_TAGS,
    description="Rewrite the changed days of every batch export of the requests' teams (BATCH_EXPORTS_FILE): "
    "Parquet files in folders, S3 and GCS, and Postgres tables, only intervals already exported.",
)
def rewrite_batch_exports(
    context: OpExecutionContext, clickhouse: ClickHouseResource, request_ids: list[str]
) -> Output:
    with retried_when_transient(), clickhouse.get_client(context) as client:
        todo = [
            request
            for request in store.requests_by_id(client, request_ids)
            if request.reached(store.PRE_AGGREGATES_RECOMPUTED) and not request.reached(store.DONE)
        ]
    copies = batch_copies([request.team_id for request in todo])
    written: dict[str, list[str]] = {}
    with retried_when_transient(exports=True):
        for copy in copies:
            mine = [request for request in todo if copy.reached_by(request)]
            days = copy.days(days_of(mine, "event_days"), days_of(mine, "days_recomputed"))
            intervals = rewrite_copy(clickhouse, context, copy, days, context.run.run_id, log_to(context))
            record_rewritten_intervals(
                context, copy.name, copy.export.hourly, intervals, deletion([request.request_id for request in mine])
            )
            written[copy.name] = [place for _, place in intervals]
    return Output(
        [place for places in written.values() for place in places],
        metadata={"batch_exports": len(copies), "places_rewritten": MetadataValue.json(written)},
    )
