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

Run: python bench/schedule.py [--sites 10000] [--sample 8] [--cap-days 14]
"""

from __future__ import annotations

import argparse
import random
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from reconciler.schedule import (
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


if __name__ == "__main__":
    main()
