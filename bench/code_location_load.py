"""How long a code server takes to load the project: every location's Definitions, against `import dagster`."""

import statistics
import time

from bench.common import Row, Section, Workspace, run_python, seconds, spread

# Both end at "ready": a code server never exits after loading, so the interpreter's teardown (which takes
# longer the more objects a process holds, and less for objects frozen out of the collector) is not counted.
READY = "\nimport os\nos._exit(0)\n"
IMPORT_DAGSTER = "import dagster" + READY
LOAD_EVERY_LOCATION = (
    """
import importlib
from dags.definitions import defs
defs.resolve_asset_graph()
for name in ("shared", "revenue_analytics", "web_analytics", "data_exports", "data_platform"):
    importlib.import_module(f"dags.locations.{name}").defs.resolve_asset_graph()
"""
    + READY
)

TARGET_RATIO = 1.2


def run(workspace: Workspace, repeat: int) -> Section:
    env = workspace.environment(PYTHONDONTWRITEBYTECODE="0")
    run_python(LOAD_EVERY_LOCATION, env)  # warm the bytecode cache once, as a code server restart would find it
    timings: dict[str, list[float]] = {"floor": [], "project": []}
    for _ in range(repeat):  # in turns, so that noise from the shared machine hits both alike
        for name, code in (("floor", IMPORT_DAGSTER), ("project", LOAD_EVERY_LOCATION)):
            started = time.perf_counter()
            run_python(code, env)
            timings[name].append(time.perf_counter() - started)
    floor, project = statistics.median(timings["floor"]), statistics.median(timings["project"])
    ratio = project / floor
    row = Row(
        "code location load (every location's Definitions, fresh process)",
        seconds(project),
        f"`import dagster` {seconds(floor)}",
        ratio,
        f"<= {TARGET_RATIO}x",
        ratio <= TARGET_RATIO,
    )
    detail = (
        f"Code location load (medians of {repeat} fresh interpreters each, in turns, from start to loaded; the "
        "interpreter's exit is not counted; spread: project "
        f"{spread(timings['project'])}, `import dagster` {spread(timings['floor'])})."
    )
    return Section([row], detail)
