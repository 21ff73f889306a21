"""Daily and hourly exchange-rate assets, their jobs and schedules.

`*_exchange_rates` fetch and validate one day of rates per partition (units per 1 USD) and keep them as
JSON files, one per partition; `*_in_clickhouse` write them into `exchange_rate` in one insert and
reload `exchange_rate_dict` on every host. A range of partitions (a backfill, even of the whole ECB
history) runs as one run: the backfill policy is single-run and every step reads the whole range.
"""

import time
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

from dagster import (
    AssetExecutionContext,
    AssetIn,
    BackfillPolicy,
    DailyPartitionsDefinition,
    Failure,
    HourlyPartitionsDefinition,
    MaterializeResult,
    Output,
    RunRequest,
    ScheduleEvaluationContext,
    asset,
    define_asset_job,
    schedule,
)

from dags.common import (
    CLICKHOUSE_RETRY_POLICY,
    EXTERNAL_API_RETRY_POLICY,
    ClickHouseResource,
    JobOwners,
    redact_url,
)
from dags.exchange_rate.day_files import IO_MANAGER_KEY
from dags.exchange_rate.settings import load_exchange_rate_settings
from dags.exchange_rate.sources import (
    ECB_FIRST_DAY,
    DayRates,
    ExchangeRateSource,
    ExchangeRateSourceError,
    TransientSourceError,
    summarize,
)
from dags.exchange_rate.storage import DICTIONARY, RELOAD_DICTIONARY, TABLE, dictionary_answers, write_rates

OWNER_TAGS = JobOwners.TEAM_REVENUE_ANALYTICS.tags()
GROUP = "exchange_rates"

# Hourly runs refresh today's rates; history before this comes from the daily assets.
HOURLY_FIRST_DAY = date(2025, 1, 1)
HOURLY_KEY_FORMAT = "%Y-%m-%d-%H:%M"


def _start_date() -> date:
    start = date.fromisoformat(load_exchange_rate_settings().start_date)
    if start < ECB_FIRST_DAY:
        raise ValueError(
            f"EXCHANGE_RATE_START_DATE is {start}, before {ECB_FIRST_DAY} (the first ECB reference rates): "
            "set it to that day or later"
        )
    return start


DAILY_PARTITIONS = DailyPartitionsDefinition(start_date=_start_date().isoformat())
HOURLY_PARTITIONS = HourlyPartitionsDefinition(
    start_date=f"{max(_start_date(), HOURLY_FIRST_DAY).isoformat()}-00:45", minute_offset=45, end_offset=1
)


def day_of_partition(partition_key: str) -> date:
    """The day a daily (`2024-03-15`) or hourly (`2024-03-15-10:45`) partition refreshes."""
    return date.fromisoformat(partition_key[:10])


# --- The two steps, shared by the daily and the hourly assets ------------------------------------------


def fetch_partitions(
    context: AssetExecutionContext, source: ExchangeRateSource, partition_keys: Sequence[str]
) -> Output[dict[str, DayRates]]:
    """Fetch every day the partitions cover in one go; each partition gets its day's rates."""
    days = sorted({day_of_partition(key) for key in partition_keys})
    started = time.monotonic()
    error: ExchangeRateSourceError | None = None
    try:
        fetched = source.fetch(days[0], days[-1])
    except ExchangeRateSourceError as exception:
        error = exception
    if error is not None:
        # Transient trouble (429, 5xx) that outlasted the request retries gets the step retries; anything
        # else will not get better by retrying.
        raise Failure(
            description=str(error),
            metadata={"source": source.source, "date": _label(days)},
            allow_retries=isinstance(error, TransientSourceError),
        )
    by_day = {day_rates.day: day_rates for day_rates in fetched}
    summary = summarize(fetched)
    if summary["carried_forward_days"]:
        context.log.info(
            f"{summary['carried_forward_days']} of {len(fetched)} days have no publication of their own and carry "
            "forward the rates of the last day published (weekends, holidays): see carried_forward_from"
        )
    metadata = {**summary, "fetch_seconds": round(time.monotonic() - started, 3)}
    if source.source == "ecb":
        metadata["ecb_url"] = redact_url(source.ecb_url)
    return Output({key: by_day[day_of_partition(key)] for key in partition_keys}, metadata=metadata)


