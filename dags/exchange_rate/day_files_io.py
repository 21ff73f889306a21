"""The I/O manager of the fetched rates' files (imported when a run starts; see `day_files`)."""

import json

from dagster import Failure, InputContext, OutputContext, UPathIOManager
from upath import UPath

from dags.exchange_rate.sources import DayRates


class DayRatesIOManager(UPathIOManager):
    """One JSON file per partition (readable by people too); a range of partitions writes one file each."""

    extension = ".json"

    def dump_to_path(self, context: OutputContext, obj: DayRates, path: UPath) -> None:
        path.write_text(json.dumps(obj.to_json(), indent=1))

    def load_from_path(self, context: InputContext, path: UPath) -> DayRates:
        return DayRates.from_json(json.loads(path.read_text()))

    def load_input(self, context: InputContext) -> dict[str, DayRates]:
        # Always {partition key: rates}, for one partition as for a range.
        paths = self._get_paths_for_partitions(context)
        missing = [key for key in context.asset_partition_keys if not paths[key].exists()]
        if missing:
            raise Failure(
                f"No fetched rates for {len(missing)} partitions of {context.asset_key.to_user_string()} "
                f"(first: {missing[0]}): materialize them first. Nothing was written.",
                allow_retries=False,  # waiting will not make them appear
            )
        return {key: self.load_from_path(context, paths[key]) for key in context.asset_partition_keys}

    def handle_output(self, context: OutputContext, obj: dict[str, DayRates]) -> None:
        paths = self._get_paths_for_partitions(context)
        missing = sorted(set(paths) - set(obj))
        if missing:
            raise ValueError(f"No rates for partitions {missing[:5]} of {context.asset_key.to_user_string()}")
        for partition_key, path in paths.items():
            self.make_directory(path.parent)
            self.dump_to_path(context, obj[partition_key], path)
        context.add_output_metadata({"files": len(paths), "folder": str(next(iter(paths.values())).parent)})
