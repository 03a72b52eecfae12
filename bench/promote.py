"""A promote decision over 10,000 sites' status, against the collector's own rollout answer.

What it measures, in one run (median of --repeat runs):

- **promote**: `fleet.promote.decide_fleet` for one fleet's change over N sites' stored
  status (the earlier waves judged site by site: applied and healthy, rolled back,
  refused), the time one ``outpost fleet promote`` run spends deciding;
- **the peer**: `collector.rollout.change_rollout`, the collector's answer to
  ``GET /api/v1/changes/<sha>`` over the same records — the same per-site state, for
  every site, grouped by wave.

Goal (issue 18): the decision ≤ 1 s for 10,000 sites on 2 cores. The ratio says what the
gate costs on top of the per-site state the collector computes anyway.

The records and the repository view are synthetic (what the store and `read_view` return):
reading 10,000 sites from git and from SQLite is measured by bench/collector.py.

    python bench/promote.py [--sites N] [--repeat R]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from reconciler.core.schedule import FleetRollout  # noqa: E402
from reconciler.fleet.collector.fleetview import FleetView, SiteInfo  # noqa: E402
from reconciler.fleet.collector.rollout import change_rollout  # noqa: E402
from reconciler.fleet.collector.store import SiteRecord  # noqa: E402
from reconciler.fleet.promote import FleetChange, decide_fleet  # noqa: E402

CHANGE, BASE = "c" * 40, "b" * 40
NOW = datetime(2026, 6, 2, 12, 0, tzinfo=UTC)
SPEC = {
    "waves": [
        {"name": "canary", "percent": 1},
        {"name": "early", "percent": 10, "gate": {"minSoak": "2h"}},
        {"name": "half", "percent": 50, "gate": {"minSoak": "2h"}},
        {"name": "all", "gate": {"minSoak": "2h"}},
    ]
}


def world(sites: int) -> tuple[FleetView, dict[str, SiteRecord], FleetRollout]:
    rollout = FleetRollout.from_spec(SPEC, fleet="bench")
    infos: dict[str, SiteInfo] = {}
    records: dict[str, SiteRecord] = {}
    for i in range(sites):
        site = f"de-{i:05d}"
        index = next(n for n, w in enumerate(rollout.waves) if w.selects("bench", site, {}))
        infos[site] = SiteInfo(
            site, "online", ("bench",), {"bench": rollout.waves[index].name}, {"bench": index}, {}
        )
        # canary, early and half applied and healthy; the last wave waits (the largest
        # judgement: half the fleet is judged for it)
        applied = CHANGE if index <= 2 else BASE
        records[site] = SiteRecord(
            site, "edge-1", NOW - timedelta(minutes=5), NOW, f"d{i}", "applied", "healthy",
            applied, None, None if applied == CHANGE else CHANGE, "awaits promotion", None,
            None, (), NOW.isoformat(), (),
        )  # fmt: skip
    waves = {"bench": tuple(w.name for w in rollout.waves)}
    return FleetView("h" * 40, infos, waves), records, rollout


def descends(revision: str, ancestor: str) -> bool | None:
    return revision == ancestor


def timed(fn: object, repeat: int) -> float:
    runs = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()  # type: ignore[operator]
        runs.append(time.perf_counter() - start)
    return statistics.median(runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    view, records, rollout = world(args.sites)
    promoted = (("early", NOW - timedelta(hours=6)), ("half", NOW - timedelta(hours=3)))
    from reconciler.core.schedule import RolloutRecord

    record = RolloutRecord("Promotion", "bench", CHANGE, promoted)
    change = FleetChange("bench", CHANGE, NOW - timedelta(days=1), rollout)

    def promote() -> object:
        return decide_fleet(change, [record], view, records, now=NOW, descends=descends)

    decision = promote()
    assert decision.action == "promote" and decision.wave == "all", decision  # type: ignore[attr-defined]
    print(f"sites judged                {len(decision.sites):,}")  # type: ignore[attr-defined]
    ours = timed(promote, args.repeat)
    peer = timed(
        lambda: change_rollout(CHANGE, view, records, now=NOW, descends=descends), args.repeat
    )
    print(f"sites                       {args.sites:,}")
    print(f"promote decision            {ours * 1000:8.1f} ms  (goal ≤ 1000 ms)")
    print(f"peer: change_rollout        {peer * 1000:8.1f} ms")
    print(f"ratio promote / peer        {ours / peer:8.2f}×")
    print("goal met" if ours <= 1.0 else "GOAL MISSED")


if __name__ == "__main__":
    main()
