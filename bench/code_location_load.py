"""How long a code server takes to load the project: every location's Definitions, against `import dagster`."""

import os

from bench.common import Row, interleaved_medians, run_python

IMPORT_DAGSTER = "import dagster"
LOAD_EVERY_LOCATION = """
import importlib
from dags.definitions import defs
defs.resolve_asset_graph()
for name in ("shared", "revenue_analytics", "web_analytics", "data_exports"):
    importlib.import_module(f"dags.locations.{name}").defs.resolve_asset_graph()
"""

TARGET_RATIO = 1.3


def run(repeat: int) -> list[Row]:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "0"}
    run_python(LOAD_EVERY_LOCATION, env)  # warm the bytecode cache once, as a code server restart would find it
    medians = interleaved_medians(
        {
            "floor": lambda: run_python(IMPORT_DAGSTER, env),
            "project": lambda: run_python(LOAD_EVERY_LOCATION, env),
        },
        repeat,
    )
    ratio = medians["project"] / medians["floor"]
    return [
        Row(
            "code location load (all locations)",
            f"{medians['project']:.2f}s",
            f"`import dagster` {medians['floor']:.2f}s",
            ratio,
            f"<= {TARGET_RATIO}x",
            ratio <= TARGET_RATIO,
        )
    ]
