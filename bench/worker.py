"""`python -m bench.worker module:function arguments.json result.json`: one measurement in a fresh process.

The benchmarks run every measurement that opens the embedded ClickHouse in a process of its own: chDB
allows one data path per process, and a fresh process makes its peak memory that measurement's alone.
"""

import importlib
import json
import sys
from pathlib import Path


def main(argv: list[str]) -> None:
    function, arguments, result = argv
    module_name, name = function.split(":")
    kwargs = json.loads(Path(arguments).read_text())
    value = getattr(importlib.import_module(module_name), name)(**kwargs)
    Path(result).write_text(json.dumps(value, default=str))


if __name__ == "__main__":
    main(sys.argv[1:])
