"""The gate: may this site start applying this change now, and if not, when?

Everything here is a pure function of (site calendar, fleet rollout, change,
instant). The node's agent passes its clock reading as ``now``; CI passes the
time a pull request would merge as ``after``. Same inputs, same answer —
which is what lets ``outpost schedule`` promise a reviewer when each site will
take a change.

The allowed set is a union of half-open intervals in absolute time::

    allowed(t) = t ≥ wave_open  and  (emergency  or  (not frozen(t) and in_window(t)))

- ``wave_open`` comes from :func:`wave_slot` (see :class:`FleetRollout`);
  a paused fleet or a site no wave selects never opens.
- ``frozen`` uses each freeze's ``[first instant of from, first instant of
  to + 1 day)`` in the site's zone, so a freeze that ends on 2027-01-05 lifts
  at local midnight starting 2027-01-06 — including across the year end.
- ``in_window`` is the union of weekly-window occurrences and maintenance
  windows, each ``[start, start + duration)``; no windows declared = always.

:func:`decide` evaluates that predicate directly at ``now``. :func:`next_allowed`
walks forward from ``after`` jumping from boundary to boundary (wave open →
freeze end → next window start), which is exact because the predicate can
only become true at one of those boundaries; it takes at most
``2 × freezes + 4`` steps. The tests step a fake clock minute by minute and
check that the first ``Apply`` is exactly the instant :func:`next_allowed`
predicted.

Drift correction (re-applying the revision already applied) is not a change
and must not be gated; that is the agent's decision, not this module's.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from reconciler.core.schedule._model import (
    Change,
    FleetRollout,
    Freeze,
    SiteCalendar,
    SpecDocument,
    WeeklyWindow,
)
from reconciler.core.schedule._promotion import PromotionState
from reconciler.core.schedule._zones import (
    DAY_TITLES,
    day_start,
    format_local,
    format_utc,
    require_aware,
    resolve,
    wall,
)

_ONE_DAY = timedelta(days=1)


@dataclass(frozen=True)
class Apply:
    """Start applying now. ``reason`` says which window (or emergency) allows it."""

    reason: str


@dataclass(frozen=True)
class Wait:
    """Do not apply yet.

    ``until`` is the first instant at which :func:`decide` will say Apply
    (given the same inputs), so the agent may sleep until then; None means
    blocked indefinitely (paused fleet, no wave selects the site, or no
    window left) — only a new commit can change that.
    """

    until: datetime | None
    reason: str


Decision = Apply | Wait


@dataclass(frozen=True)
class WaveSlot:
    """Where a site stands in its fleet's rollout of one change."""

    fleet: str | None
    index: int | None
    """Position among the fleet's waves; None when the fleet declares no waves."""
    name: str | None
    opens: datetime | None
    """When the site's wave opens; None when it never will (``blocked`` says why)."""
    blocked: str | None = None
    blocked_kind: str | None = None
    """Why ``opens`` is None: ``"paused"``, ``"no-wave"``, ``"halted"``, ``"awaits-promotion"``."""
    earliest: datetime | None = None
    """Awaiting promotion: the earliest the site's wave could open, promoted as soon as allowed."""
    awaits: str | None = None
    """Awaiting promotion: the gated wave whose promotion is missing."""


