"""Benchmark: ``outpost schedule`` for a change that touches all 10,000 sites of a fleet.

Measures, in one run:

- parse: 10,000 site specs + the fleet → SiteCalendar / FleetRollout;
- predict: wave, wave opening, first allowed instant and blocker for every site
  (the per-site work of ``outpost schedule``);
- render: text, Markdown and JSON of all 10,000 rows;
- decide: one gate decision per site at a fixed instant (the agent's per-tick call).

Goal: parse + predict + render under 5 s.

Peer (same run, same machine): the naive way to answer "when will this site
first apply?" without ``next_allowed`` — step a clock minute by minute through
``decide()`` until it says Apply. Measured on a random sample of sites and
extrapolated per site; stepping is capped at ``--cap-days`` days, so for a
site held longer (the peak-season freeze) the naive cost is *under*-stated and
the ratio is a lower bound. The sample's stepped answers are checked against
the predictions.

Then the command itself on a git repository (``--repo-sites``, default 10,000;
0 skips it): the example fleet grown to that many sites by
``bench/validate_fleet.py``'s generator, committed, and a second commit that
edits ``apps/node-metrics/manifests/daemonset.yaml`` — an app every fleet
assigns, so the change touches every site. Measured:

- ``outpost schedule --base A --head B -o text|markdown|json`` end to end, each
  in a fresh process (interpreter start, imports, git, YAML, render of one site
  per (fleets, own apps) combination, predict, format), after one untimed-for-
  the-goal first run that pays for cold OS and git caches right after the commit;
- the same work in-process, split into the schedule and the formatting.

Peers, same run: (1) rendering every affected site to learn its sources, the
straightforward way to match the node's "did a commit touch my slice" —
render_site timed on a sample and multiplied by the sites; (2) a site.yaml read
from a commit with libgit2's default tree cache (trees above 4 KiB are not kept,
so the 10,000-entry ``sites`` tree is parsed again on every read) against the
raised limit the command sets.

Run: python bench/schedule.py [--sites 10000] [--sample 8] [--cap-days 14]
                              [--repo-sites 10000] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from reconciler.core.schedule import (
    Apply,
    Change,
    FleetRollout,
    Prediction,
    SiteCalendar,
    decide,
    predict,
    render_json,
    render_markdown,
    render_text,
)

ZONES = [
    "Europe/Berlin",
    "Europe/London",
    "Europe/Paris",
    "America/Chicago",
    "America/New_York",
    "America/Los_Angeles",
    "America/Sao_Paulo",
    "Australia/Sydney",
    "Asia/Kolkata",
    "Asia/Kathmandu",
    "Asia/Tokyo",
    "Pacific/Auckland",
]
WINDOWS: list[list[dict[str, Any]]] = [
    [{"days": ["mon", "tue", "wed", "thu", "fri", "sat"], "start": "22:30", "duration": "6h"}],
    [{"days": ["sun"], "start": "02:30", "duration": "3h"}],
    [
        {"days": ["tue", "thu"], "start": "23:00", "duration": "4h"},
        {"days": ["sat"], "start": "20:00", "duration": "10h"},
    ],
    [{"days": ["mon", "tue", "wed", "thu", "fri"], "start": "01:00", "duration": "2h30m"}],
]
START = datetime(2026, 11, 10, 12, tzinfo=UTC)
ROOT = Path(__file__).resolve().parent.parent
DAEMONSET = "apps/node-metrics/manifests/daemonset.yaml"


def generate(n: int, rng: random.Random) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    sites: list[dict[str, Any]] = []
    for i in range(n):
        spec: dict[str, Any] = {
            "timezone": rng.choice(ZONES),
            "updateWindows": rng.choice(WINDOWS),
        }
        if rng.random() < 0.05:
            spec["maintenance"] = [
                {
                    "name": "shutdown",
                    "start": "2026-12-24T06:00:00+01:00",
                    "end": "2027-01-02T18:00:00+01:00",
                }
            ]
        if rng.random() < 0.1:
            spec["freezes"] = [{"name": "stocktake", "from": "2026-11-12", "to": "2026-11-13"}]
        labels = {"format": rng.choice(["hypermarket", "supermarket", "express"])}
        sites.append({"id": f"st-{i:05d}", "spec": spec, "labels": labels})
    fleet = {
        "waves": [
            {"name": "canary", "sites": [f"st-{i:05d}" for i in range(5)]},
            {
                "name": "hypermarkets",
                "selector": {"matchLabels": {"format": "hypermarket"}},
                "soak": "24h",
            },
            {"name": "early", "percent": 10, "soak": "24h"},
            {"name": "all", "soak": "48h"},
        ],
        "freezes": [
            {
                "name": "peak-season",
                "from": "2026-11-20",
                "to": "2027-01-05",
                "reason": "holiday trading",
            }
        ],
    }
    return sites, fleet


def naive_first_apply(
    site: SiteCalendar, fleet: FleetRollout, change: Change, cap: timedelta
) -> tuple[datetime | None, int]:
    t = START
    steps = 0
    while t <= START + cap:
        steps += 1
        if isinstance(decide(site, fleet, change, t), Apply):
            return t, steps
        t += timedelta(minutes=1)
    return None, steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=int, default=10_000)
    parser.add_argument("--sample", type=int, default=8)
    parser.add_argument("--cap-days", type=int, default=14)
    parser.add_argument("--repo-sites", type=int, default=10_000, help="0 skips the repository")
    parser.add_argument("--keep", type=Path, help="generate the repository under this folder")
    args = parser.parse_args()
    rng = random.Random(42)
    raw_sites, raw_fleet = generate(args.sites, rng)
    change = Change(START)

    t0 = time.perf_counter()
    fleet = FleetRollout.from_spec(raw_fleet, fleet="retail")
    sites = [
        SiteCalendar.from_spec(s["spec"], site_id=s["id"], labels=s["labels"]) for s in raw_sites
    ]
    t1 = time.perf_counter()
    rows: list[Prediction] = [predict(s, fleet, change, START, site_type="store") for s in sites]
    t2 = time.perf_counter()
    text = render_text(rows, start=START)
    markdown = render_markdown(rows, start=START)
    json_text = render_json(rows, start=START)
    t3 = time.perf_counter()
    now = START + timedelta(days=2, hours=10)
    applying = sum(isinstance(decide(s, fleet, change, now), Apply) for s in sites)
    t4 = time.perf_counter()

    parse_s, predict_s, render_s, decide_s = t1 - t0, t2 - t1, t3 - t2, t4 - t3
    total = parse_s + predict_s + render_s
    n = len(sites)
    print(f"sites: {n:,} in {len(ZONES)} zones; start {START:%Y-%m-%d %H:%M} UTC")
    print(f"summary: {text.splitlines()[1]}")
    print(f"parse    {parse_s:7.3f} s")
    print(f"predict  {predict_s:7.3f} s   ({predict_s / n * 1e6:6.1f} µs/site)")
    print(
        f"render   {render_s:7.3f} s   (text {len(text):,} B, markdown {len(markdown):,} B, "
        f"json {len(json_text):,} B)"
    )
    print(f"schedule {total:7.3f} s   goal < 5 s: {'met' if total < 5 else 'MISSED'}")
    print(f"decide   {decide_s:7.3f} s   ({decide_s / n * 1e6:6.1f} µs/site; {applying:,} apply)")

    # Peer: naive minute stepping through decide() on a sample.
    cap = timedelta(days=args.cap_days)
    sample = rng.sample(range(n), args.sample)
    stepped = 0
    capped = 0
    t5 = time.perf_counter()
    for i in sample:
        found, steps = naive_first_apply(sites[i], fleet, change, cap)
        stepped += steps
        predicted = rows[i].first_allowed
        if found is None:
            capped += 1
            assert predicted is None or predicted > START + cap, (sites[i].site_id, predicted)
        else:
            assert found == predicted, (sites[i].site_id, found, predicted)
    t6 = time.perf_counter()
    naive_per_site = (t6 - t5) / len(sample)
    fast_per_site = predict_s / n
    print(
        f"peer: naive minute stepping, {len(sample)} sampled sites, {stepped:,} decide() calls, "
        f"{capped} capped at {args.cap_days} d: {naive_per_site * 1e3:8.1f} ms/site "
        f"(≈{naive_per_site * n:,.0f} s for {n:,} sites)"
    )
    print(
        f"ratio: next_allowed is {naive_per_site / fast_per_site:,.0f}× faster per site than "
        "stepping (a lower bound: capped sites step at most the cap); answers agree on the sample"
    )
    if args.repo_sites > 0:
        print()
        repository_benchmark(args.repo_sites, args.keep)


# --------------------------------------------------------------------------- the command


_GIT_ENV = {
    "GIT_AUTHOR_NAME": "bench",
    "GIT_AUTHOR_EMAIL": "bench@example.com",
    "GIT_COMMITTER_NAME": "bench",
    "GIT_COMMITTER_EMAIL": "bench@example.com",
}


def _git(root: Path, *argv: str) -> str:
    done = subprocess.run(
        ["git", "-c", "commit.gpgsign=false", *argv],
        cwd=root,
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, **_GIT_ENV},
    )
    return done.stdout.strip()


def make_repository(n: int, root: Path) -> tuple[str, str]:
    """The example fleet grown to ``n`` sites, committed; then a change every site runs."""
    sys.path.insert(0, str(ROOT / "bench"))
    from validate_fleet import generate  # the fleet generator the validate benchmark uses

    generate(n, root, random.Random(42))
    _git(root, "init", "-q", "-b", "main")
    _git(root, "add", "-A")
    _git(root, "commit", "-q", "-m", "fleet")
    base = _git(root, "rev-parse", "HEAD")
    manifest = root / DAEMONSET
    text = manifest.read_text()
    changed = re.sub(
        r"labels: \{app.kubernetes.io/name: node-exporter\}",
        'labels: {app.kubernetes.io/name: node-exporter, example.com/rollout: "2"}',
        text,
        count=1,
    )
    assert changed != text, f"{DAEMONSET} no longer has the line this benchmark edits"
    manifest.write_text(changed)
    _git(root, "commit", "-q", "-am", "node-metrics: label the exporter pods")
    return base, _git(root, "rev-parse", "HEAD")


_CACHE_PEER = r"""
import json, sys, time
import pygit2
from reconciler.core.source import CommitTree
root, count = sys.argv[1], int(sys.argv[2])
repo = pygit2.Repository(root)
tree = CommitTree(repo, "HEAD")
sites = sorted({p.split("/")[1] for p in tree.files("sites", lenient=True)})
def per_read(ids):
    t = time.perf_counter()
    for site in ids:
        tree.read(f"sites/{site}/site.yaml")
    return (time.perf_counter() - t) / len(ids)
