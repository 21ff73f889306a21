"""Deleting the requests' rows from ``events``: one mutation per monthly partition and team, waited for.

``ALTER TABLE ... DELETE`` rewrites the parts that hold matching rows, so the rows are physically gone (a
lightweight ``DELETE`` only hides them until a merge). A mutation is limited to one partition (``IN
PARTITION``) and one team, so one huge team never makes the server rewrite the whole table in one go; each is
waited for before the next, with progress in the log and a bounded wait. Deleting again is a no-op, so a
run killed mid-way simply issues the same mutations again.
"""

import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from dags.common import ClickHouseClient, ClickHouseError
from dags.management.deletion.requests import DeletionRequest

DELETE_IN_PARTITION = """
ALTER TABLE events
DELETE IN PARTITION ID {partition:String}
WHERE team_id = {team_id:Int64} AND ({whole_team:Bool} OR person_id IN {person_ids:Array(UUID)})
"""

UNFINISHED_MUTATIONS = """
SELECT mutation_id, parts_to_do, latest_fail_reason
FROM system.mutations
WHERE database = currentDatabase() AND table = 'events' AND NOT is_done
"""

POLL_SECONDS = 0.5


@dataclass(frozen=True)
class Mutation:
    """One bounded delete: one monthly partition of ``events``, one team (all of it, or some persons)."""

    partition: str  # toYYYYMM
    team_id: int
    whole_team: bool
    person_ids: tuple[str, ...]

    def parameters(self) -> dict[str, object]:
        return {
            "partition": self.partition,
            "team_id": self.team_id,
            "whole_team": self.whole_team,
            "person_ids": list(self.person_ids),
        }


def mutations_for(requests: Sequence[DeletionRequest]) -> list[Mutation]:
    """The bounded deletes that remove every planned row of ``requests``: per partition and team."""
    persons: dict[tuple[str, int], set[str]] = defaultdict(set)
    whole_teams: set[tuple[str, int]] = set()
    for request in requests:
        for day in request.event_days:
            key = (day.strftime("%Y%m"), request.team_id)
            if request.is_whole_team:
                whole_teams.add(key)
            else:
                persons[key].add(request.key.lower())
    keys = sorted(set(persons) | whole_teams)
    return [
        Mutation(partition, team, (partition, team) in whole_teams, tuple(sorted(persons.get((partition, team), ()))))
        for partition, team in keys
    ]


def wait_for_mutations(client: ClickHouseClient, timeout_seconds: float, log: Callable[[str], None]) -> None:
    """Wait until ``events`` has no unfinished mutation, logging progress; fail after ``timeout_seconds``."""
    deadline = time.monotonic() + timeout_seconds
    last_report = ""
    while True:
        unfinished = client.query_rows(UNFINISHED_MUTATIONS)
        if not unfinished:
            return
        failed = [row for row in unfinished if row["latest_fail_reason"]]
        if failed:
            raise ClickHouseError(
                f"Deleting from events failed: mutation {failed[0]['mutation_id']}: {failed[0]['latest_fail_reason']}"
            )
        report = (
            f"waiting for {len(unfinished)} mutation(s), {sum(row['parts_to_do'] for row in unfinished)} part(s) to do"
        )
        if report != last_report:
            log(report)
            last_report = report
        if time.monotonic() > deadline:
            raise ClickHouseError(
                f"Deleting from events did not finish within {timeout_seconds:.0f}s ({report}); it goes on in "
                "ClickHouse (system.mutations), and the next run checks the rows are gone. "
                "Raise DATA_DELETION_MUTATION_TIMEOUT_SECONDS for larger teams."
            )
        time.sleep(POLL_SECONDS)


def delete_events(
    client: ClickHouseClient,
    requests: Sequence[DeletionRequest],
    timeout_seconds: float,
    log: Callable[[str], None],
) -> list[Mutation]:
    """Delete every planned row of ``requests``, one bounded mutation at a time; returns the mutations run."""
    mutations = mutations_for(requests)
    for number, mutation in enumerate(mutations, start=1):
        who = "every event" if mutation.whole_team else f"{len(mutation.person_ids)} person(s)"
        log(f"delete {number}/{len(mutations)}: partition {mutation.partition}, team {mutation.team_id}, {who}")
        client.command(DELETE_IN_PARTITION, mutation.parameters(), settings={"mutations_sync": 0})
        wait_for_mutations(client, timeout_seconds, log)
    return mutations