def wave_slot(site: SiteCalendar, rollout: FleetRollout | None, change: Change) -> WaveSlot:
    """The site's wave in ``rollout`` and when it opens for ``change``.

    The site belongs to the first wave that selects it. Wave ``i`` opens at
    ``change.changed_at`` plus the cumulative soak of waves ``0..i``. A *gated* wave
    (``gate:``) opens at the later of that and the time a signed Promotion opened it
    for this change (``rollout.promoted``); without one it has not opened, and with a
    signed Halt it never will for this change. An emergency change (root-signed
    ``Outpost-Emergency``) needs no promotion and passes a halt: the soaks still hold. A paused
    fleet keeps open only the waves that opened strictly before ``paused_at``:
    a commit that both changes the fleet and pauses it rolls nothing out.
    """
    if rollout is None:
        return WaveSlot(None, None, None, change.changed_at)
    fleet = rollout.fleet
    index: int | None = None
    if rollout.waves:
        labels = site.label_map
        for i, wave in enumerate(rollout.waves):
            if wave.selects(fleet, site.site_id, labels):
                index = i
                break
        else:
            return WaveSlot(
                fleet,
                None,
                None,
                None,
                f"no wave of fleet {fleet!r} selects site {site.site_id!r}; "
                "add a last wave without sites/selector/percent to catch every remaining site",
                "no-wave",
            )
    opens = change.changed_at
    for i in range(index + 1 if index is not None else 0):
        wave = rollout.waves[i]
        opens += wave.effective_soak
        if wave.gate is None or change.emergency:
            continue
        promoted = rollout.promoted_at(wave.name)
        if promoted is not None:
            opens = max(opens, promoted)
            continue
        if rollout.halted is not None:
            return WaveSlot(
                fleet,
                index,
                rollout.waves[index].name if index is not None else None,
                None,
                f"fleet {fleet!r} is halted for this change: {rollout.halted}; "
                "a new commit (a fix or a revert) starts a new rollout",
                "halted",
            )
        # Wave i awaits a signed promotion; the site's own wave opens no earlier than
        # the later waves' soaks after it.
        later = rollout.waves[i + 1 : (index or 0) + 1]
        earliest = opens + sum((w.effective_soak for w in later), timedelta(0))
        return WaveSlot(
            fleet,
            index,
            rollout.waves[index].name if index is not None else None,
            None,
            f"awaits promotion of wave {wave.name!r} of fleet {fleet!r} "
            f"(gate: {wave.gate.describe()}); earliest {format_utc(opens)}",
            "awaits-promotion",
            earliest,
            wave.name,
        )
    name = rollout.waves[index].name if index is not None else None
    if rollout.paused and (rollout.paused_at is None or opens >= rollout.paused_at):
        since = f" since {format_utc(rollout.paused_at)}" if rollout.paused_at else ""
        what = f"wave {name!r}" if name else "the rollout"
        return WaveSlot(
            fleet,
            index,
            name,
            None,
            f"fleet {fleet!r} is paused{since}; {what} had not opened before the pause "
            f"(it would open {format_utc(opens)}); "
            "a signed commit setting paused: false resumes it",
            "paused",
        )
    return WaveSlot(fleet, index, name, opens)


def governing_rollout(
    site: SiteCalendar, rollouts: Iterable[FleetRollout], change: Change
) -> FleetRollout | None:
    """Of several fleets whose part of the site's slice a change touches, the one that gates it.

    Each fleet's wave gate is ``[open, ∞)`` (or empty), so their intersection
    is the latest-opening one (or empty if any is blocked): passing that single
    rollout to :func:`decide` is exact. None when ``rollouts`` is empty.
    """
    chosen: FleetRollout | None = None
    latest: datetime | None = None
    for rollout in rollouts:
        slot = wave_slot(site, rollout, change)
        if slot.opens is None:
            return rollout
        if latest is None or slot.opens > latest:
            chosen, latest = rollout, slot.opens
    return chosen


def gate_inputs(
    site: SpecDocument,
    fleets: Sequence[SpecDocument],
    change: Change,
    *,
    changed_fleets: Collection[str] | None = None,
    paused_at: Mapping[str, datetime] | None = None,
    rollouts: dict[tuple[str, datetime | None], FleetRollout] | None = None,
    promotions: Mapping[str, PromotionState] | None = None,
) -> tuple[SiteCalendar, FleetRollout | None]:
    """From loaded documents to the two inputs :func:`decide` needs — one path for agent and CI.

    ``fleets`` are the fleet documents the site belongs to. Every one of them
    contributes its freezes (a freeze on any of the site's fleets freezes the
    site). Of the fleets in ``changed_fleets`` — those whose part of the site's
    slice the change touches — the latest-opening one gates the change
    (:func:`governing_rollout`); ``None`` means "all of the site's fleets",
    the conservative choice when the caller cannot tell (e.g. no diff yet);
    an empty collection means a site-only change that no fleet's waves gate.
    ``paused_at`` maps fleet name → committer time of the commit that paused
    it; a paused fleet missing from it halts every wave (fail closed).

    ``rollouts`` is a cache the caller owns when it schedules many sites of one
    revision (``outpost schedule`` over 10,000 sites): each fleet is parsed once
    per pause time instead of once per site. Only documents of one revision may
    share a cache, since it is keyed by fleet name.

    ``promotions`` maps fleet name → what its signed Promotion and Halt records say of
    this change (:func:`~reconciler.core.schedule.promotion_state`); a gated fleet absent
    from it has no promotion: its gated waves await one.
    """
    calendar = SiteCalendar.from_document(site)
    pauses = paused_at or {}
    parsed: list[FleetRollout] = []
    for fleet in fleets:
        key = (fleet.name, pauses.get(fleet.name))
        rollout = rollouts.get(key) if rollouts is not None else None
        if rollout is None:
            rollout = FleetRollout.from_document(fleet, paused_at=key[1])
            if rollouts is not None:
                rollouts[key] = rollout
        state = (promotions or {}).get(fleet.name)
        if state is not None and rollout.gated:
            rollout = replace(rollout, promoted=state.promoted, halted=state.halted)
        parsed.append(rollout)
    calendar = calendar.with_freezes(f for r in parsed for f in r.freezes)
    gating = [r for r in parsed if changed_fleets is None or r.fleet in changed_fleets]
    return calendar, governing_rollout(calendar, gating, change)