def store_partitions(
    context: AssetExecutionContext, clickhouse: ClickHouseResource, by_partition: dict[str, DayRates]
) -> MaterializeResult:
    """Write every day in one insert, reload the dictionary on every host, and check what it answers."""
    expected = set(context.partition_keys)
    if set(by_partition) != expected:
        raise Failure(f"Fetched rates are missing for {sorted(expected - set(by_partition))[:5]}; nothing was written")
    # Several hourly partitions refresh the same day: the latest hour's rates are the day's.
    days = sorted({day_rates.day: day_rates for _, day_rates in sorted(by_partition.items())}.values(), key=_day)
    started = time.monotonic()
    # Every host holds the table and the dictionary (queries on any host convert): the same rows, one version.
    cluster = clickhouse.get_cluster(context)
    version = int(time.time())
    written = cluster.map_all_hosts(lambda client: write_rates(client, days, version), f"Writing {TABLE}")
    cluster.command_on_all_hosts(RELOAD_DICTIONARY)
    last = days[-1]
    answers_by_host = cluster.map_all_hosts(
        lambda client: dictionary_answers(client, last.day, sorted(last.rates)), f"Reading {DICTIONARY}"
    )
    for host, answers in answers_by_host.items():
        unanswered = sorted(currency for currency, rate in answers.items() if not rate)
        if unanswered:
            where = f" on {host}" if cluster.is_cluster else ""
            raise Failure(f"{DICTIONARY}{where} has no rate on {last.day} for {unanswered[:10]} after the reload")
    answers = next(iter(answers_by_host.values()))
    return MaterializeResult(
        metadata={
            **summarize(days),
            **next(iter(written.values())),
            "table": TABLE,
            "dictionary": DICTIONARY,
            "dictionary_reloaded_on_hosts": len(cluster.hosts),
            "dictionary_currencies": len(answers),
            "duration_seconds": round(time.monotonic() - started, 3),
        }
    )


def _day(day_rates: DayRates) -> date:
    return day_rates.day


def _label(days: Sequence[date]) -> str:
    return days[0].isoformat() if days[0] == days[-1] else f"{days[0]}..{days[-1]}"


# --- Assets ------------------------------------------------------------------------------------------------

_COMMON: dict[str, Any] = {
    "tags": OWNER_TAGS,
    "owners": JobOwners.TEAM_REVENUE_ANALYTICS.asset_owners(),
    "group_name": GROUP,
    "backfill_policy": BackfillPolicy.single_run(),
}


@asset(
    partitions_def=DAILY_PARTITIONS,
    io_manager_key=IO_MANAGER_KEY,
    kinds={"python"},
    retry_policy=EXTERNAL_API_RETRY_POLICY,
    **_COMMON,
)
def daily_exchange_rates(
    context: AssetExecutionContext, exchange_rate_source: ExchangeRateSource
) -> Output[dict[str, DayRates]]:
    """Each day's exchange rates, in units of each currency per 1 USD, from the configured source.

    Days the source does not publish (weekends, TARGET holidays for the ECB) carry forward the last rates
    published, and the metadata lists them. Partitions: one per day (`YYYY-MM-DD`, UTC) from
    EXCHANGE_RATE_START_DATE (default 1999-01-04, the ECB's first day) through yesterday.
    """
    return fetch_partitions(context, exchange_rate_source, context.partition_keys)


@asset(
    partitions_def=DAILY_PARTITIONS,
    ins={"daily_exchange_rates": AssetIn(input_manager_key=IO_MANAGER_KEY)},
    kinds={"clickhouse"},
    retry_policy=CLICKHOUSE_RETRY_POLICY,
    **_COMMON,
)
def daily_exchange_rates_in_clickhouse(
    context: AssetExecutionContext, daily_exchange_rates: dict[str, DayRates], clickhouse: ClickHouseResource
) -> MaterializeResult:
    """The day's rates in `exchange_rate`, so `dictGet('exchange_rate_dict', 'rate', currency, day)` converts.

    Partitions: one per day (`YYYY-MM-DD`, UTC) from EXCHANGE_RATE_START_DATE (default 1999-01-04) through yesterday.
    """
    return store_partitions(context, clickhouse, daily_exchange_rates)


