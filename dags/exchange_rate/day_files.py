"""Where fetched rates are kept between the two steps: one JSON file per partition, readable by people too.

The I/O manager itself is built when a run starts: it stands on `upath` and `fsspec`, which a code
server would otherwise import (a tenth of a second) every time it loads the definitions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dagster import ConfigurableIOManagerFactory, InitResourceContext
from pydantic import Field

if TYPE_CHECKING:
    from dags.exchange_rate.day_files_io import DayRatesIOManager

IO_MANAGER_KEY = "exchange_rate_io_manager"


class DayRatesIOManagerFactory(ConfigurableIOManagerFactory):
    """Keeps fetched rates under the instance's storage folder (or `base_dir`), one JSON file per partition."""

    base_dir: str | None = Field(default=None, description="Folder for the files; default: <instance storage>.")

    def create_io_manager(self, context: InitResourceContext) -> DayRatesIOManager:
        from upath import UPath

        from dags.exchange_rate.day_files_io import DayRatesIOManager

        base = self.base_dir or context.instance.storage_directory()
        return DayRatesIOManager(base_path=UPath(base))