# --------------------------------------------------------------------------- intervals


@dataclass(frozen=True)
class _Span:
    start: datetime
    end: datetime
    label: str


def _freeze_spans(site: SiteCalendar) -> list[tuple[datetime, datetime, Freeze]]:
    zone = site.timezone
    return [(day_start(zone, f.start), day_start(zone, f.end + _ONE_DAY), f) for f in site.freezes]


def _frozen_at(
    spans: list[tuple[datetime, datetime, Freeze]], t: datetime
) -> tuple[datetime, Freeze] | None:
    """The freeze holding ``t`` that lasts longest, with its end instant."""
    found: tuple[datetime, Freeze] | None = None
    for start, end, freeze in spans:
        if start <= t < end and (found is None or end > found[0]):
            found = (end, freeze)
    return found


def _weekly_occurrences(
    site: SiteCalendar, window: WeeklyWindow, first: date, last: date
) -> Iterable[datetime]:
    day = first
    while day <= last:
        if day.weekday() in window.days:
            yield resolve(site.timezone, day, window.start)
        day += _ONE_DAY


def _window_at(site: SiteCalendar, t: datetime) -> _Span | None:
    """The update or maintenance window holding ``t``, if any."""
    today = wall(t, site.timezone).date()
    for window in site.windows:
        # Occurrences that started up to duration + 2 days ago may still run
        # (the 2 days absorb DST and midnight-crossing); tomorrow's is checked
        # for zones whose clocks fall back across midnight.
        back = timedelta(days=window.duration.days + 2)
        for start in _weekly_occurrences(site, window, today - back, today + _ONE_DAY):
            if start <= t < start + window.duration:
                return _Span(start, start + window.duration, _weekly_label(site, window, start))
    for m in site.maintenance:
        if m.start <= t < m.end:
            return _Span(m.start, m.end, f"maintenance window {m.name!r}")
    return None


def _next_window_start(site: SiteCalendar, t: datetime) -> _Span | None:
    """The earliest window (weekly or maintenance) that starts at or after ``t``."""
    best: _Span | None = None
    today = wall(t, site.timezone).date()
    for window in site.windows:
        for start in _weekly_occurrences(site, window, today - _ONE_DAY, today + 8 * _ONE_DAY):
            if start >= t and (best is None or start < best.start):
                best = _Span(start, start + window.duration, _weekly_label(site, window, start))
    for m in site.maintenance:
        if m.start >= t and (best is None or m.start < best.start):
            best = _Span(m.start, m.end, f"maintenance window {m.name!r}")
    return best


def _weekly_label(site: SiteCalendar, window: WeeklyWindow, start: datetime) -> str:
    local_start = start.astimezone(site.timezone)
    local_end = (start + window.duration).astimezone(site.timezone)
    return (
        f"update window {DAY_TITLES[local_start.weekday()]} {local_start:%H:%M}–"
        f"{local_end:%H:%M} {site.timezone.key}"
    )


@dataclass(frozen=True)
class _Search:
    instant: datetime | None
    held: tuple[Freeze, ...]
    why_never: str | None