@asset(
    partitions_def=HOURLY_PARTITIONS,
    io_manager_key=IO_MANAGER_KEY,
    kinds={"python"},
    retry_policy=EXTERNAL_API_RETRY_POLICY,
    **_COMMON,
)
def hourly_exchange_rates(
    context: AssetExecutionContext, exchange_rate_source: ExchangeRateSource
) -> Output[dict[str, DayRates]]:
    """The latest rates of the partition's day (per 1 USD), refreshed every hour at :45 during the day.

    Partitions: one per hour (`YYYY-MM-DD-HH:45`, UTC) from 2025-01-01 (or EXCHANGE_RATE_START_DATE if later)
    through the current hour.
    """
    return fetch_partitions(context, exchange_rate_source, context.partition_keys)


@asset(
    partitions_def=HOURLY_PARTITIONS,
    ins={"hourly_exchange_rates": AssetIn(input_manager_key=IO_MANAGER_KEY)},
    kinds={"clickhouse"},
    retry_policy=CLICKHOUSE_RETRY_POLICY,
    **_COMMON,
)
def hourly_exchange_rates_in_clickhouse(
    context: AssetExecutionContext, hourly_exchange_rates: dict[str, DayRates], clickhouse: ClickHouseResource
) -> MaterializeResult:
    """Today's rates so far in `exchange_rate`, replacing the previous hour's (newer version wins).

    Partitions: one per hour (`YYYY-MM-DD-HH:45`, UTC) from 2025-01-01 (or EXCHANGE_RATE_START_DATE if later)
    through the current hour.
    """
    return store_partitions(context, clickhouse, hourly_exchange_rates)


# --- Jobs and schedules ------------------------------------------------------------------------------------

daily_exchange_rates_job = define_asset_job(
    "daily_exchange_rates_job",
    selection=[daily_exchange_rates, daily_exchange_rates_in_clickhouse],
    tags={**OWNER_TAGS, "dagster/max_runtime": "3600"},
)

hourly_exchange_rates_job = define_asset_job(
    "hourly_exchange_rates_job",
    selection=[hourly_exchange_rates, hourly_exchange_rates_in_clickhouse],
    tags={**OWNER_TAGS, "dagster/max_runtime": "900"},
)


@schedule(
    job=daily_exchange_rates_job,
    cron_schedule="28 0 * * *",
    execution_timezone="UTC",
    tags=OWNER_TAGS,
    description="At 00:28 UTC, the rates of the day that just ended. Off until turned on (it calls the ECB).",
)
def daily_exchange_rates_schedule(context: ScheduleEvaluationContext) -> RunRequest:
    """At 00:28 UTC, the day that just ended (the ECB publishes around 16:00 CET, so it is complete)."""
    day = context.scheduled_execution_time.astimezone(UTC).date() - timedelta(days=1)
    return RunRequest(run_key=day.isoformat(), partition_key=day.isoformat())


@schedule(
    job=hourly_exchange_rates_job,
    cron_schedule="45 * * * *",
    execution_timezone="UTC",
    tags=OWNER_TAGS,
    description="At :45 every hour, today's rates so far. Off until turned on (it calls the ECB every hour).",
)
def hourly_exchange_rates_schedule(context: ScheduleEvaluationContext) -> RunRequest:
    """At :45 every hour, the hour that starts then: it refreshes the whole current day."""
    scheduled: datetime = context.scheduled_execution_time.astimezone(UTC)
    key = scheduled.replace(minute=45, second=0, microsecond=0).strftime(HOURLY_KEY_FORMAT)
    return RunRequest(run_key=key, partition_key=key)


exchange_rate_assets = [
    daily_exchange_rates,
    daily_exchange_rates_in_clickhouse,
    hourly_exchange_rates,
    hourly_exchange_rates_in_clickhouse,
]
exchange_rate_jobs = [daily_exchange_rates_job, hourly_exchange_rates_job]
exchange_rate_schedules = [daily_exchange_rates_schedule, hourly_exchange_rates_schedule]
