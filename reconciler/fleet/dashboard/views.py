"""What each dashboard page shows, computed from stored reports, the verified view and a clock.

Pure functions (no HTTP, no database, no template): the pages are these
dataclasses rendered by Jinja2 in `web`.

A site's **state on the dashboard** is the collector's `site_state`
(``GET /api/v1/sites``), with two words changed for a screen: ``ok`` reads
``applied``, and a site that is ``applied`` or ``waiting`` but whose source
(git remote or bundle inbox) has not answered for days reads ``stale`` — it
may be withheld updates, which is what an operator must see first.

**10,000 sites stay usable**: a wave row draws one cell per site up to
`CELLS_PER_ROW` sites and a proportional bar (with the same counts in text)
above that; the site list under the rows is filtered, searched by site id and
paged (`PAGE_SIZE`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from reconciler.fleet.collector.fleetview import FleetView, SiteInfo
from reconciler.fleet.collector.notify import firing_alerts, headline
from reconciler.fleet.collector.rollout import (
    Descends,
    change_rollout,
    count_states,
    parse_stamp,
    rollout_order,
    site_state,
    source_stale,
)
from reconciler.fleet.collector.store import HistoryRecord, SiteRecord

__all__ = [
    "CELLS_PER_ROW",
    "DASHBOARD_STATES",
    "PAGE_SIZE",
    "Alert",
    "ChangePage",
    "Filters",
    "Overview",
    "Predicted",
    "SitePage",
    "age_text",
    "alerts",
    "change_page",
    "dashboard_state",
    "overview",
    "site_page",
]

DASHBOARD_STATES = ("applied", "waiting", "failing", "refused", "rolled-back", "stale", "silent")
CELLS_PER_ROW = 400
PAGE_SIZE = 50
LATE_GRACE = timedelta(minutes=30)
"""A site counts as late this long after its predicted instant: a node acts on its next tick."""


def dashboard_state(record: SiteRecord | None, info: SiteInfo | None, now: datetime) -> str:
    state = site_state(record, info, now)
    if state in ("ok", "waiting") and record is not None and source_stale(record, now):
        return "stale"
    return "applied" if state == "ok" else state


def age_text(seconds: float | None) -> str:
    """``42s``, ``17m``, ``3h05m``, ``2d4h``: an age a wall screen can show."""
    if seconds is None:
        return "never"
    seconds = max(0, int(seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    if days:
        return f"{days}d{hours}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m"
    return f"{seconds}s"


# -- filters -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Filters:
    """The overview's query string, checked: unknown values become None (never an error page)."""

    fleet: str | None = None
    label: str | None = None
    """``key=value``, e.g. ``country=de`` or ``region=apac``."""
    state: str | None = None
    revision: str | None = None
    search: str | None = None
    page: int = 1

    @classmethod
    def parse(cls, query: Mapping[str, str]) -> Filters:
        def clean(name: str, limit: int = 80) -> str | None:
            value = (query.get(name) or "").strip()[:limit]
            return value or None

        state = clean("state")
        revision = clean("revision", 40)
        label = clean("label")
        page = query.get("page") or "1"
        return cls(
            fleet=clean("fleet"),
            label=label if label and "=" in label else None,
            state=state if state in DASHBOARD_STATES else None,
            revision=revision.lower() if revision and _hex(revision) else None,
            search=(clean("q", 64) or "").lower() or None,
            page=int(page) if page.isdigit() and 0 < int(page) < 100_000 else 1,
        )

    def query(self, **changes: Any) -> str:
        """This filter's query string with ``changes`` applied (for links and paging)."""
        from urllib.parse import urlencode

        values = {
            "fleet": self.fleet,
            "label": self.label,
            "state": self.state,
            "revision": self.revision,
            "q": self.search,
            "page": self.page if self.page != 1 else None,
        }
        values.update(changes)
        return urlencode({k: v for k, v in values.items() if v not in (None, "")})

    @property
    def active(self) -> bool:
        return any((self.fleet, self.label, self.state, self.revision, self.search))


