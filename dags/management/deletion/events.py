"""Deleting the requests' rows from `events`: one mutation per monthly partition and team, on every copy.

`ALTER TABLE ... DELETE` rewrites the parts that hold matching rows, so the rows are physically gone (a
lightweight `DELETE` only hides them until a merge). A mutation is limited to one partition (`IN
PARTITION`) and one team, so one huge team never makes the server rewrite the whole table in one go; each is
waited for before the next, with progress in the log and a bounded wait.

On a cluster a `Distributed` table cannot be mutated: the mutation goes to `sharded_events` on one host
per shard (replicated) or on every host (copies written by `Distributed`), and is followed in each host's
`system.mutations`. Each mutation carries a marker made of its plan, so a run killed after enqueueing
finds it on the next run and waits for it instead of enqueueing it a second time; a plan that changed (late
events) makes a new marker and a new mutation.
"""

import hashlib
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from dags.common import ClickHouseCluster
from dags.management.deletion.requests import DeletionRequest
from dags.management.mutations import MarkedMutation, run_on_every_copy

TIMEOUT_ADVICE = "Raise DATA_DELETION_MUTATION_TIMEOUT_SECONDS for larger teams."
SHARDED_EVENTS = "sharded_events"  # dags.events' cluster contract (management jobs never import domains' assets)

DELETE_IN_PARTITION = """
ALTER TABLE {table}
DELETE IN PARTITION ID {{partition:String}}
WHERE team_id = {{team_id:Int64}} AND ({{whole_team:Bool}} OR person_id IN {{person_ids:Array(UUID)}})
  AND {{marker:String}} != ''
"""


@dataclass(frozen=True)
class Mutation:
    """One bounded delete: one monthly partition of `events`, one team (all of it, or some persons)."""

    partition: str  # toYYYYMM
    team_id: int
    whole_team: bool
    person_ids: tuple[str, ...]
    plan: str  # the requests' ids and planned rows: the same on a rerun, new when the plan changes

    @property
    def marker(self) -> str:
        what = (self.partition, self.team_id, self.whole_team, self.person_ids, self.plan)
        digest = hashlib.sha256(repr(what).encode())
        return f"data_deletion:{digest.hexdigest()[:24]}"

    def parameters(self) -> dict[str, object]:
        return {
            "partition": self.partition,
            "team_id": self.team_id,
            "whole_team": self.whole_team,
            "person_ids": list(self.person_ids),
            "marker": self.marker,
        }

    def marked(self) -> MarkedMutation:
        return MarkedMutation(DELETE_IN_PARTITION, self.parameters(), self.marker)


def _plan_of(request: DeletionRequest) -> str:
    return f"{request.request_id}:{','.join(map(str, request.event_rows))}"


def mutations_for(requests: Sequence[DeletionRequest]) -> list[Mutation]:
    """The bounded deletes that remove every planned row of `requests`: per partition and team."""
    persons: dict[tuple[str, int], set[str]] = defaultdict(set)
    whole_teams: set[tuple[str, int]] = set()
    plans: dict[tuple[str, int], set[str]] = defaultdict(set)
    for request in requests:
        for day in request.event_days:
            key = (day.strftime("%Y%m"), request.team_id)
            plans[key].add(_plan_of(request))
            if request.is_whole_team:
                whole_teams.add(key)
            else:
                persons[key].add(request.key.lower())
    return [
        Mutation(
            partition,
            team,
            (partition, team) in whole_teams,
            tuple(sorted(persons.get((partition, team), ()))),
            ";".join(sorted(plans[(partition, team)])),
        )
        for partition, team in sorted(set(persons) | whole_teams)
    ]


def delete_events(
    cluster: ClickHouseCluster,
    requests: Sequence[DeletionRequest],
    timeout_seconds: float,
    log: Callable[[str], None],
) -> list[Mutation]:
    """Delete every planned row of `requests`, one bounded mutation at a time on every copy of the rows;
    returns the mutations run."""
    table = SHARDED_EVENTS if cluster.is_cluster else "events"
    hosts = cluster.hosts_with_own_copy(table)
    mutations = mutations_for(requests)
    for number, mutation in enumerate(mutations, start=1):
        who = "every event" if mutation.whole_team else f"{len(mutation.person_ids)} person(s)"
        where = f" on {len(hosts)} host(s)" if cluster.is_cluster else ""
        log(f"delete {number}/{len(mutations)}: partition {mutation.partition}, team {mutation.team_id}, {who}{where}")
        run_on_every_copy(cluster, hosts, table, mutation.marked(), timeout_seconds, log, TIMEOUT_ADVICE)
    return mutations
