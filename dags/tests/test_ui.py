"""The UI as a person sees it: ``bin/demo``, then ``bin/dev`` (``dagster dev -w workspace.yaml``), runs, and
the pages in headless Chromium.

A small demo (three recent days, offline) fills the module's own DAGSTER_HOME and ClickHouse database first,
as README's first command does; then one ``dagster dev`` (webserver, daemon, a code server per location)
runs for the module through ``bin/dev``, in its own process group on a free loopback port; it is stopped
with SIGINT to the group. Runs launched here go through the queue and the daemon like any other, and the
run status sensors record them in ClickHouse. Screenshots land in ``test-output/ui/``; README's pictures in
``docs/`` are copies of them.
"""

import importlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from dags.common import PROJECT_ROOT, ClickHouseResource
from dags.events import recent_days
from dags.tests.conftest import free_port, missing_server, wait_until

# One xdist worker runs the whole module (bin/test distributes by group), in file order: one demo and one
# `dagster dev` serve every test, and the walk-throughs build on each other's runs.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("ui")]

SCREENSHOTS = PROJECT_ROOT / "test-output" / "ui"
PARTITION = "2024-03-15"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
STATUS_SENSORS = ("run_status_started", "run_status_success", "run_status_failure", "run_status_canceled")
# The demo's days, as bin/demo picks them (up to yesterday); enough events that each web analytics run has
# a few seconds of work, so the queue in README's walk-through can be seen.
DEMO_DAYS = [day.isoformat() for day in recent_days(3)]
DEMO_EVENTS_PER_DAY = 500_000  # as README's walk-through: at 200,000 a run could end between two looks
# The one batch export of the module's instance: team 1's events, daily, to a folder (see `dagster_dev`).
BATCH_EXPORT = "team_1_events"


def workspace_locations() -> list[str]:
    workspace = yaml.safe_load((PROJECT_ROOT / "workspace.yaml").read_text())
    return [entry["python_module"]["location_name"] for entry in workspace["load_from"]]


@dataclass
class DagsterDev:
    url: str
    clickhouse: ClickHouseResource
    log_path: Path
    home: Path

    def graphql(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        response = requests.post(f"{self.url}/graphql", json={"query": query, "variables": variables or {}}, timeout=60)
        response.raise_for_status()
        body = response.json()
        assert "errors" not in body, body["errors"]
        return body["data"]

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]


@pytest.fixture(scope="module")
def dagster_dev(tmp_path_factory: pytest.TempPathFactory, clickhouse_data_path: Path) -> Iterator[DagsterDev]:
    home = tmp_path_factory.mktemp("ui_dagster_home")
    shutil.copy(PROJECT_ROOT / "dagster.yaml", home / "dagster.yaml")  # the project's queue and limits
    database = f"ui_{uuid.uuid4().hex[:10]}"
    clickhouse_url = f"chdb://{clickhouse_data_path}?database={database}"
    port = free_port()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    log_path = SCREENSHOTS / "dagster-dev.log"
    batch_exports = home / "batch_exports.yaml"
    batch_exports.write_text(
        yaml.safe_dump(
            {
                "exports": [
                    {
                        "name": BATCH_EXPORT,
                        "team_id": 1,
                        "dataset": "events",
                        "destination": (home / "batch_exports" / BATCH_EXPORT).as_uri(),
                        "interval": "day",
                        "start": "2024-01-01",
                    }
                ]
            }
        )
    )
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "CLICKHOUSE_URL": clickhouse_url,
        "DAGSTER_WEBSERVER_URL": f"http://127.0.0.1:{port}",
        # One batch export (its schedule is off on the embedded engine): the demo fills it, a walk-through backfills it.
        "BATCH_EXPORTS_FILE": str(batch_exports),
    }
    env.pop("SLACK_BOT_TOKEN", None)
    demo = subprocess.run(
        [
            sys.executable,
            "-m",
            "dags.demo",
            "--days",
            str(len(DEMO_DAYS)),
            "--events-per-day",
            str(DEMO_EVENTS_PER_DAY),
        ],
        # Offline for certain: the ECB address refuses connections, as on a machine without internet.
        env={
            **env,
            "EXPORT_DESTINATION_URL": (home / "exports").as_uri(),
            "EXCHANGE_RATE_ECB_URL": "http://127.0.0.1:9",
        },
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [str(PROJECT_ROOT / "bin" / "dev"), "-w", str(PROJECT_ROOT / "workspace.yaml"), "-h", "127.0.0.1"]
            + ["-p", str(port)],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: SIGINT to the group stops every part of it
        )
    server = DagsterDev(
        url=f"http://127.0.0.1:{port}",
        clickhouse=ClickHouseResource(url=clickhouse_url, lock_timeout_seconds=300),
        log_path=log_path,
        home=home,
    )
    try:

        def answers() -> bool:
            if process.poll() is not None:
                raise RuntimeError(f"dagster dev exited ({process.returncode}):\n{server.log_tail()}")
            return requests.get(f"{server.url}/server_info", timeout=5).ok

        wait_until(answers, 300, "the Dagster webserver to answer", interval=1)
        yield server
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGINT)
            try:
                process.wait(timeout=90)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=30)
        with server.clickhouse.get_client() as client:
            client.command(f"DROP DATABASE IF EXISTS `{database}`")


WORKSPACE_QUERY = """
{
  workspaceOrError {
    __typename
    ... on Workspace {
      locationEntries {
        name
        loadStatus
        locationOrLoadError { __typename ... on PythonError { message } }
      }
    }
  }
}
"""


def loaded_locations(server: DagsterDev) -> dict[str, str]:
    """Each location's load result: ``RepositoryLocation`` when loaded, else the error."""
    workspace = server.graphql(WORKSPACE_QUERY)["workspaceOrError"]
    results = {}
    for entry in workspace["locationEntries"]:
        if entry["loadStatus"] != "LOADED":
            results[entry["name"]] = entry["loadStatus"]
            continue
        outcome = entry["locationOrLoadError"]
        results[entry["name"]] = outcome["__typename"] + (f": {outcome['message']}" if "message" in outcome else "")
    return results


