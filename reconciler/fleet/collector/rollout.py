"""Answers from stored reports: each site's state, and where one change stands, wave by wave.

Pure functions over `SiteRecord`s, the `FleetView` and a clock passed in.

A site's **state** (``GET /api/v1/sites?state=…``), first rule that holds:

==============  ==========================================================
``silent``      no report within the site's threshold (`SiteInfo.silent_after`),
                or none ever
``refused``     its newest report refused a candidate (signature, policy, render)
``rolled-back`` it rolled back, or a failed revision is not retried
``failing``     health failed or degraded, or applying was interrupted
``waiting``     a verified change waits for its window, freeze or wave
``ok``          it runs what it should and is healthy
==============  ==========================================================

and, separately, **stale**: its source (git remote or bundle inbox) last
answered more than `SOURCE_STALE` ago — updates may be withheld (a freeze
attack) or the link is broken.

A **change** (a commit C) at a site, first rule that holds:

``applied``     the site runs C or a descendant of it (facts outlive silence)
``silent``      no recent report: nobody knows
``rolled-back`` C (or a descendant) failed health there and was rolled back
``refused``     the site refused C or a descendant (why: the node's reason)
``waiting``     C or a descendant waits (why, until: the gate's answer)
``stale``       the site's source is stale: it may never have seen C
``waiting``     otherwise it has not fetched C yet (why says so)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from reconciler.fleet.collector.fleetview import SILENT_AFTER, FleetView, SiteInfo
from reconciler.fleet.collector.store import SiteRecord

__all__ = [
    "CHANGE_STATES",
    "SITE_STATES",
    "SOURCE_STALE",
    "ChangeAtSite",
    "change_rollout",
    "change_state",
    "count_states",
    "parse_stamp",
    "remembered",
    "rollout_order",
    "site_json",
    "site_state",
    "source_stale",
]

SITE_STATES = ("silent", "refused", "rolled-back", "failing", "waiting", "ok")
CHANGE_STATES = ("applied", "waiting", "refused", "rolled-back", "stale", "silent")
SOURCE_STALE = timedelta(days=3)
"""The agent's own default ``staleAfter``."""

Descends = Callable[[str, str], bool | None]


def remembered(descends: Descends) -> Descends:
    """``descends`` asked once per (revision, ancestor): most sites run a handful of
    revisions, and each answer opens the repository."""
    known: dict[tuple[str, str], bool | None] = {}

    def cached(revision: str, ancestor: str) -> bool | None:
        key = (revision, ancestor)
        if key not in known:
            known[key] = descends(revision, ancestor)
        return known[key]

    return cached


def parse_stamp(value: str | None) -> datetime | None:
    """A time a report or the store holds (ISO 8601); None when absent or not one."""
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _silent_after(info: SiteInfo | None) -> timedelta:
    return info.silent_after if info is not None else SILENT_AFTER["online"]


def source_stale(record: SiteRecord, now: datetime) -> bool:
    answered = parse_stamp(record.source_answered)
    return answered is None or now - answered > SOURCE_STALE


def site_state(record: SiteRecord | None, info: SiteInfo | None, now: datetime) -> str:
    if record is None or now - record.time > _silent_after(info):
        return "silent"
    if record.outcome == "refused":
        return "refused"
    if record.outcome in ("rolled-back", "failed", "failed-before"):
        return "rolled-back"
    if record.health in ("failed", "degraded") or record.outcome == "interrupted":
        return "failing"
    if record.outcome == "waiting":
        return "waiting"
    return "ok"


def site_json(
    site: str, record: SiteRecord | None, info: SiteInfo | None, now: datetime
) -> dict[str, Any]:
    """One site as the API and ``outpost fleet status -o json`` show it."""
    fleets = dict(info.waves) if info is not None else {}
    if record is None:
        return {
            "site": site,
            "state": "silent",
            "stale": None,
            "fleets": fleets,
            "reported": None,
            "ageSeconds": None,
        }
    return {
        "site": site,
        "state": site_state(record, info, now),
        "stale": source_stale(record, now),
        "fleets": fleets,
        "node": record.node,
        "reported": record.time.isoformat(),
        "ageSeconds": round((now - record.time).total_seconds()),
        "outcome": record.outcome,
        "health": record.health,
        "applied": {"revision": record.applied, "at": record.applied_at},
        "pending": (
            {
                "revision": record.pending,
                "reason": record.pending_reason,
                "until": record.pending_until,
            }
            if record.pending
            else None
        ),
        "lastError": record.last_error,
        "warnings": list(record.warnings),
        "failedRevisions": list(record.failed),
        "sourceLastAnswered": record.source_answered,
    }


