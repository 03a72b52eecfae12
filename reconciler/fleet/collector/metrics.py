"""``/metrics``: the fleet in Prometheus text format, for the shipped alerting rules.

Fleet-level series (one per fleet, wave and state) for dashboards, and
per-site series the rules in ``deploy/alerts.yaml`` alert on:

- ``outpost_fleet_sites{fleet,wave,state}``: sites by state (`rollout.SITE_STATES`);
- ``outpost_site_state{site,fleet,wave,state}``: 1 for the site's current state;
- ``outpost_site_report_age_seconds{site}`` and
  ``outpost_site_silent_after_seconds{site}``: the rule "silent longer than its
  threshold" compares the two, so each site keeps its own threshold (online
  stores hours, air-gapped plants weeks);
- ``outpost_site_source_stale{site}``: 1 when its source went quiet;
- ``outpost_site_applied_info{site,revision}``;
- ``outpost_collector_repository_ok`` and ``outpost_collector_reports_total{result}``.

A site listed in the repository that never reported has no report age; it is
counted as silent, with ``outpost_site_report_age_seconds`` absent and
``outpost_site_never_reported{site}`` 1.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime

from reconciler.fleet.collector.fleetview import SILENT_AFTER, FleetView
from reconciler.fleet.collector.rollout import site_state, source_stale
from reconciler.fleet.collector.store import SiteRecord

__all__ = ["render_metrics"]

Sample = tuple[Mapping[str, str], float]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _family(name: str, kind: str, help_text: str, samples: Iterable[Sample]) -> list[str]:
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
    for labels, value in samples:
        text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
        number = str(int(value)) if float(value).is_integer() else repr(float(value))
        lines.append(f"{name}{{{text}}} {number}" if text else f"{name} {number}")
    return lines


def render_metrics(
    records: Mapping[str, SiteRecord],
    view: FleetView | None,
    *,
    now: datetime,
    repository_ok: bool,
    reports: Mapping[str, int],
) -> str:
    sites = sorted(set(view.sites if view else ()) | set(records))
    by_group: dict[tuple[str, str, str], int] = {}
    state_samples: list[Sample] = []
    age: list[Sample] = []
    threshold: list[Sample] = []
    stale: list[Sample] = []
    never: list[Sample] = []
    applied: list[Sample] = []
    for site in sites:
        info = view.sites.get(site) if view else None
        record = records.get(site)
        state = site_state(record, info, now)
        memberships = list(info.waves.items()) if info and info.waves else [("", None)]
        for fleet, wave in memberships:
            key = (fleet, wave or "", state)
            by_group[key] = by_group.get(key, 0) + 1
            state_samples.append(
                ({"site": site, "fleet": fleet, "wave": wave or "", "state": state}, 1)
            )
        limit = info.silent_after if info else SILENT_AFTER["online"]
        threshold.append(({"site": site}, limit.total_seconds()))
        if record is None:
            never.append(({"site": site}, 1))
            continue
        age.append(({"site": site}, round((now - record.time).total_seconds(), 3)))
        stale.append(({"site": site}, 1 if source_stale(record, now) else 0))
        applied.append(({"site": site, "revision": record.applied or ""}, 1))
    lines: list[str] = []
    lines += _family(
        "outpost_fleet_sites",
        "gauge",
        "Sites by fleet, wave and state.",
        (({"fleet": f, "wave": w, "state": s}, n) for (f, w, s), n in sorted(by_group.items())),
    )
    lines += _family(
        "outpost_site_state",
        "gauge",
        "1 for the state of each site in each of its fleets.",
        state_samples,
    )
    lines += _family(
        "outpost_site_report_age_seconds",
        "gauge",
        "Seconds since the time of the site's newest report.",
        age,
    )
    lines += _family(
        "outpost_site_silent_after_seconds",
        "gauge",
        "How long the site may stay silent (by its connectivity).",
        threshold,
    )
    lines += _family(
        "outpost_site_never_reported",
        "gauge",
        "1 for a site in the repository that never reported.",
        never,
    )
    lines += _family(
        "outpost_site_source_stale",
        "gauge",
        "1 when the site's git remote or bundle inbox has not answered for days.",
        stale,
    )
    lines += _family(
        "outpost_site_applied_info", "gauge", "The revision each site runs (value 1).", applied
    )
    lines += _family(
        "outpost_collector_repository_ok",
        "gauge",
        "1 when the fleet repository's head verified at the last refresh.",
        [({}, 1 if repository_ok else 0)],
    )
    lines += _family(
        "outpost_collector_reports_total",
        "counter",
        "Reports this collector process handled, by result.",
        (({"result": r}, n) for r, n in sorted(reports.items())),
    )
    return "\n".join(lines) + "\n"