def test_every_location_of_the_workspace_loads(dagster_dev: DagsterDev) -> None:
    expected = {name: "RepositoryLocation" for name in workspace_locations()}

    def settled() -> bool:  # every location loaded or failed to load (a failure is not retried by waiting)
        results = loaded_locations(dagster_dev)
        return set(results) == set(expected) and "LOADING" not in results.values()

    try:
        wait_until(settled, 300, "every code location to finish loading", interval=2)
    except TimeoutError:
        pass
    assert loaded_locations(dagster_dev) == expected, dagster_dev.log_tail()
    # bin/dev starts dagster dev from DAGSTER_HOME: no warning that ./dagster.yaml "will not be used".
    assert "Found a dagster instance configuration value" not in dagster_dev.log_path.read_text(errors="replace")


SENSOR_TICKS_QUERY = """
query ($selector: SensorSelector!) {
  sensorOrError(sensorSelector: $selector) {
    __typename
    ... on Sensor { sensorState { status ticks(limit: 1) { status } } }
  }
}
"""

LAUNCH_RUN = """
mutation ($params: ExecutionParams!) {
  launchPipelineExecution(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
    ... on RunConfigValidationInvalid { errors { message } }
  }
}
"""

RUN_STATUS_QUERY = "query ($id: ID!) { runOrError(runId: $id) { ... on Run { status } } }"


def sensor_has_ticked(server: DagsterDev, name: str) -> bool:
    selector = {"repositoryLocationName": "shared", "repositoryName": "__repository__", "sensorName": name}
    sensor = server.graphql(SENSOR_TICKS_QUERY, {"selector": selector})["sensorOrError"]
    state = sensor["sensorState"]
    return state["status"] == "RUNNING" and bool(state["ticks"])


@pytest.fixture(scope="module")
def finished_run(dagster_dev: DagsterDev) -> str:
    """A demo_events run for one day, launched as the UI's Materialize button does, finished successfully."""
    wait_until(lambda: loaded_locations(dagster_dev).get("shared") == "RepositoryLocation", 300, "the shared location")
    # Run status sensors start watching from their first tick: wait for it so they see this run.
    for name in STATUS_SENSORS:
        wait_until(lambda name=name: sensor_has_ticked(dagster_dev, name), 300, f"sensor {name} to tick", interval=2)
    params = {
        "selector": {
            "repositoryLocationName": "shared",
            "repositoryName": "__repository__",
            "pipelineName": "__ASSET_JOB",
            "assetSelection": [{"path": ["demo_events"]}],
        },
        "runConfigData": {"ops": {"demo_events": {"config": {"events_per_day": 300}}}},
        "executionMetadata": {"tags": [{"key": "dagster/partition", "value": PARTITION}]},
        "mode": "default",
    }
    run_id = launch_and_wait(dagster_dev, params, until={"SUCCESS", "FAILURE", "CANCELED"})
    assert run_status(dagster_dev, run_id) == "SUCCESS", dagster_dev.log_tail()
    return run_id