@dataclass(frozen=True)
class ChangeAtSite:
    site: str
    fleet: str | None
    wave: str | None
    state: str
    why: str | None = None
    until: str | None = None
    runs: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "site": self.site,
            "state": self.state,
            "why": self.why,
            "until": self.until,
            "runs": self.runs,
        }


def change_state(
    commit: str,
    record: SiteRecord | None,
    info: SiteInfo | None,
    now: datetime,
    descends: Descends,
) -> tuple[str, str | None, str | None]:
    """Where ``commit`` stands at one site: (state, why, until), as in the table above."""

    def includes(revision: str | None) -> bool:
        return bool(revision) and descends(str(revision), commit) is True

    if record is not None and includes(record.applied):
        return "applied", None, None
    if record is None:
        return "silent", "no report from this site yet", None
    age = now - record.time
    if age > _silent_after(info):
        return "silent", f"last report {_age(age)} ago", None
    failed = next((f for f in record.failed if includes(f)), None)
    if failed is not None:
        return "rolled-back", f"{failed[:12]} failed its health check and was rolled back", None
    if includes(record.pending):
        if record.outcome == "refused":
            return "refused", record.pending_reason, None
        if record.outcome in ("failed-before", "rolled-back", "failed"):
            return "rolled-back", record.pending_reason or record.last_error, None
        return "waiting", record.pending_reason, record.pending_until
    if source_stale(record, now):
        answered = record.source_answered or "never"
        return "stale", f"its source last answered {answered}", None
    runs = (record.applied or "nothing")[:12]
    return "waiting", f"has not fetched it yet (runs {runs})", None


def change_rollout(
    commit: str,
    view: FleetView | None,
    records: Mapping[str, SiteRecord],
    *,
    now: datetime,
    descends: Descends,
) -> dict[str, Any]:
    """Where ``commit`` stands at every site, grouped by fleet and wave in rollout order."""
    descends = remembered(descends)
    sites: Iterable[str] = sorted(set(view.sites if view else ()) | set(records))
    groups: dict[tuple[str, str], list[ChangeAtSite]] = {}
    totals = dict.fromkeys(CHANGE_STATES, 0)
    for site in sites:
        info = view.sites.get(site) if view else None
        record = records.get(site)
        state, why, until = change_state(commit, record, info, now, descends)
        totals[state] += 1
        memberships = list(info.waves.items()) if info and info.waves else [(None, None)]
        for fleet, wave in memberships:
            entry = ChangeAtSite(
                site, fleet, wave, state, why, until, record.applied if record else None
            )
            groups.setdefault((fleet or "", wave or ""), []).append(entry)

    waves = []
    for key in sorted(groups, key=rollout_order(view)):
        entries = groups[key]
        waves.append(
            {
                "fleet": key[0] or None,
                "wave": key[1] or None,
                "counts": count_states((e.state for e in entries), CHANGE_STATES),
                "sites": [e.to_json() for e in entries],
            }
        )
    return {"commit": commit, "totals": totals, "waves": waves}


def rollout_order(view: FleetView | None) -> Callable[[tuple[str, str]], tuple[str, int]]:
    """Sort key for (fleet, wave) groups: by fleet, then the fleet's waves in rollout order
    (``view.waves``); a wave the view does not know, or no wave, last."""

    def order(key: tuple[str, str]) -> tuple[str, int]:
        fleet, wave = key
        names = view.waves.get(fleet, ()) if view else ()
        return fleet, names.index(wave) if wave in names else len(names)

    return order


def count_states(states: Iterable[str], names: Iterable[str]) -> dict[str, int]:
    """How many of ``states`` are each of ``names`` (every name present, zero or more)."""
    counts = dict.fromkeys(names, 0)
    for state in states:
        counts[state] += 1
    return counts


def _age(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    if days:
        return f"{days}d{hours}h" if hours else f"{days}d"
    if hours:
        return f"{hours}h{rest // 60}m"
    return f"{rest // 60}m"