def _search(site: SiteCalendar, slot: WaveSlot, change: Change, after: datetime) -> _Search:
    if slot.opens is None:
        return _Search(None, (), slot.blocked)
    t = max(after, slot.opens)
    if change.emergency:
        return _Search(t, (), None)
    spans = _freeze_spans(site)
    held: list[Freeze] = []
    for _ in range(2 * len(spans) + 4):
        frozen = _frozen_at(spans, t)
        if frozen is not None:
            held.append(frozen[1])
            t = frozen[0]
            continue
        if site.restricted and _window_at(site, t) is None:
            nxt = _next_window_start(site, t)
            if nxt is None:
                return _Search(
                    None,
                    tuple(held),
                    f"no update window after {format_local(t, site.timezone)}: the site "
                    "declares only maintenance windows and all of them have passed",
                )
            t = nxt.start
            continue
        return _Search(t, tuple(held), None)
    raise AssertionError("schedule search did not converge")  # pragma: no cover


# --------------------------------------------------------------------------- public


def next_allowed(
    site: SiteCalendar, rollout: FleetRollout | None, change: Change, after: datetime
) -> datetime | None:
    """The first instant ``t ≥ after`` at which :func:`decide` says Apply; None if never.

    Exact (no rounding): when every boundary (change time, soaks, window starts,
    maintenance times) is a whole minute, so is the answer, and stepping a
    clock minute by minute from ``after`` first sees Apply at exactly this
    instant.
    """
    after = require_aware(after, "after")
    site = _with_fleet_freezes(site, rollout)
    return _search(site, wave_slot(site, rollout, change), change, after).instant


def decide(
    site: SiteCalendar, rollout: FleetRollout | None, change: Change, now: datetime
) -> Decision:
    """Apply or Wait(until, reason) for ``change`` on ``site`` at ``now``.

    Order of checks, each citing the rule it enforces:

    1. the site's wave must be open (waves and ``paused``, from signed fleet data);
    2. an emergency change (root-signed ``Outpost-Emergency`` trailer, verified
       by the trust module) passes 3 and 4;
    3. no freeze of the site or its fleets may hold ``now`` (dates inclusive,
       site-local);
    4. ``now`` must fall in an update or maintenance window (site-local, DST-safe).

    ``Wait.until`` is :func:`next_allowed` from ``now``; the reason names the
    first rule that blocks and, when later rules will block too, the instant
    the site may actually apply.
    """
    now = require_aware(now, "now")
    site = _with_fleet_freezes(site, rollout)
    slot = wave_slot(site, rollout, change)
    if slot.opens is None:
        return Wait(None, slot.blocked or "blocked")
    wave_text = (
        f"wave {slot.name!r} of fleet {slot.fleet!r}"
        if slot.name is not None
        else (f"fleet {slot.fleet!r}" if slot.fleet is not None else "")
    )
    if now < slot.opens:
        until = _search(site, slot, change, now)
        reason = f"waiting for wave {slot.name!r} (opens {format_utc(slot.opens)})"
        if slot.name is None:
            reason = f"waiting for the change time {format_utc(slot.opens)}"
        return Wait(until.instant, reason + _then(site, until, slot.opens))
    opened = f"{wave_text} open since {format_utc(slot.opens)}" if wave_text else ""
    if change.emergency:
        why = f" ({change.emergency_reason})" if change.emergency_reason else ""
        return Apply(_join(f"emergency change{why} passes windows and freezes", opened))
    frozen = _frozen_at(_freeze_spans(site), now)
    if frozen is not None:
        freeze = frozen[1]
        until = _search(site, slot, change, now)
        reason = f"frozen by {freeze.name!r} until {freeze.end.isoformat()}"
        reason += f" ({freeze.reason})" if freeze.reason else ""
        return Wait(until.instant, reason + _then(site, until, frozen[0]))
    if not site.restricted:
        return Apply(_join("no update windows declared (any time)", opened))
    window = _window_at(site, now)
    if window is None:
        until = _search(site, slot, change, now)
        nxt = _next_window_start(site, now)
        if nxt is None:
            return Wait(None, f"outside update window; {until.why_never}")
        reason = f"outside update window; next window {format_local(nxt.start, site.timezone)}"
        return Wait(until.instant, reason + _then(site, until, nxt.start))
    return Apply(_join(f"in {window.label}", opened))


