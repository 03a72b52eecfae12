"""1,000 stores, a stepped clock, the real collector store and the real promoter.

Real parts: one git repository signed with real ssh-keygen keys (root and promoter);
every head verified by `core.trust` against the stores' trust root; each store's gate
is `node.pipeline.site_gate` — the function `NodePipeline.gate` runs — fed from that
verified history; reports go into the collector's SQLite store; `fleet.promote` decides
from it and commits with `git commit -S`.

Shared where every real node would compute the same thing (said so, for the runtime on
two cores): the stores share one repository and one verification of each head (every
store here applied the same base commit, so each would verify the same range), and the
`Repository` and rollout records of each head. A store's slice sources are what render
gives for these documents (its site.yaml, the fleet, the app), listed, not rendered.
Fake: the cluster. Applying is the store's report of the outcome (healthy, or rolled
back); 1,000 Kubernetes API servers cannot run on two cores, and `tests/cluster/` shows
apply, health and rollback on the real one.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pygit2

from reconciler.core.model import Repository
from reconciler.core.source import CommitTree
from reconciler.fleet.collector.fleetview import read_view
from reconciler.fleet.promote import commit_decision, decide_fleet, fleet_changes
from reconciler.node.pipeline import site_gate
from tests.promote.promote_world import CANARY, World, make_world, report

SITES = 1000
STEP = timedelta(minutes=15)
T0 = int(datetime(2026, 6, 1, 8, 0, tzinfo=UTC).timestamp())


def _changes(world: World, base: str, head: str, now: datetime) -> tuple[Any, ...]:
    """The verified range (base, head] as the node builds its `Change`s."""
    from reconciler.core.commits import Change

    result = world.repo.verify(world.trust, since=base, rev=head, now=now)
    result.raise_for_refusal()
    repo = pygit2.Repository(str(world.repo.path))
    out = []
    for verdict in result.verdicts:
        commit = repo[verdict.sha]
        parent = commit.parents[0]
        paths = frozenset(
            p
            for d in repo.diff(parent.tree, commit.tree).deltas
            for p in (d.old_file.path, d.new_file.path)
        )
        at = datetime.fromtimestamp(verdict.committer_time or 0, UTC)
        out.append(Change(verdict.sha, at, paths, verdict.emergency, verdict.emergency_reason, at))
    return tuple(sorted(out, key=lambda c: c.committed_at))


class Simulation:
    def __init__(self, world: World, *, failing: bool) -> None:
        self.world = world
        self.failing = failing
        self.git = pygit2.Repository(str(world.repo.path))
        self.base = world.repo.head()
        self.applied = dict.fromkeys(world.sites, self.base)
        self.rolled_back: set[str] = set()
        self.applied_at: dict[str, datetime] = {}
        self.decisions: list[tuple[datetime, Any]] = []
        self.view = read_view(self.git, self.base)
        self.reasons: dict[str, list[str]] = {}

    def change(self, now: datetime) -> str:
        sha = self.world.repo.commit(
            {"fleets/retail.yaml": self.world.fleet("1.1.0")},
            self.world.root,
            "pos 1.1.0",
            when=int(now.timestamp()),
        )
        self.change_sha = sha
        return sha

    def tick(self, now: datetime) -> None:
        head = self.world.repo.head()
        changes = _changes(self.world, self.base, head, now)
        repo = Repository(CommitTree(self.git, head))
        records: dict[str, Any] = {}
        waiting = []
        for site in self.world.sites:
            if self.applied[site] != self.base or site in self.rolled_back:
                continue
            sources = {f"sites/{site}/site.yaml", "fleets/retail.yaml", "apps/pos/app.yaml"}
            decision = site_gate(self.git, repo, site, head, changes, sources, now, records=records)
            if not decision.allowed:
                seen = self.reasons.setdefault(site, [])
                if not seen or seen[-1] != decision.reason:  # the agent reports a change
                    seen.append(decision.reason)
                    waiting.append(self._waiting(site, head, decision.reason, now))
                continue
            self.applied_at[site] = now
            if self.failing and site in self.world.sites[:1]:
                self.rolled_back.add(site)
                report(
                    self.world.store, site, now, applied=self.base, health="healthy",
                    outcome="rolled-back", failed=(self.change_sha,),
                )  # fmt: skip
            else:
                self.applied[site] = head
                report(
                    self.world.store, site, now, applied=head, health="healthy",
                    outcome="applied",
                )  # fmt: skip

        self.world.store.ingest(waiting)

    def _waiting(self, site: str, head: str, reason: str, now: datetime) -> Any:
        import json

        from reconciler.fleet.collector.store import Row

        body = {
            "outcome": "waiting",
            "health": "healthy",
            "applied": {"revision": self.base, "at": None},
            "pending": {"revision": head, "reason": reason},
            "sourceLastAnswered": now.isoformat(),
        }
        return Row(site, "edge-1", now, now, f"{site}-{now}", body, json.dumps(body), "sig")

    def promote(self, now: datetime) -> None:
        head = self.world.repo.head()
        reports = {r.site: r for r in self.world.store.sites()}
        from reconciler.core.schedule import read_records

        tree = CommitTree(self.git, head)

        def descends(a: str, b: str) -> bool | None:
            return a == b or bool(self.git.descendant_of(a, b))

        for change in fleet_changes(self.git, head):
            decision = decide_fleet(
                change, read_records(tree, change.fleet), self.view, reports,
                now=now, descends=descends,
            )  # fmt: skip
            self.decisions.append((now, decision))
            if decision.writes:
                commit_decision(
                    self.world.repo.path, decision, key=self.world.promoter.private, now=now
                )


def _wave_of(sim: Simulation) -> dict[str, str]:
    return {s: info.waves["retail"] or "" for s, info in sim.view.sites.items()}


def _run(tmp_path: Path, *, failing: bool, steps: int) -> Simulation:
    world = make_world(tmp_path, SITES, when=T0)
    sim = Simulation(world, failing=failing)
    start = datetime.fromtimestamp(T0, UTC) + STEP
    sim.change(start)
    for n in range(steps):
        now = start + n * STEP
        sim.tick(now)
        sim.promote(now)
    return sim


def test_a_canary_that_rolls_back_halts_the_fleet_and_no_later_store_applies(
    tmp_path: Path,
) -> None:
    sim = _run(tmp_path, failing=True, steps=16)
    waves = _wave_of(sim)
    assert len(sim.world.sites) >= 1000
    beyond = [s for s, at in sim.applied_at.items() if waves[s] != "canary"]
    assert beyond == []
    assert sum(1 for s in sim.applied_at if waves[s] == "canary") == CANARY
    first = sim.decisions[0]
    assert first[1].action == "halt", first  # the first promote run after the rollback
    assert first[1].wave == "early"
    assert sim.world.sites[0] in "\n".join(first[1].sites)
    assert all(d.action == "halted" for _, d in sim.decisions[1:])
    log = sim.world.repo.git("log", "-1", "--format=%B")
    assert "halt before wave 'early'" in log and "rolled-back" in log
    # the node's own reason, for a store of the next wave
    head = sim.world.repo.head()
    later = next(s for s in sim.world.sites if waves[s] == "early")
    gate = site_gate(
        sim.git, Repository(CommitTree(sim.git, head)), later, head,
        _changes(sim.world, sim.base, head, sim.decisions[-1][0]),
        {f"sites/{later}/site.yaml", "fleets/retail.yaml", "apps/pos/app.yaml"},
        sim.decisions[-1][0] + timedelta(days=30),
    )  # fmt: skip
    assert not gate.allowed and "halted" in gate.reason, gate
    # `outpost fleet status` shows each waiting store's rule: the node's reason
    from reconciler.fleet.collector.offline import format_text

    records = {r.site: r for r in sim.world.store.sites()}
    table = format_text(records, sim.view, now=sim.decisions[-1][0])
    line = next(line for line in table.splitlines() if later in line)
    assert "is halted for this change" in line and "rolled back or refuse" in line, line


def test_a_promotion_commit_changes_no_store_slice(tmp_path: Path) -> None:
    from reconciler.ci.diff import affected_sites, changed_paths_between_commits

    sim = _run(tmp_path, failing=False, steps=6)
    commits = sim.world.repo.git("log", "--format=%H", f"{sim.change_sha}..HEAD").split()
    assert commits, "the promoter committed nothing"
    repo = Repository(CommitTree(sim.git, sim.world.repo.head()))
    for sha in commits:
        paths = changed_paths_between_commits(sim.git, f"{sha}^", sha)
        assert paths and all(p.startswith("rollouts/retail/") for p in paths)
        assert affected_sites(paths, repo) == {}


def test_a_healthy_change_reaches_every_store_each_wave_within_one_promote_run(
    tmp_path: Path,
) -> None:
    from reconciler.ci.schedule import schedule_change

    sim = _run(tmp_path, failing=False, steps=14)
    waves = _wave_of(sim)
    assert set(sim.applied_at) == set(sim.world.sites)
    last = next(s for s in sim.world.sites if waves[s] == "all")
    assert any(
        "awaits promotion of wave 'all'" in r and "gate: at least 90 %" in r
        for r in sim.reasons[last]
    ), sim.reasons[last]
    opened = {d.wave: at for at, d in sim.decisions if d.action == "promote"}
    assert set(opened) == {"early", "all"}
    # what `outpost schedule` predicted for the change, one store of each wave
    one = {w: next(s for s in sim.world.sites if waves[s] == w) for w in ("early", "all")}
    predicted = schedule_change(
        sim.world.repo.path, sim.base, sim.change_sha, start=None,
        now=datetime.fromtimestamp(T0, UTC), sites=sorted(one.values()),
    )  # fmt: skip
    by_site = {p.site: p for p in predicted.predictions}
    assert set(one.values()) <= set(by_site), (predicted.errors, predicted.notes)
    from reconciler.core.schedule import render_text, to_json_data

    text = render_text(predicted.predictions, start=predicted.start)
    assert "awaits promotion, ≥" in text
    assert "retail/early: awaits promotion of wave 'early'" in text and "90 %" in text
    waves_json = {
        w["wave"]: w for w in to_json_data(predicted.predictions, start=predicted.start)["waves"]
    }
    assert waves_json["all"]["earliestOpen"] is not None
    for wave, site in one.items():
        row = by_site[site]
        assert row.blocked_kind == "awaits-promotion"
        assert row.earliest_open is not None
        assert row.earliest_open <= opened[wave] < row.earliest_open + STEP
        first_applied = min(at for s, at in sim.applied_at.items() if waves[s] == wave)
        assert opened[wave] <= first_applied <= opened[wave] + STEP