def _hex(text: str) -> bool:
    return all(c in "0123456789abcdefABCDEF" for c in text)


# -- overview ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cell:
    site: str
    state: str


@dataclass(frozen=True)
class WaveRow:
    fleet: str
    wave: str | None
    total: int
    counts: Mapping[str, int] = field(hash=False)
    cells: tuple[Cell, ...]
    """One per site when the row has at most CELLS_PER_ROW sites, else empty (a bar instead)."""

    @property
    def bar(self) -> list[tuple[str, int, float]]:
        """(state, count, percent) for the proportional bar, states with sites only."""
        return [
            (state, n, 100.0 * n / self.total)
            for state, n in self.counts.items()
            if n and self.total
        ]


@dataclass(frozen=True)
class SiteLine:
    site: str
    state: str
    fleets: str
    labels: str
    runs: str | None
    pending: str | None
    reason: str | None
    age: str


@dataclass(frozen=True)
class Overview:
    filters: Filters
    totals: Mapping[str, int] = field(hash=False)
    total: int
    rows: tuple[WaveRow, ...]
    sites: tuple[SiteLine, ...]
    """This page of the filtered site list."""
    matched: int
    pages: int
    fleets: tuple[str, ...]
    labels: tuple[str, ...]
    """Every ``key=value`` label of country and region seen, for the filter's choices."""
    revisions: tuple[tuple[str, int], ...]
    """The revisions sites run, most common first (commit id, count)."""
    alerts: tuple[Alert, ...]
    repository: str | None
    problem: str | None


FILTER_LABELS = ("country", "region")


