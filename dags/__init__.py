"""Dagster code locations for product-analytics pipelines on ClickHouse."""

import re
import warnings

# The one place that silences Dagster's notices about its beta and preview APIs that this project uses on
# purpose (backfill policies, partitioned asset checks, sensor owners): every process that imports `dags` (the
# demo, code servers, the tests) prints none of them, by exact message, so any other notice still shows.
PROJECT_BETA_NOTICES = (
    "Parameter `backfill_policy` of function `asset` is currently in beta",
    "Specifying a partitions_def on an AssetCheckSpec is currently in preview",
    "Parameter `owners` of initializer `SensorDefinition.__init__` is currently in beta",
)
for _notice in PROJECT_BETA_NOTICES:
    warnings.filterwarnings("ignore", message=re.escape(_notice))