def _with_fleet_freezes(site: SiteCalendar, rollout: FleetRollout | None) -> SiteCalendar:
    """The rolling-out fleet's freezes always apply, even if the caller did not merge them."""
    if rollout is None or not rollout.freezes:
        return site
    return site.with_freezes(rollout.freezes)


def _join(first: str, second: str) -> str:
    return f"{first}; {second}" if second else first


def _then(site: SiteCalendar, found: _Search, expected: datetime) -> str:
    """The tail of a Wait reason when the real answer is later than the first blocker's end."""
    if found.instant is None:
        return f"; then blocked: {found.why_never}" if found.why_never else ""
    if found.instant == expected:
        return ""
    tail = f"; may apply from {format_local(found.instant, site.timezone)}"
    if found.held:
        last = found.held[-1]
        tail += f" after freeze {last.name!r} ends"
    return tail


@dataclass(frozen=True)
class Prediction:
    """One row of ``outpost schedule``: when one site will take one change, and what holds it.

    ``first_allowed`` is :func:`next_allowed` from the schedule's start. When
    a freeze delayed it past the first window after the wave opened,
    ``held_by``/``held_until`` name the (last) freeze and its inclusive end
    date; ``blocker`` is the operator-readable sentence for either that or
    an indefinite block (``first_allowed`` None).
    """

    site: str
    timezone: str
    fleet: str | None
    wave: str | None
    wave_index: int | None
    wave_opens: datetime | None
    first_allowed: datetime | None
    blocker: str | None = None
    held_by: str | None = None
    held_until: date | None = None
    site_type: str = "site"
    blocked_kind: str | None = None
    """Why ``first_allowed`` is None: ``"paused"``, ``"no-wave"``, ``"no-window"``,
    ``"halted"`` or ``"awaits-promotion"``."""
    awaits: str | None = None
    """Awaiting promotion: the gated wave a signed Promotion must open first."""
    earliest_open: datetime | None = None
    """Awaiting promotion: the earliest the site's wave could open (promoted on time)."""
    earliest_allowed: datetime | None = None
    """Awaiting promotion: the first instant the site may apply if promoted on time."""

    @property
    def local_first_allowed(self) -> datetime | None:
        if self.first_allowed is None:
            return None
        return self.first_allowed.astimezone(ZoneInfo(self.timezone))


def predict(
    site: SiteCalendar,
    rollout: FleetRollout | None,
    change: Change,
    after: datetime,
    *,
    site_type: str = "site",
) -> Prediction:
    """The schedule row for one site: wave, wave opening, first allowed instant, blocker."""
    after = require_aware(after, "after")
    site = _with_fleet_freezes(site, rollout)
    slot = wave_slot(site, rollout, change)
    found = _search(site, slot, change, after)
    earliest_allowed: datetime | None = None
    if slot.blocked_kind == "awaits-promotion" and slot.earliest is not None:
        hoped = WaveSlot(slot.fleet, slot.index, slot.name, slot.earliest)
        earliest_allowed = _search(site, hoped, change, after).instant
    blocker: str | None = None
    held_by: str | None = None
    held_until: date | None = None
    blocked_kind: str | None = None
    if found.instant is None:
        blocker = found.why_never
        blocked_kind = slot.blocked_kind or "no-window"
    if found.held:
        last = found.held[-1]
        held_by, held_until = last.name, last.end
        if blocker is None:
            blocker = f"frozen by {last.name!r} until {last.end.isoformat()}"
            blocker += f" ({last.reason})" if last.reason else ""
    return Prediction(
        site=site.site_id,
        timezone=site.timezone.key,
        fleet=slot.fleet,
        wave=slot.name,
        wave_index=slot.index,
        wave_opens=slot.opens,
        first_allowed=found.instant.astimezone(UTC) if found.instant else None,
        blocker=blocker,
        held_by=held_by,
        held_until=held_until,
        site_type=site_type,
        blocked_kind=blocked_kind,
        awaits=slot.awaits,
        earliest_open=slot.earliest,
        earliest_allowed=earliest_allowed.astimezone(UTC) if earliest_allowed else None,
    )