def overview(
    records: Mapping[str, SiteRecord],
    view: FleetView | None,
    now: datetime,
    filters: Filters,
    *,
    firing: Sequence[Alert] = (),
    problem: str | None = None,
) -> Overview:
    """The overview: fleet × wave rows of the filtered sites, and one page of the site list."""
    names = sorted(set(view.sites if view else ()) | set(records))
    label_choices: set[str] = set()
    revisions: dict[str, int] = {}
    rows: dict[tuple[str, str], list[Cell]] = {}
    totals = dict.fromkeys(DASHBOARD_STATES, 0)
    listed: list[tuple[str, str, SiteInfo | None, SiteRecord | None]] = []
    for site in names:
        info = view.sites.get(site) if view else None
        record = records.get(site)
        labels = info.labels if info else {}
        for key in FILTER_LABELS:
            if key in labels:
                label_choices.add(f"{key}={labels[key]}")
        if record is not None and record.applied:
            revisions[record.applied] = revisions.get(record.applied, 0) + 1
        if filters.fleet is not None and (info is None or filters.fleet not in info.waves):
            continue
        if filters.label is not None:
            key, _, value = filters.label.partition("=")
            if labels.get(key) != value:
                continue
        if filters.revision is not None and not (
            record is not None and (record.applied or "").startswith(filters.revision)
        ):
            continue
        state = dashboard_state(record, info, now)
        if filters.state is not None and state != filters.state:
            continue
        if filters.search is not None and filters.search not in site:
            continue
        totals[state] += 1
        listed.append((site, state, info, record))
        memberships = list(info.waves.items()) if info and info.waves else [("", None)]
        for fleet, wave in memberships:
            if filters.fleet is not None and fleet != filters.fleet:
                continue
            rows.setdefault((fleet, wave or ""), []).append(Cell(site, state))

    wave_rows = []
    for row in sorted(rows, key=rollout_order(view)):
        cells = rows[row]
        wave_rows.append(
            WaveRow(
                fleet=row[0] or "(no fleet)",
                wave=row[1] or None,
                total=len(cells),
                counts=count_states((cell.state for cell in cells), DASHBOARD_STATES),
                cells=tuple(cells) if len(cells) <= CELLS_PER_ROW else (),
            )
        )
    pages = max(1, -(-len(listed) // PAGE_SIZE))
    page = min(filters.page, pages)
    shown = listed[(page - 1) * PAGE_SIZE : page * PAGE_SIZE]
    return Overview(
        filters=filters if page == filters.page else _replace_page(filters, page),
        totals=totals,
        total=len(listed),
        rows=tuple(wave_rows),
        sites=tuple(_line(site, state, info, record, now) for site, state, info, record in shown),
        matched=len(listed),
        pages=pages,
        fleets=tuple(sorted(view.waves)) if view else (),
        labels=tuple(sorted(label_choices)),
        revisions=tuple(sorted(revisions.items(), key=lambda kv: (-kv[1], kv[0]))[:20]),
        alerts=tuple(firing),
        repository=view.revision if view else None,
        problem=problem,
    )


def _replace_page(filters: Filters, page: int) -> Filters:
    from dataclasses import replace

    return replace(filters, page=page)


def _line(
    site: str, state: str, info: SiteInfo | None, record: SiteRecord | None, now: datetime
) -> SiteLine:
    labels = info.labels if info else {}
    return SiteLine(
        site=site,
        state=state,
        fleets=", ".join(f"{f}/{w}" if w else f for f, w in (info.waves.items() if info else ())),
        labels=" ".join(f"{k}={labels[k]}" for k in FILTER_LABELS if k in labels),
        runs=record.applied[:12] if record and record.applied else None,
        pending=record.pending[:12] if record and record.pending else None,
        reason=record.pending_reason if record else None,
        age=age_text((now - record.time).total_seconds()) if record else "never",
    )


# -- alerts --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Alert:
    key: str
    site: str
    text: str
    """The notification's own line (`notify.headline`)."""
    since: datetime | None


def alerts(
    records: Mapping[str, SiteRecord],
    view: FleetView | None,
    now: datetime,
    known: Mapping[str, tuple[datetime, str]],
) -> list[Alert]:
    """Every alert firing now, worded as its webhook message; since when if notified."""
    found = []
    for key, detail in firing_alerts(records, view, now).items():
        site = key.split("/")[1]
        since = known[key][0] if key in known else None
        found.append(Alert(key, site, headline("firing", key, detail), since))
    return found


# -- a change ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Predicted:
    """`outpost schedule`'s answer for one change, as the dashboard needs it."""

    start: datetime
    sites: Mapping[str, datetime | None] = field(hash=False)
    """site → the first instant its node may apply the change (None: blocked)."""
    blockers: Mapping[str, str] = field(hash=False)
    problem: str | None = None


@dataclass(frozen=True)
class LateSite:
    site: str
    fleet: str | None
    wave: str | None
    state: str
    predicted: datetime
    late_by: str
    why: str | None
    until: str | None


@dataclass(frozen=True)
class WaveProgress:
    fleet: str | None
    wave: str | None
    total: int
    counts: Mapping[str, int] = field(hash=False)
    predicted_done: int
    """Sites of this wave the schedule says may have it by now."""


@dataclass(frozen=True)
class ChangePage:
    commit: str
    commit_url: str | None
    totals: Mapping[str, int] = field(hash=False)
    total: int
    waves: tuple[WaveProgress, ...]
    actual: tuple[datetime, ...]
    """When each site that applied the change did (sorted): its report's ``applied.at``. A
    site that has since moved on to a later commit shows that commit's time (the store keeps
    the newest report's fields; older ones are in the bounded history)."""
    predicted: tuple[datetime, ...]
    """The first allowed instant of each scheduled site (sorted), blocked ones left out."""
    blocked: int
    scheduled: int
    """Sites the schedule covers: the change's affected sites."""
    late: tuple[LateSite, ...]
    late_total: int
    prediction: Predicted | None


LATE_SHOWN = 200


def change_page(
    commit: str,
    view: FleetView | None,
    records: Mapping[str, SiteRecord],
    *,
    now: datetime,
    descends: Descends,
    prediction: Predicted | None,
    commit_url: str | None,
) -> ChangePage:
    """A change's rollout by wave, its actual and predicted curves, and who is late and why."""
    rollout = change_rollout(commit, view, records, now=now, descends=descends)
    scheduled = prediction.sites if prediction else {}
    counted: set[str] = set()
    actual: list[datetime] = []
    late: list[LateSite] = []
    waves = []
    for group in rollout["waves"]:
        predicted_done = 0
        for entry in group["sites"]:
            site = entry["site"]
            first = scheduled.get(site)
            if first is not None and first <= now:
                predicted_done += 1
            if site in counted:
                continue
            counted.add(site)
            record = records.get(site)
            if entry["state"] == "applied":
                if not scheduled or site in scheduled:
                    at = parse_stamp(record.applied_at) if record else None
                    if at is not None:
                        actual.append(at)
            elif first is not None and now - first > LATE_GRACE:
                late.append(
                    LateSite(
                        site=site,
                        fleet=group["fleet"],
                        wave=group["wave"],
                        state=entry["state"],
                        predicted=first,
                        late_by=age_text((now - first).total_seconds()),
                        why=entry["why"],
                        until=entry["until"],
                    )
                )
        waves.append(
            WaveProgress(
                fleet=group["fleet"],
                wave=group["wave"],
                total=len(group["sites"]),
                counts=group["counts"],
                predicted_done=predicted_done,
            )
        )
    late.sort(key=lambda s: (s.predicted, s.site))
    predicted = sorted(t for t in scheduled.values() if t is not None)
    return ChangePage(
        commit=commit,
        commit_url=commit_url.replace("{commit}", commit) if commit_url else None,
        totals=rollout["totals"],
        total=sum(rollout["totals"].values()),
        waves=tuple(waves),
        actual=tuple(sorted(actual)),
        predicted=tuple(predicted),
        blocked=sum(1 for t in scheduled.values() if t is None),
        scheduled=len(scheduled),
        late=tuple(late[:LATE_SHOWN]),
        late_total=len(late),
        prediction=prediction,
    )


# -- a site --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tick:
    time: datetime
    outcome: str
    duration: str | None
    drift: int | None
    corrected: int | None
    health: str
    warnings: tuple[str, ...]
    error: str | None


@dataclass(frozen=True)
class SitePage:
    site: str
    state: str
    stale: bool
    info: SiteInfo | None
    record: SiteRecord | None
    age: str
    ticks: tuple[Tick, ...]
    alerts: tuple[Alert, ...]
    node_seen: Mapping[str, str] = field(hash=False)
    """node name → age of its last report among the ticks shown."""


def site_page(
    site: str,
    record: SiteRecord | None,
    info: SiteInfo | None,
    history: Iterable[HistoryRecord],
    now: datetime,
    firing: Sequence[Alert],
) -> SitePage:
    ticks = [_tick(h) for h in history]
    seen: dict[str, str] = {}
    for h in history:
        seen.setdefault(h.record.node, age_text((now - h.record.time).total_seconds()))
    return SitePage(
        site=site,
        state=dashboard_state(record, info, now),
        stale=record is not None and source_stale(record, now),
        info=info,
        record=record,
        age=age_text((now - record.time).total_seconds()) if record else "never",
        ticks=tuple(ticks),
        alerts=tuple(a for a in firing if a.site == site),
        node_seen=seen,
    )


def _tick(history: HistoryRecord) -> Tick:
    record = history.record
    try:
        body = json.loads(history.payload)
    except ValueError:
        body = {}
    body = body if isinstance(body, dict) else {}
    started = parse_stamp(body.get("started")) if isinstance(body.get("started"), str) else None
    drift: dict[str, Any] = body["drift"] if isinstance(body.get("drift"), dict) else {}
    return Tick(
        time=record.time,
        outcome=record.outcome,
        duration=(
            f"{(record.time - started).total_seconds():.1f}s"
            if started is not None and started <= record.time
            else None
        ),
        drift=_int(drift.get("objects")),
        corrected=_int(drift.get("corrected")),
        health=record.health,
        warnings=record.warnings,
        error=record.last_error,
    )


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