default = per_read(sites[:count])
pygit2.settings.cache_object_limit(pygit2.enums.ObjectType.TREE, 64 << 20)
raised = per_read(sites[count:2 * count])
print(json.dumps({"default": default, "raised": raised}))
"""


def repository_benchmark(n: int, keep: Path | None) -> None:
    with tempfile.TemporaryDirectory(prefix=f"outpost-schedule-{n}-", dir=keep) as tmp:
        root = Path(tmp) / "fleet"
        t0 = time.perf_counter()
        base, head = make_repository(n, root)
        print(
            f"repository: {n:,} sites generated and committed in {time.perf_counter() - t0:.1f} s"
        )
        print(f"change: {base[:12]}..{head[:12]} edits {DAEMONSET} (every fleet assigns it)")

        walls: dict[str, float] = {}
        for fmt in ("json", "text", "markdown", "json"):
            argv = [sys.executable, "-m", "reconciler.cli", "schedule", str(root)]
            argv += ["--base", base, "--head", head, "-o", fmt]
            started = time.perf_counter()
            done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, check=False)
            wall = time.perf_counter() - started
            assert done.returncode == 0, done.stderr
            if not walls.get("first"):
                walls["first"] = wall
                print(f"outpost schedule --base --head, first run  {wall:6.2f} s (cold caches)")
                continue
            walls[fmt] = wall
            if fmt == "json":
                data = json.loads(done.stdout)
                assert data["total"] == n, (data["total"], data["change"])
                print(f"summary: {data['summary']}")
            print(
                f"outpost schedule --base --head -o {fmt:8s} {walls[fmt]:6.2f} s "
                f"(fresh process; {len(done.stdout):,} B out)"
            )
        timed = sorted(v for k, v in walls.items() if k != "first")
        median = timed[len(timed) // 2]
        print(
            f"goal < 5 s for {n:,} sites: {'met' if median < 5 else 'MISSED'} "
            f"(median {median:.2f} s, best {timed[0]:.2f} s; load average "
            f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)"
        )

        from reconciler.ci.schedule import schedule_change
        from reconciler.core.schedule import render

        started = time.perf_counter()
        result = schedule_change(root, base, head, start=None, now=datetime.now(UTC))
        scheduled = time.perf_counter() - started
        started = time.perf_counter()
        render(result.predictions, "json", start=result.start, notes=result.notes)
        formatted = time.perf_counter() - started
        print(
            f"in-process: schedule {scheduled:.2f} s ({scheduled / n * 1e3:.2f} ms/site), "
            f"json {formatted:.2f} s"
        )

        # Peer 1: render every site for its sources (sampled).
        import pygit2

        from reconciler.core.model import Repository
        from reconciler.core.render import render_site
        from reconciler.core.source import CommitTree

        repo = Repository(CommitTree(pygit2.Repository(str(root)), head))
        sample = random.Random(7).sample(list(repo.site_ids), min(300, n))
        started = time.perf_counter()
        for site in sample:
            render_site(repo, site)
        per_render = (time.perf_counter() - started) / len(sample)
        extra = per_render * n
        print(
            f"peer: render_site {per_render * 1e3:.2f} ms/site: rendering all {n:,} for their "
            f"sources would add ≈{extra:.1f} s, {(scheduled + extra) / scheduled:.1f}× the "
            "in-process schedule"
        )

        # Peer 2: libgit2's default tree cache against the raised limit.
        out = subprocess.run(
            [sys.executable, "-c", _CACHE_PEER, str(root), "200"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        reads = json.loads(out)
        print(
            f"peer: a site.yaml read from the commit, default tree cache "
            f"{reads['default'] * 1e3:.2f} ms, raised {reads['raised'] * 1e3:.3f} ms "
            f"({reads['default'] / reads['raised']:,.0f}×; ≈{reads['default'] * n:.0f} s more "
            f"per {n:,} reads)"
        )


if __name__ == "__main__":
    main()