def launch_and_wait(server: DagsterDev, params: dict[str, Any], until: set[str], timeout: float = 300) -> str:
    launched = server.graphql(LAUNCH_RUN, {"params": params})["launchPipelineExecution"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    run_id = launched["run"]["runId"]
    if until:
        wait_for_status(server, run_id, until, timeout)
    return run_id


def run_status(server: DagsterDev, run_id: str) -> str:
    return server.graphql(RUN_STATUS_QUERY, {"id": run_id})["runOrError"]["status"]


def wait_for_status(server: DagsterDev, run_id: str, statuses: set[str], timeout: float = 300) -> None:
    try:
        wait_until(lambda: run_status(server, run_id) in statuses, timeout, f"run {run_id} to be {statuses}", 1)
    except TimeoutError:
        pytest.fail(f"run {run_id} is {run_status(server, run_id)}, not {statuses}\n{server.log_tail()}")


def test_the_run_status_sensors_record_a_real_run_in_clickhouse(dagster_dev: DagsterDev, finished_run: str) -> None:
    def statuses() -> list[str]:
        with dagster_dev.clickhouse.get_client() as client:
            rows = client.query_rows(
                "SELECT status FROM dagster_run_status FINAL WHERE run_id = {run_id:String} ORDER BY time",
                {"run_id": finished_run},
            )
        return [row["status"] for row in rows]

    try:
        wait_until(lambda: statuses() == ["STARTED", "SUCCESS"], 240, "the run in dagster_run_status", interval=3)
    except TimeoutError:
        pytest.fail(f"dagster_run_status holds {statuses()} for run {finished_run}\n{dagster_dev.log_tail()}")
    with dagster_dev.clickhouse.get_client() as client:
        [row] = client.query_rows(
            "SELECT job, location, owner FROM dagster_run_status FINAL "
            "WHERE run_id = {run_id:String} AND status = 'SUCCESS'",
            {"run_id": finished_run},
        )
    assert row == {"job": "__ASSET_JOB", "location": "shared", "owner": "team-platform"}


# --- In the browser ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Debian Chromium through chromedriver (both from apt: chromium, chromium-driver)."""
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        missing_server("Chromium is missing: bin/test installs it as root (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="ui-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        "--window-size=1600,1000",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(120)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def wait_for_page(driver: Any, shows: Callable[[str], bool], what: str, timeout: float = 120) -> str:
    """Wait until the rendered page (text and attributes) shows what we expect; return its source."""
    try:
        wait_until(lambda: shows(driver.page_source), timeout, what, interval=0.5)
    except TimeoutError:
        driver.save_screenshot(str(SCREENSHOTS / "timeout.png"))
        raise
    time.sleep(1)  # let the last images and layout settle before the screenshot
    return driver.page_source


def every_asset_and_group() -> tuple[set[str], set[str]]:
    """Every asset name and asset group of the workspace, from the definitions themselves."""
    names: set[str] = set()
    groups: set[str] = set()
    for location in workspace_locations():
        graph = importlib.import_module(f"dags.locations.{location}").defs.resolve_asset_graph()
        for key in graph.get_all_asset_keys():
            node = graph.get(key)
            # The module's dagster dev has a batch exports file of its own, while this process loaded the
            # project's batch_exports.yaml.
            if node.is_external or node.group_name == "batch_exports":
                continue
            names.add(key.to_user_string())
            groups.add(node.group_name)
    return names, groups


def test_the_asset_graph_shows_every_asset(dagster_dev: DagsterDev, browser: Any, finished_run: str) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    names, groups = every_asset_and_group()
    browser.get(f"{dagster_dev.url}/asset-groups")
    wait_for_page(browser, lambda page: "Global asset lineage" in page and "demo" in page, "the asset graph")

    # Open every group, in the graph (its context menu) and in the sidebar (each group's row).
    open_graph_menu_and_choose(browser, "Expand all groups")
    for group in sorted(groups):
        try:  # the sidebar re-renders after "Expand all groups": slower on a filled instance
            wait_for_visible(browser, f"//span[normalize-space(text())='{group}']", timeout=30)
        except TimeoutError:
            browser.save_screenshot(str(SCREENSHOTS / "timeout.png"))
        # The sidebar's row for the group is the leftmost one (the graph's group box is to its right).
        rows = sorted(
            (
                e
                for e in browser.find_elements(By.XPATH, f"//span[normalize-space(text())='{group}']")
                if e.is_displayed()
            ),
            key=lambda element: element.location["x"],
        )
        assert rows, f"group {group} is not on the asset graph page"
        caret_offset = -rows[0].size["width"] // 2 - 38  # the expand caret left of the group's icon
        ActionChains(browser).move_to_element_with_offset(rows[0], caret_offset, 0).click().perform()
    # Long names are middle-truncated on screen; the full name is the element's title.
    page = wait_for_page(browser, lambda page: all(name in page for name in names), f"the asset names {sorted(names)}")
    assert all(name in page for name in names)
    browser.save_screenshot(str(SCREENSHOTS / "asset-graph.png"))


def open_graph_menu_and_choose(driver: Any, item: str) -> None:
    """Right-click the graph's empty background (its corners, away from the nodes) and choose ``item``."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    graph = max(
        (svg for svg in driver.find_elements(By.TAG_NAME, "svg") if svg.is_displayed()),
        key=lambda svg: svg.size["width"] * svg.size["height"],
    )
    width, height = graph.size["width"], graph.size["height"]
    for dx, dy in ((20, 20), (width - 80, 20), (20, height - 20), (width // 2, 20)):
        ActionChains(driver).move_to_element_with_offset(
            graph, dx - width // 2, dy - height // 2
        ).context_click().perform()
        try:
            wait_for_visible(driver, f"//*[starts-with(normalize-space(.), '{item}')]", timeout=5).click()
            return
        except TimeoutError:
            ActionChains(driver).send_keys("\ue00c").perform()  # Escape: close whatever opened
    raise AssertionError(f"the asset graph's context menu never offered {item!r}")


def wait_for_visible(driver: Any, xpath: str, timeout: float = 30) -> Any:
    from selenium.webdriver.common.by import By

    found: list[Any] = []

    def visible() -> bool:
        found[:] = [element for element in driver.find_elements(By.XPATH, xpath) if element.is_displayed()]
        return bool(found)

    wait_until(visible, timeout, f"an element {xpath}", interval=0.3)
    return found[-1]


def test_the_partitions_page_shows_the_materialized_day(
    dagster_dev: DagsterDev, browser: Any, finished_run: str
) -> None:
    browser.get(f"{dagster_dev.url}/assets/demo_events?view=partitions&partition={PARTITION}")
    page = wait_for_page(
        browser,
        lambda page: f"Materialized ({len(DEMO_DAYS) + 1})" in page and "rows_written" in page,
        "the partitions page with the materialized day",
    )
    assert "demo_events" in page and PARTITION in page and finished_run[:8] in page
    browser.save_screenshot(str(SCREENSHOTS / "asset-partitions.png"))


def test_the_run_page_shows_the_finished_run(dagster_dev: DagsterDev, browser: Any, finished_run: str) -> None:
    from selenium.webdriver.common.by import By

    browser.get(f"{dagster_dev.url}/runs/{finished_run}")
    wait_for_page(browser, lambda page: "ASSET_MATERIALIZATION" in page, "the run's event log")
    text = browser.find_element(By.TAG_NAME, "body").text
    assert finished_run[:8] in text and "Success" in text
    assert "demo_events" in text and f"partition: {PARTITION}" in text and "rows_written" in text
    browser.save_screenshot(str(SCREENSHOTS / "run.png"))


def click_text(driver: Any, text: str, timeout: float = 30) -> None:
    """Click the visible element whose own text is ``text`` (the last one, when several match)."""
    wait_for_visible(driver, f"//*[normalize-space(text())='{text}']", timeout).click()


def test_after_the_demo_its_days_show_materialized_with_passed_checks(dagster_dev: DagsterDev, browser: Any) -> None:

    asset = "web_pre_aggregated_stats"
    browser.get(f"{dagster_dev.url}/assets/{asset}?view=partitions&partition={DEMO_DAYS[-1]}")
    page = wait_for_page(
        browser, lambda page: f"Materialized ({len(DEMO_DAYS)})" in page and "rows_written" in page, "the demo's days"
    )
    assert "web_analytics_daily_job" in page  # the run is labelled with its job, not __ephemeral_asset_job__
    wait_for_visible(browser, "//*[starts-with(normalize-space(text()), 'Missing (')]").click()  # filled days only
    wait_for_page(browser, lambda page: all(day in page for day in DEMO_DAYS), "the demo days in the list")
    browser.save_screenshot(str(SCREENSHOTS / "asset-partitions-filled.png"))
    each_day_shows_its_own_row_count(dagster_dev, browser, asset)
    every_check_passed_on_every_demo_day(dagster_dev, browser, asset)


def day_rows(server: DagsterDev, table: str, day_column: str) -> dict[str, int]:
    """Rows per day of a table, counted in ClickHouse (not from what the runs recorded)."""
    with server.clickhouse.get_client() as client:
        rows = client.query_rows(
            "SELECT toString(toDate({column:Identifier})) AS day, count() AS rows FROM {table:Identifier} GROUP BY day",
            {"column": day_column, "table": table},
        )
    return {row["day"]: int(row["rows"]) for row in rows}


def metadata_value(page_text: str, key: str) -> str:
    """The value the partition's panel shows for a metadata entry: the line after its key."""
    lines = page_text.split("\n")
    assert key in lines, f"{key} is not on the page"
    return lines[lines.index(key) + 1]


def each_day_shows_its_own_row_count(server: DagsterDev, browser: Any, asset: str) -> None:
    """Each demo day's panel shows that day's rows of the table, as ClickHouse counts them."""
    from selenium.webdriver.common.by import By

    rows = day_rows(server, asset, "period_bucket")
    assert len({rows[day] for day in DEMO_DAYS}) == len(DEMO_DAYS), rows  # a repeated run total cannot pass
    for day in DEMO_DAYS:
        browser.get(f"{server.url}/assets/{asset}?view=partitions&partition={day}")
        wait_for_page(browser, lambda page: "dagster/row_count" in page, f"{day}'s metadata")
        text = browser.find_element(By.TAG_NAME, "body").text
        assert int(metadata_value(text, "dagster/row_count").replace(",", "")) == rows[day], day
        assert metadata_value(text, "rows_by_day").strip() == "{", day  # this day's own, not the run's days
        assert f'"{day}": {rows[day]}' in text


def every_check_passed_on_every_demo_day(server: DagsterDev, browser: Any, asset: str) -> None:
    """Each check's latest result, and its result for every demo day (recorded per day, not "Skipped")."""
    from selenium.webdriver.common.by import By

    browser.get(f"{server.url}/assets/{asset}?view=checks")
    wait_for_page(browser, lambda page: "totals_match_events" in page, "the checks list")
    checks_list = browser.find_element(By.TAG_NAME, "body").text
    assert checks_list.count("Succeeded") >= 2 and "Skipped" not in checks_list, checks_list
    click_text(browser, "totals_match_events")
    click_text(browser, "Partitions")  # the check's own Partitions tab (the asset's is further up)
    wait_for_page(browser, lambda page: f"Passed ({len(DEMO_DAYS)})" in page, "the check's passed days")
    text = browser.find_element(By.TAG_NAME, "body").text
    assert "Skipped (0)" in text and "Failed (0)" in text, text
    missing = wait_for_visible(browser, "//*[starts-with(normalize-space(text()), 'Missing (')]")
    missing.click()  # untick: only the checked days remain in the list
    wait_for_page(browser, lambda page: all(day in page for day in DEMO_DAYS), "the demo days in the list")
    click_text(browser, DEMO_DAYS[-1])
    wait_for_page(browser, lambda page: page.count(DEMO_DAYS[-1]) >= 2, "the day's result beside the list")
    browser.save_screenshot(str(SCREENSHOTS / "check-partitions.png"))


def runs_page_rows(driver: Any) -> list[list[str]]:
    """The Runs page's rows, each as its lines of text (ID, target, tags, launched by, status, ...)."""
    from selenium.webdriver.common.by import By

    text = driver.find_element(By.TAG_NAME, "body").text
    table = text[text.find("\nDuration\n") + len("\nDuration\n") :]
    return [row.split("\n") for row in table.split("\nView\n")]


def test_readme_walk_through_a_backfill_runs_one_day_at_a_time(dagster_dev: DagsterDev, browser: Any) -> None:
    """README's "One run at a time", click by click: a 3-day backfill of both web analytics assets from the
    lineage page, then the Runs page with "Show runs within backfills" ticked shows one run STARTED and the
    others QUEUED behind it."""
    from dagster import DagsterInstance, RunsFilter
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    launched_after = time.time()
    browser.get(dagster_dev.url)
    click_text(browser, "Lineage")
    wait_for_page(browser, lambda page: "Global asset lineage" in page, "the lineage page")
    wait_for_visible(browser, "//*[contains(@class, 'CodeMirror')]//pre[contains(., 'Search and filter assets')]")
    browser.find_element(By.CSS_SELECTOR, ".CodeMirror").click()
    ActionChains(browser).send_keys("group:web_analytics").perform()
    time.sleep(1)  # the suggestions settle; Enter applies the filter
    ActionChains(browser).send_keys(Keys.ENTER).perform()
    wait_for_page(browser, lambda page: "web_pre_aggregated_bounces" in page and "demo_events" not in page, "filter")
    click_text(browser, "Materialize all…")
    # The partition box (its placeholder: "No matching partitions" until something is typed).
    partitions = wait_for_visible(
        browser, "//input[@placeholder='No matching partitions' or starts-with(@placeholder, 'ex: ')]"
    )
    partitions.click()
    partitions.send_keys(f"[{DEMO_DAYS[0]}...{DEMO_DAYS[-1]}]", Keys.ENTER)
    wait_for_page(browser, lambda page: f"{len(DEMO_DAYS)} partitions" in page, "the range in the launch dialog")
    click_text(browser, "Launch backfill")
    wait_for_page(browser, lambda page: "Created backfill" in page, "the backfill to be created")

    click_text(browser, "Runs")
    wait_for_page(browser, lambda page: "Show runs within backfills" in page, "the Runs page")
    label = "//label[contains(normalize-space(.), 'Show runs within backfills')]"
    checkbox = f"{label}//input[@type='checkbox']"

    def tick_show_runs_within_backfills() -> None:
        wait_for_visible(browser, label)
        if not browser.find_element(By.XPATH, checkbox).is_selected():
            click_text(browser, "Show runs within backfills")
            wait_until(lambda: browser.find_element(By.XPATH, checkbox).is_selected(), 10, "the box to be ticked")

    tick_show_runs_within_backfills()
    polls = [0]

    def queue_seen() -> bool:
        polls[0] += 1
        if polls[0] % 8 == 0:
            # The page refreshes itself every 15 s; a reader watching it reloads to see it sooner, as here.
            browser.refresh()
            tick_show_runs_within_backfills()
        rows = [row for row in runs_page_rows(browser) if any(line.startswith("Backfill:") for line in row)]
        return any("Started" in row for row in rows) and any("Queued" in row for row in rows)

    # The backfill daemon creates the runs within about 30 s on an idle machine; under a full suite on two busy
    # cores it once took longer than 240 s, hence the generous bound. Each run then waits its turn.
    try:
        wait_until(queue_seen, 480, "a QUEUED backfill run behind a STARTED one on the Runs page", interval=0.3)
    except TimeoutError:
        browser.save_screenshot(str(SCREENSHOTS / "timeout.png"))
        raise
    browser.save_screenshot(str(SCREENSHOTS / "runs-queue.png"))

    with DagsterInstance.from_config(str(dagster_dev.home)) as instance:

        def backfill_runs() -> list[Any]:
            runs = instance.get_runs(RunsFilter(created_after=datetime.fromtimestamp(launched_after, UTC)))
            return [run for run in runs if run.tags.get("dagster/backfill")]

        def all_done() -> bool:
            runs = backfill_runs()
            return len(runs) == len(DEMO_DAYS) and all(run.is_finished for run in runs)

        wait_until(all_done, 300, "the backfill's runs to finish", interval=1)
        records = sorted(
            (instance.get_run_record_by_id(run.run_id) for run in backfill_runs()), key=lambda r: r.start_time
        )
    assert [record.dagster_run.status.value for record in records] == ["SUCCESS"] * len(DEMO_DAYS)
    for earlier, later in zip(records, records[1:], strict=False):
        assert later.start_time >= earlier.end_time, "two web analytics runs ran at the same time"

    # What the pages show after the backfill: every check passed on every day (none "Skipped"), and each
    # day's own row count.
    every_check_passed_on_every_demo_day(dagster_dev, browser, "web_pre_aggregated_bounces")
    each_day_shows_its_own_row_count(dagster_dev, browser, "web_pre_aggregated_bounces")


def test_the_demo_runs_are_listed_under_their_job_in_the_jobs_list_and_on_the_timeline(
    dagster_dev: DagsterDev, browser: Any
) -> None:
    from selenium.webdriver.common.by import By

    browser.get(f"{dagster_dev.url}/locations/web_analytics/jobs/web_analytics_daily_job/runs")
    wait_for_page(
        browser,
        lambda page: all(f"partition: {day}" in page for day in DEMO_DAYS),
        "the demo's runs on the job's Runs tab",
    )
    browser.save_screenshot(str(SCREENSHOTS / "job-runs.png"))

    browser.get(f"{dagster_dev.url}/jobs")
    jobs = ("web_analytics_daily_job", "events_export_job", f"batch_export_{BATCH_EXPORT}_job")

    def latest_runs_shown() -> dict[str, bool]:
        """Whether the jobs list shows a latest run ("… ago") on the line below each job's name."""
        lines = browser.find_element(By.TAG_NAME, "body").text.split("\n")
        following = {line: lines[index + 1] if index + 1 < len(lines) else "" for index, line in enumerate(lines)}
        return {job: following.get(job, "").endswith("ago") for job in jobs}

    # The list renders the names first and each job's latest run as its query returns.
    try:
        wait_until(lambda: all(latest_runs_shown().values()), 120, "the jobs list's latest runs", interval=0.5)
    except TimeoutError:
        browser.save_screenshot(str(SCREENSHOTS / "timeout.png"))
    shown = latest_runs_shown()
    assert all(shown.values()), f"the jobs list shows no latest run of {[job for job, ok in shown.items() if not ok]}"

    browser.get(f"{dagster_dev.url}/overview/activity/timeline")
    wait_for_page(browser, lambda page: "web_analytics_daily_job" in page, "the demo's jobs on the timeline")
    timeline = browser.find_element(By.TAG_NAME, "body").text
    assert "events_export_job" in timeline and "daily_exchange_rates_job" in timeline


ASSET_LINEAGE_QUERY = """
query ($key: AssetKeyInput!) {
  assetNodeOrError(assetKey: $key) {
    ... on AssetNode { isMaterializable dependedByKeys { path } dependencyKeys { path } }
  }
}
"""


def test_the_raw_events_are_upstream_of_every_asset_that_reads_them(dagster_dev: DagsterDev, browser: Any) -> None:
    from selenium.webdriver.common.by import By

    readers = {
        "web_pre_aggregated_stats",
        "web_pre_aggregated_bounces",
        "events_export",
        f"batch_exports/{BATCH_EXPORT}",
    }
    # What the lineage page draws, as the webserver serves it to the page.
    node = dagster_dev.graphql(ASSET_LINEAGE_QUERY, {"key": {"path": ["events"]}})["assetNodeOrError"]
    assert {"/".join(key["path"]) for key in node["dependedByKeys"]} == readers
    assert node["dependencyKeys"] == [{"path": ["demo_events"]}] and not node["isMaterializable"]

    browser.get(f"{dagster_dev.url}/assets/events?view=lineage")
    wait_for_page(browser, lambda page: "events_export" in page and BATCH_EXPORT in page, "events' lineage")
    lines = browser.find_element(By.TAG_NAME, "body").text.split("\n")
    # Long names are middle-truncated in the graph's boxes (web_pre_a…_bounces).
    shown = {line for line in lines if line.startswith("web_pre_a") and line.endswith(("_stats", "_bounces"))}
    assert len(shown) == 2 and {"External Asset", "demo_events", "events_export", BATCH_EXPORT} <= set(lines)
    browser.save_screenshot(str(SCREENSHOTS / "events-lineage.png"))


def test_readme_walk_through_a_batch_export_backfill_from_its_asset_page(dagster_dev: DagsterDev, browser: Any) -> None:
    """Assets > batch_exports/<name> > Materialize… > a range of days > Launch backfill: each day's file is
    written again, and each day's partition shows that day's own record count."""
    import pyarrow.parquet as pq
    from dagster import DagsterInstance, RunsFilter
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    launched_after = datetime.now(UTC)
    asset = f"batch_exports/{BATCH_EXPORT}"
    browser.get(f"{dagster_dev.url}/assets/{asset}")  # its overview: the dialog's is the only partition box
    click_text(browser, "Materialize…")
    # The dialog's partition box (its placeholder: "No matching partitions" until something is typed).
    partitions = wait_for_visible(
        browser, "//input[@placeholder='No matching partitions' or starts-with(@placeholder, 'ex: ')]"
    )
    partitions.click()
    partitions.send_keys(f"[{DEMO_DAYS[0]}...{DEMO_DAYS[-1]}]", Keys.ENTER)
    wait_for_page(browser, lambda page: f"{len(DEMO_DAYS)} partitions" in page, "the range in the launch dialog")
    click_text(browser, "Launch backfill")
    wait_for_page(browser, lambda page: "Created backfill" in page, "the backfill to be created")

    with DagsterInstance.from_config(str(dagster_dev.home)) as instance:

        def backfill_runs() -> list[Any]:
            runs = instance.get_runs(RunsFilter(created_after=launched_after))
            return [run for run in runs if run.tags.get("dagster/backfill")]

        def all_done() -> bool:
            runs = backfill_runs()
            return bool(runs) and all(run.is_finished for run in runs)

        wait_until(all_done, 480, "the batch export backfill's runs to finish", interval=1)
        runs = backfill_runs()
    assert all(run.status.value == "SUCCESS" for run in runs), [run.status for run in runs]
    run_ids = {run.run_id[:8] for run in runs}

    # Each day's record count on its partition: the rows of that day's file, read back independently.
    folder = dagster_dev.home / "batch_exports" / BATCH_EXPORT
    rows = {
        day: sum(pq.read_table(path).num_rows for path in folder.glob(f"**/date={day}/*.parquet")) for day in DEMO_DAYS
    }
    assert all(rows.values()) and len(set(rows.values())) == len(DEMO_DAYS), rows
    for day in DEMO_DAYS:
        browser.get(f"{dagster_dev.url}/assets/{asset}?view=partitions&partition={day}")
        wait_for_page(browser, lambda page: "dagster/row_count" in page, f"{day}'s record count")
        text = browser.find_element(By.TAG_NAME, "body").text
        assert int(metadata_value(text, "dagster/row_count").replace(",", "")) == rows[day], day
        assert any(run_id in text for run_id in run_ids), f"{day}'s latest materialization is not the backfill's"
    browser.save_screenshot(str(SCREENSHOTS / "batch-export-partition.png"))


def launch_from_the_launchpad(server: DagsterDev, browser: Any, location: str, job: str) -> str:
    """Jobs > <job> > Launchpad > Launch Run, with the job's default config; the new run's id."""
    browser.get(f"{server.url}/locations/{location}/jobs/{job}/playground")
    wait_for_page(browser, lambda page: "No errors" in page, f"{job}'s launchpad")
    click_text(browser, "Launch Run")
    wait_until(lambda: "/runs/" in browser.current_url, 60, "the new run's page", interval=0.5)
    return browser.current_url.split("/runs/")[1].split("?")[0].strip("/")


def test_readme_walk_through_a_deletion_dry_run_then_the_deletion_recorded_on_the_changed_days(
    dagster_dev: DagsterDev, browser: Any
) -> None:
    """README's "Data deletion": a request, a dry run from its launchpad (marked as one, nothing changed),
    then `data_deletion_job` from its launchpad; the changed days' pages say the deletion rewrote them."""
    from selenium.webdriver.common.by import By

    day = DEMO_DAYS[-1]
    with dagster_dev.clickhouse.get_client() as client:
        person = client.command(
            "SELECT toString(person_id) FROM events WHERE team_id = 1 AND toDate(timestamp) = {day:Date} "
            "AND event = '$pageview' ORDER BY person_id LIMIT 1",
            {"day": day},
        )
    person_events = "SELECT count() FROM events WHERE team_id = 1 AND person_id = {person:UUID}"

    def events_of_the_person() -> int:
        with dagster_dev.clickhouse.get_client() as client:
            return int(client.command(person_events, {"person": person}))

    before = events_of_the_person()
    assert before > 0
    request = {
        "selector": {
            "repositoryLocationName": "data_platform",
            "repositoryName": "__repository__",
            "pipelineName": "request_data_deletion",
        },
        "runConfigData": {
            "ops": {"insert_deletion_request": {"config": {"team_id": 1, "key_type": "person", "key": person}}}
        },
        "mode": "default",
    }
    request_run = launch_and_wait(dagster_dev, request, until={"SUCCESS", "FAILURE", "CANCELED"})
    assert run_status(dagster_dev, request_run) == "SUCCESS", dagster_dev.log_tail()

    dry_run = launch_from_the_launchpad(dagster_dev, browser, "data_platform", "data_deletion_dry_run_job")
    wait_for_status(dagster_dev, dry_run, {"SUCCESS", "FAILURE", "CANCELED"}, timeout=480)
    assert run_status(dagster_dev, dry_run) == "SUCCESS", dagster_dev.log_tail()
    assert events_of_the_person() == before, "a dry run deleted events"
    browser.get(f"{dagster_dev.url}/runs")
    wait_for_page(browser, lambda page: dry_run[:8] in page, "the dry run in the Runs list")
    [row] = [row for row in runs_page_rows(browser) if dry_run[:8] in row]
    assert "dry_run: true" in row and "data_deletion_dry_run_job" in row, row

    deletion = launch_from_the_launchpad(dagster_dev, browser, "data_platform", "data_deletion_job")
    wait_for_status(dagster_dev, deletion, {"SUCCESS", "FAILURE", "CANCELED"}, timeout=600)
    assert run_status(dagster_dev, deletion) == "SUCCESS", dagster_dev.log_tail()
    assert events_of_the_person() == 0

    # The day the person's events were deleted from: its pre-aggregate's latest materialization is the deletion.
    browser.get(f"{dagster_dev.url}/assets/web_pre_aggregated_stats?view=partitions&partition={day}")
    wait_for_page(browser, lambda page: "data deletion" in page, f"the deletion recorded on {day}")
    text = browser.find_element(By.TAG_NAME, "body").text
    assert deletion[:8] in text and metadata_value(text, "reason") == "data deletion", text[-2000:]
    browser.save_screenshot(str(SCREENSHOTS / "deletion-recorded.png"))


def unique_persons_of_the_day(server: DagsterDev, day: str) -> int:
    """The dashboards' unique persons of a day (pageviews' persons per team, added up), from the events."""
    with server.clickhouse.get_client() as client:
        return int(
            client.command(
                "SELECT sum(n) FROM (SELECT team_id, uniqExact(person_id) AS n FROM events WHERE event = '$pageview' "
                "AND team_id >= 0 AND toDate(timestamp) = {day:Date} GROUP BY team_id)",
                {"day": day},
            )
        )


def test_readme_walk_through_the_squash_lowers_a_days_unique_persons_on_the_pre_aggregates_page(
    dagster_dev: DagsterDev, browser: Any
) -> None:
    """After bin/demo: `squash_person_overrides` from its launchpad (default config: overrides older than two
    days), then the oldest demo day's page shows fewer unique persons, recorded by the squash."""
    from selenium.webdriver.common.by import By

    day = DEMO_DAYS[0]  # its overrides are more than two days old
    page = f"{dagster_dev.url}/assets/web_pre_aggregated_stats?view=partitions&partition={day}"

    def shown(marker: str) -> tuple[int, str]:
        browser.get(page)
        wait_for_page(browser, lambda source: "unique_persons" in source and marker in source, f"{day}'s persons")
        text = browser.find_element(By.TAG_NAME, "body").text
        return int(metadata_value(text, "unique_persons").replace(",", "")), text

    before, _ = shown("dagster/row_count")
    assert before == unique_persons_of_the_day(dagster_dev, day)
    squash = launch_from_the_launchpad(dagster_dev, browser, "data_platform", "squash_person_overrides")
    wait_for_status(dagster_dev, squash, {"SUCCESS", "FAILURE", "CANCELED"}, timeout=900)
    assert run_status(dagster_dev, squash) == "SUCCESS", dagster_dev.log_tail()
    after, text = shown("person overrides squash")
    assert squash[:8] in text and metadata_value(text, "reason") == "person overrides squash"
    assert after == unique_persons_of_the_day(dagster_dev, day) < before
    browser.save_screenshot(str(SCREENSHOTS / "squash-persons.png"))
    # Team 1's batch export of that day (every column) was rewritten: its rows carry the squashed persons.
    import pyarrow.parquet as pq

    [file] = (dagster_dev.home / "batch_exports" / BATCH_EXPORT).rglob(f"date={day}/*.parquet")
    exported = {str(row["uuid"]): str(row["person_id"]) for row in pq.read_table(file).to_pylist()}
    with dagster_dev.clickhouse.get_client() as client:
        rows = client.query_rows(
            "SELECT toString(uuid) AS uuid, toString(person_id) AS person_id FROM events "
            "WHERE team_id = 1 AND toDate(timestamp) = {day:Date}",
            {"day": day},
        )
    assert exported == {row["uuid"]: row["person_id"] for row in rows}


def test_readme_walk_through_removing_ip_from_a_teams_events_and_every_exported_file(
    dagster_dev: DagsterDev, browser: Any
) -> None:
    """A properties request for `$ip` of team 1, carried out by `data_deletion_job` from its launchpad: the key
    is gone from team 1's events and from every exported file's team 1 rows; team 2 keeps it."""
    import json

    import pyarrow.parquet as pq

    request = {
        "selector": {
            "repositoryLocationName": "data_platform",
            "repositoryName": "__repository__",
            "pipelineName": "request_data_deletion",
        },
        "runConfigData": {
            "ops": {
                "insert_deletion_request": {
                    "config": {"team_id": 1, "key_type": "properties", "key": "", "properties": ["$ip"]}
                }
            }
        },
        "mode": "default",
    }
    request_run = launch_and_wait(dagster_dev, request, until={"SUCCESS", "FAILURE", "CANCELED"})
    assert run_status(dagster_dev, request_run) == "SUCCESS", dagster_dev.log_tail()
    deletion = launch_from_the_launchpad(dagster_dev, browser, "data_platform", "data_deletion_job")
    wait_for_status(dagster_dev, deletion, {"SUCCESS", "FAILURE", "CANCELED"}, timeout=900)
    assert run_status(dagster_dev, deletion) == "SUCCESS", dagster_dev.log_tail()

    holding = "SELECT team_id, countIf(JSONHas(properties, '$ip')) AS n FROM events GROUP BY team_id ORDER BY team_id"
    with dagster_dev.clickhouse.get_client() as client:
        by_team = {row["team_id"]: row["n"] for row in client.query_rows(holding)}
    assert by_team[1] == 0 and by_team[2] > 0, by_team

    files = sorted((dagster_dev.home / "exports").rglob("*.parquet"))
    files += sorted((dagster_dev.home / "batch_exports" / BATCH_EXPORT).rglob("*.parquet"))
    assert files
    team_1_rows = 0
    for path in files:
        table = pq.read_table(path)
        if "properties" not in table.column_names:
            continue
        teams = table.column("team_id").to_pylist() if "team_id" in table.column_names else [1] * table.num_rows
        for team, properties in zip(teams, table.column("properties").to_pylist(), strict=True):
            if team == 1:
                team_1_rows += 1
                assert "$ip" not in json.loads(properties), f"{path} still holds team 1's $ip"
    assert team_1_rows > 0


# --- Terminating a run from the UI -----------------------------------------------------------------------

CANCEL_DAY = "2024-03-16"

SCHEDULE_DRY_RUN = """
mutation ($selector: ScheduleSelector!, $timestamp: Float) {
  scheduleDryRun(selectorData: $selector, timestamp: $timestamp) {
    __typename
    ... on DryRunInstigationTick {
      evaluationResult { skipReason runRequests { runKey } error { message } }
    }
    ... on PythonError { message }
  }
}
"""

TERMINATE_RUN = """
mutation ($runId: String!) {
  terminateRun(runId: $runId) {
    __typename
    ... on TerminateRunFailure { message }
    ... on PythonError { message }
  }
}
"""


def test_terminating_a_pre_aggregate_run_kills_its_clickhouse_query(dagster_dev: DagsterDev, finished_run: str) -> None:
    """The UI's Terminate on a running web analytics run: the query stops on the server, nothing is written.

    While it runs, a second web analytics run waits in the queue (limit one), another job runs, and the
    web analytics schedule's tick is skipped; after it, the queue moves on.
    """
    from dagster import DagsterEventType, DagsterInstance

    # A day of traffic, and a pre-aggregate run made slow on purpose: one row per block, one part per row.
    demo_day = {
        "selector": {
            "repositoryLocationName": "shared",
            "repositoryName": "__repository__",
            "pipelineName": "__ASSET_JOB",
            "assetSelection": [{"path": ["demo_events"]}],
        },
        "runConfigData": {"ops": {"demo_events": {"config": {"events_per_day": 300_000}}}},
        "executionMetadata": {"tags": [{"key": "dagster/partition", "value": CANCEL_DAY}]},
        "mode": "default",
    }
    demo_run = launch_and_wait(dagster_dev, demo_day, until={"SUCCESS", "FAILURE", "CANCELED"})
    assert run_status(dagster_dev, demo_run) == "SUCCESS", dagster_dev.log_tail()

    slow = {
        "extra_clickhouse_settings": {
            "max_block_size": 1,
            "max_threads": 1,
            "max_insert_block_size": 1,
            "min_insert_block_size_rows": 1,
            "min_insert_block_size_bytes": 1,
        }
    }
    pre_aggregate = {
        "selector": {
            "repositoryLocationName": "web_analytics",
            "repositoryName": "__repository__",
            "pipelineName": "web_analytics_daily_job",
        },
        "runConfigData": {
            "ops": {name: {"config": slow} for name in ("web_pre_aggregated_stats", "web_pre_aggregated_bounces")}
        },
        "executionMetadata": {"tags": [{"key": "dagster/partition", "value": CANCEL_DAY}]},
        "mode": "default",
    }
    run_id = launch_and_wait(dagster_dev, pre_aggregate, until=set())
    with DagsterInstance.from_config(str(dagster_dev.home)) as instance:

        def bounces_started() -> bool:
            started = instance.get_records_for_run(run_id, of_type=DagsterEventType.STEP_START).records
            return any(record.event_log_entry.step_key == "web_pre_aggregated_bounces" for record in started)

        wait_until(bounces_started, 300, "the bounces step to start", interval=0.2)

        # Meanwhile: another web analytics run waits in the queue (one at a time), another job runs, and
        # the schedule's tick is skipped because the job is busy.
        second = {**pre_aggregate, "runConfigData": {}}
        second["executionMetadata"] = {"tags": [{"key": "dagster/partition", "value": PARTITION}]}
        queued_run = launch_and_wait(dagster_dev, second, until=set())
        other_day = {**demo_day, "runConfigData": {"ops": {"demo_events": {"config": {"events_per_day": 1000}}}}}
        other_day["executionMetadata"] = {"tags": [{"key": "dagster/partition", "value": "2024-03-17"}]}
        other_run = launch_and_wait(dagster_dev, other_day, until={"STARTED", "SUCCESS"}, timeout=120)
        assert run_status(dagster_dev, run_id) == "STARTED", "the pre-aggregate run ended too early for this test"
        assert run_status(dagster_dev, queued_run) == "QUEUED"
        tick = dagster_dev.graphql(
            SCHEDULE_DRY_RUN,
            {
                "selector": {
                    "repositoryLocationName": "web_analytics",
                    "repositoryName": "__repository__",
                    "scheduleName": "web_analytics_today_schedule",
                },
                # Today at noon UTC: near midnight the schedule skips for another reason (the new day has no
                # events yet), whatever the queue holds.
                "timestamp": datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0).timestamp(),
            },
        )["scheduleDryRun"]["evaluationResult"]
        assert not tick["runRequests"] and tick["error"] is None, tick
        assert run_id in tick["skipReason"] or queued_run in tick["skipReason"], tick

        # Terminate, as the run page's Terminate button does.
        terminated = dagster_dev.graphql(TERMINATE_RUN, {"runId": run_id})["terminateRun"]
        assert terminated["__typename"] == "TerminateRunSuccess", terminated
        wait_for_status(dagster_dev, run_id, {"CANCELED"}, timeout=180)
        # The queue moves on: the waiting run starts only now, and everything else finishes.
        wait_for_status(dagster_dev, queued_run, {"SUCCESS"}, timeout=300)
        wait_for_status(dagster_dev, other_run, {"SUCCESS"}, timeout=300)
        canceled_record = instance.get_run_record_by_id(run_id)
        assert instance.get_run_record_by_id(queued_run).start_time >= canceled_record.end_time
        assert instance.get_run_record_by_id(other_run).start_time < canceled_record.end_time

        messages = [entry.user_message for entry in instance.all_logs(run_id)]
        assert any("Interrupted: killing ClickHouse query" in message for message in messages), messages[-20:]
        assert any("KILL QUERY" in message and ": killed" in message for message in messages), messages[-20:]
        retried = instance.get_records_for_run(run_id, of_type=DagsterEventType.STEP_UP_FOR_RETRY).records
        assert not retried, "a terminated run must not retry its step"

    with dagster_dev.clickhouse.get_client() as client:
        for table in ("web_pre_aggregated_stats", "web_pre_aggregated_bounces"):
            if client.command("EXISTS TABLE {table:Identifier}", {"table": table}):
                written = client.command(
                    "SELECT count() FROM {table:Identifier} WHERE toDate(period_bucket) = {day:Date}",
                    {"table": table, "day": CANCEL_DAY},
                )
                assert written == 0, f"{table} got rows from a terminated run"
        staging = client.query_rows(
            "SELECT name FROM system.tables WHERE database = currentDatabase() AND name LIKE '%staging%'"
        )
        assert staging == []
