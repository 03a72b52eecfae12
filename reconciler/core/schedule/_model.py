"""The schedule's documents: typed, frozen, validated views of Site and Fleet specs.

Every ``from_spec`` takes the plain ``spec`` dict of a document (as the loader
produces it: timestamps and dates stay strings, but ``datetime``/``date``
objects are accepted too) and raises :class:`~reconciler.core.errors.ValidationError`
naming the key path (``spec.updateWindows[0].start``), what was expected and
what was found. Pass ``mark=document.mark`` to attach ``file:line``.

The schema (schemas/) checks shapes in CI; these constructors check again on
the node, because the node must fail closed on a commit whose schedule it
cannot read rather than guess "no window means any time" from a typo.
Unknown keys inside windows, freezes and waves are refused for the same
reason: ``precent: 10`` must not silently become "every remaining site".
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Protocol, TypeVar
from zoneinfo import ZoneInfo

from reconciler.core.errors import Mark, ValidationError
from reconciler.core.schedule._zones import (
    DAYS,
    format_duration,
    load_zone,
    parse_duration,
    parse_hhmm,
    require_aware,
)

NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_DATE_RE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")
_RFC3339_RE = re.compile(
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?"
    r"([Zz]|[+-][0-9]{2}:[0-9]{2})$"
)
MAX_WINDOW = timedelta(days=7)
# The longest soak or other duration: a year. Longer ones mean "never" and are written
# as a pause; the gate adds durations to dates, and past year 9999 that overflows.
MAX_DURATION = timedelta(days=366)
# Dates and instants the gate computes with: a freeze ending 9999-12-31 would make
# "the day after the freeze" overflow. Years 1970 to 2999 leave room for every sum.
YEARS = (1970, 2999)
MAX_ENTRIES = 1000
"""Cap on windows, freezes, waves and wave site lists per document (bounded inputs)."""
PERCENT_SCALE = 100
"""Percent waves work in basis points: ``percent: 0.5`` is 50 of 10,000 buckets."""

Key = str | int
MarkFn = Callable[..., Mark]
_D = TypeVar("_D", date, datetime)
_DURATION_SHAPE = re.compile(r"^(?:[0-9]+d)?(?:[0-9]+h)?(?:[0-9]+m)?$")


class _Spec:
    """Walks one spec dict, producing errors that name the key path and file:line."""

    def __init__(self, mark: MarkFn | None, root: tuple[Key, ...] = ("spec",)) -> None:
        self._mark = mark
        self.root = root

    def at(self, *keys: Key) -> _Spec:
        return _Spec(self._mark, (*self.root, *keys))

    def path(self, *keys: Key) -> str:
        text = ""
        for key in (*self.root, *keys):
            text += f"[{key}]" if isinstance(key, int) else (f".{key}" if text else key)
        return text or "(top level)"

    def error(self, message: str, *keys: Key) -> ValidationError:
        mark = self._mark(*self.root, *keys) if self._mark is not None else None
        return ValidationError(f"{self.path(*keys)}: {message}", mark=mark)

    def mapping(self, value: Any, *keys: Key) -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            raise self.error(f"expected a mapping, found {_show(value)}", *keys)
        return value

    def only(self, value: Mapping[str, Any], allowed: Iterable[str], *keys: Key) -> None:
        extra = sorted(set(value) - set(allowed))
        if extra:
            raise self.error(
                f"unknown key {extra[0]!r}; expected one of {', '.join(sorted(allowed))}", *keys
            )

    def items(self, value: Any, *keys: Key) -> Sequence[Any]:
        if value is None:
            return ()
        if not isinstance(value, list | tuple):
            raise self.error(f"expected a list, found {_show(value)}", *keys)
        if len(value) > MAX_ENTRIES:
            raise self.error(f"{len(value):,} entries; the limit is {MAX_ENTRIES:,}", *keys)
        return value

    def string(self, value: Any, *keys: Key) -> str:
        if not isinstance(value, str):
            raise self.error(f"expected a string, found {_show(value)}", *keys)
        return value

    def name(self, value: Any, *keys: Key) -> str:
        text = self.string(value, *keys)
        if not NAME_RE.match(text):
            raise self.error(
                f"expected a DNS label (lowercase letters, digits, '-'), found {text!r}", *keys
            )
        return text

    def duration(self, value: Any, *keys: Key) -> timedelta:
        text = self.string(value, *keys)
        parsed = parse_duration(text)
        if parsed is None and not _DURATION_SHAPE.match(text):
            raise self.error(
                f"expected a duration like 30m, 6h, 1h30m or 2d, found {text!r}", *keys
            )
        if parsed is None or parsed > MAX_DURATION:
            raise self.error(
                f"duration {text!r} is too long: at most {MAX_DURATION.days}d "
                "(to stop a rollout for longer, pause the fleet)",
                *keys,
            )
        return parsed

    def day(self, value: Any, *keys: Key) -> date:
        if isinstance(value, date) and not isinstance(value, datetime):
            return self._year(value, keys)
        text = self.string(value, *keys) if not isinstance(value, date) else None
        if text is not None and _DATE_RE.match(text):
            try:
                return self._year(date.fromisoformat(text), keys)
            except ValueError:
                pass
        raise self.error(f"expected a date YYYY-MM-DD, found {_show(value)}", *keys)

    def _year(self, value: _D, keys: tuple[Key, ...]) -> _D:
        if not YEARS[0] <= value.year <= YEARS[1]:
            raise self.error(
                f"{value.isoformat()} is outside the years {YEARS[0]} to {YEARS[1]} the "
                "schedule computes with (for no end, pause the fleet or remove the entry later)",
                *keys,
            )
        return value

    def instant(self, value: Any, *keys: Key) -> datetime:
        if isinstance(value, datetime):
            if value.tzinfo is None:
                raise self.error(
                    f"expected an RFC 3339 time with an explicit offset, found {value.isoformat()} "
                    "(no offset)",
                    *keys,
                )
            return self._year(value.astimezone(UTC), keys)
        text = self.string(value, *keys)
        if _RFC3339_RE.match(text):
            try:
                parsed = datetime.fromisoformat(text.upper().replace(" ", "T"))
                return self._year(parsed.astimezone(UTC), keys)
            except (ValueError, OverflowError):
                pass
        raise self.error(
            "expected an RFC 3339 time with an explicit offset like "
            f"2026-12-24T06:00:00+01:00, found {_show(value)}",
            *keys,
        )


def _show(value: Any) -> str:
    if isinstance(value, str):
        return repr(value)
    if value is None:
        return "nothing (null)"
    return f"{type(value).__name__} {value!r}"


@dataclass(frozen=True)
class WeeklyWindow:
    """A weekly update window in the site's time zone: ``{days, start, duration}``.

    A window belongs to the day it starts: ``{days: [sat], start: "22:00",
    duration: 6h}`` runs Saturday 22:00 to Sunday 04:00. ``start`` follows the
    gap/overlap rule of :mod:`reconciler.core.schedule._zones` and ``duration`` is
    elapsed time. Durations are capped at 7 days, above which a weekly window
    means nothing.
    """

    days: frozenset[int]
    """Weekdays the window starts on, Monday = 0."""
    start: time
    duration: timedelta

    @classmethod
    def from_spec(cls, spec: Any, *, mark: MarkFn | None = None) -> WeeklyWindow:
        return cls._parse(spec, _Spec(mark, ()))

    @classmethod
    def _parse(cls, value: Any, at: _Spec) -> WeeklyWindow:
        body = at.mapping(value)
        at.only(body, ("days", "start", "duration"))
        for key in ("days", "start", "duration"):
            if key not in body:
                raise at.error(f"missing {key!r} (a window needs days, start and duration)")
        days: set[int] = set()
        raw_days = at.items(body["days"], "days")
        if not raw_days:
            raise at.error("expected at least one day (mon … sun)", "days")
        for i, raw in enumerate(raw_days):
            text = at.string(raw, "days", i)
            if text not in DAYS:
                raise at.error(f"expected one of {' '.join(DAYS)}, found {text!r}", "days", i)
            if DAYS.index(text) in days:
                raise at.error(f"{text!r} is listed twice", "days", i)
            days.add(DAYS.index(text))
        start_text = at.string(body["start"], "start")
        start = parse_hhmm(start_text)
        if start is None:
            raise at.error(f"expected HH:MM (24h), found {start_text!r}", "start")
        duration = at.duration(body["duration"], "duration")
        if not timedelta(0) < duration <= MAX_WINDOW:
            raise at.error(
                f"expected a duration above 0m and at most 7d, found {body['duration']!r}",
                "duration",
            )
        return cls(frozenset(days), start, duration)

    def describe(self) -> str:
        days = ",".join(DAYS[d] for d in sorted(self.days))
        return f"{days} {self.start:%H:%M} +{format_duration(self.duration)}"


@dataclass(frozen=True)
class MaintenanceWindow:
    """A one-off window ``[start, end)`` in absolute time (a plant's planned shutdown)."""

    name: str
    start: datetime
    end: datetime
    reason: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "start", require_aware(self.start, "maintenance start"))
        object.__setattr__(self, "end", require_aware(self.end, "maintenance end"))

    @classmethod
    def from_spec(cls, spec: Any, *, mark: MarkFn | None = None) -> MaintenanceWindow:
        return cls._parse(spec, _Spec(mark, ()))

    @classmethod
    def _parse(cls, value: Any, at: _Spec) -> MaintenanceWindow:
        body = at.mapping(value)
        at.only(body, ("name", "start", "end", "reason"))
        for key in ("name", "start", "end"):
            if key not in body:
                raise at.error(f"missing {key!r} (a maintenance window needs name, start, end)")
        name = at.name(body["name"], "name")
        start = at.instant(body["start"], "start")
        end = at.instant(body["end"], "end")
        if end <= start:
            raise at.error(
                f"end {body['end']} is not after start {body['start']}; "
                "a maintenance window must have a positive length",
                "end",
            )
        reason = at.string(body.get("reason", ""), "reason")
        return cls(name, start, end, reason)


@dataclass(frozen=True)
class Freeze:
    """No changes from ``start`` to ``end`` inclusive, as dates in the *site's* time zone.

    ``origin`` says where it was declared (``site de-ber-0042`` or
    ``fleet retail-eu``) so an operator knows which file to edit. A freeze
    covers ``[first instant of start, first instant of end + 1 day)`` in the
    site's zone; only an emergency change (root-signed ``Outpost-Emergency``
    trailer) passes it.
    """

    name: str
    start: date
    end: date
    reason: str = ""
    origin: str = ""

    @classmethod
    def from_spec(cls, spec: Any, *, origin: str = "", mark: MarkFn | None = None) -> Freeze:
        return cls._parse(spec, _Spec(mark, ()), origin)

    @classmethod
    def _parse(cls, value: Any, at: _Spec, origin: str) -> Freeze:
        body = at.mapping(value)
        at.only(body, ("name", "from", "to", "reason"))
        for key in ("name", "from", "to"):
            if key not in body:
                raise at.error(f"missing {key!r} (a freeze needs name, from and to)")
        name = at.name(body["name"], "name")
        start = at.day(body["from"], "from")
        end = at.day(body["to"], "to")
        if end < start:
            raise at.error(f"'to' {end} is before 'from' {start}", "to")
        reason = at.string(body.get("reason", ""), "reason")
        return cls(name, start, end, reason, origin)


_OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")


@dataclass(frozen=True)
class LabelExpression:
    """One Kubernetes-style ``matchExpressions`` entry."""

    key: str
    operator: str
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.operator == "In":
            return labels.get(self.key) in self.values
        if self.operator == "NotIn":
            return labels.get(self.key) not in self.values
        if self.operator == "Exists":
            return self.key in labels
        return self.key not in labels


@dataclass(frozen=True)
class LabelSelector:
    """``{matchLabels, matchExpressions}`` with Kubernetes semantics (all terms must hold)."""

    match_labels: tuple[tuple[str, str], ...] = ()
    match_expressions: tuple[LabelExpression, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(labels.get(k) == v for k, v in self.match_labels) and all(
            e.matches(labels) for e in self.match_expressions
        )

    @classmethod
    def _parse(cls, value: Any, at: _Spec) -> LabelSelector:
        body = at.mapping(value)
        at.only(body, ("matchLabels", "matchExpressions"))
        labels_raw = at.mapping(body.get("matchLabels") or {}, "matchLabels")
        labels = tuple(
            sorted(
                (at.string(k, "matchLabels"), at.string(v, "matchLabels", k))
                for k, v in labels_raw.items()
            )
        )
        expressions: list[LabelExpression] = []
        for i, raw in enumerate(at.items(body.get("matchExpressions"), "matchExpressions")):
            item = at.mapping(raw, "matchExpressions", i)
            at.only(item, ("key", "operator", "values"), "matchExpressions", i)
            key = at.string(item.get("key"), "matchExpressions", i, "key")
            op = at.string(item.get("operator"), "matchExpressions", i, "operator")
            if op not in _OPERATORS:
                raise at.error(
                    f"expected one of {', '.join(_OPERATORS)}, found {op!r}",
                    "matchExpressions",
                    i,
                    "operator",
                )
            values = frozenset(
                at.string(v, "matchExpressions", i, "values", j)
                for j, v in enumerate(at.items(item.get("values"), "matchExpressions", i, "values"))
            )
            if op in ("In", "NotIn") and not values:
                raise at.error(
                    f"operator {op} needs a non-empty 'values' list", "matchExpressions", i
                )
            if op in ("Exists", "DoesNotExist") and values:
                raise at.error(f"operator {op} takes no 'values'", "matchExpressions", i)
            expressions.append(LabelExpression(key, op, values))
        if not labels and not expressions:
            raise at.error("an empty selector selects everything; omit it for a catch-all wave")
        return cls(labels, tuple(expressions))


def hash_bucket(fleet: str, site_id: str) -> int:
    """The site's stable bucket in ``[0, 10000)`` (basis points) for percent waves.

    ``sha256("<fleet>/<site>")``, first 8 bytes big-endian, modulo 10,000. The
    fleet name is part of the key so that two fleets' "10 %" waves do not pick
    the same unlucky stores every time. Stable across runs, machines and
    Python versions (no ``hash()``, no random seed).
    """
    digest = hashlib.sha256(f"{fleet}/{site_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % (100 * PERCENT_SCALE)


DEFAULT_GATE_HEALTHY_BP = 90 * PERCENT_SCALE
"""Retail default: 90 % of the earlier waves' stores run the change and are healthy."""
DEFAULT_GATE_MAX_FAILED = 0
"""Retail default: one store that rolled the change back or refused it halts the rollout."""
DEFAULT_GATE_SOAK = timedelta(hours=24)
"""Retail default: a full trading day since the previous wave opened."""


@dataclass(frozen=True)
class Gate:
    """What the earlier waves must show before a gated wave opens for a change.

    Judged at headquarters by ``outpost fleet promote`` from the sites' signed reports;
    the node sees only the outcome, a signed Promotion or Halt record. ``healthy_bp`` is
    the share (basis points) of the earlier waves' sites that must run the change (or a
    later one that includes it) and be healthy; ``max_failed`` how many of them may have
    rolled it back or refused it before the rollout halts; ``soak`` the least time since
    the previous wave opened (the wave's own ``soak`` counts too: the longer wins).
    """

    healthy_bp: int = DEFAULT_GATE_HEALTHY_BP
    max_failed: int = DEFAULT_GATE_MAX_FAILED
    soak: timedelta = DEFAULT_GATE_SOAK

    @classmethod
    def _parse(cls, value: Any, at: _Spec) -> Gate:
        body = at.mapping(value if value is not None else {})
        at.only(body, ("healthy", "maxFailed", "minSoak"))
        healthy_bp = DEFAULT_GATE_HEALTHY_BP
        if "healthy" in body:
            raw = body["healthy"]
            if isinstance(raw, bool) or not isinstance(raw, int | float) or not 0 < raw <= 100:
                raise at.error(
                    f"expected a percentage above 0 and at most 100, found {_show(raw)}",
                    "healthy",
                )
            healthy_bp = round(raw * PERCENT_SCALE)
        max_failed = DEFAULT_GATE_MAX_FAILED
        if "maxFailed" in body:
            raw = body["maxFailed"]
            if isinstance(raw, bool) or not isinstance(raw, int) or raw < 0:
                raise at.error(f"expected a whole number ≥ 0, found {_show(raw)}", "maxFailed")
            max_failed = raw
        soak = at.duration(body["minSoak"], "minSoak") if "minSoak" in body else DEFAULT_GATE_SOAK
        return cls(healthy_bp, max_failed, soak)

    def describe(self) -> str:
        return (
            f"at least {self.healthy_bp / PERCENT_SCALE:g} % of the earlier waves' sites "
            f"applied and healthy, at most {self.max_failed} rolled back or refused, "
            f"soak {format_duration(self.soak)}"
        )


@dataclass(frozen=True)
class Wave:
    """One rollout wave: who is in it (``sites`` | ``selector`` | ``percent`` | everyone left).

    ``percent`` is *cumulative over the fleet*: the wave selects the sites whose
    :func:`hash_bucket` is below ``percent`` (in basis points). Because a site
    belongs to the first wave that selects it, ``percent: 10`` followed by
    ``percent: 50`` adds the next ~40 % of the fleet, not 50 % of the rest,
    and sites already taken by an earlier explicit or label wave are not
    counted twice (so the 10 % wave is ~10 % of the fleet minus those).
    """

    name: str
    sites: frozenset[str] | None = None
    selector: LabelSelector | None = None
    percent_bp: int | None = None
    soak: timedelta = timedelta(0)
    gate: Gate | None = None
    """None: the wave opens on the clock alone; else also on a signed promotion."""

    @property
    def effective_soak(self) -> timedelta:
        """The wave's soak, or its gate's minimum soak when that is longer."""
        return max(self.soak, self.gate.soak) if self.gate is not None else self.soak

    @property
    def percent(self) -> float | None:
        return None if self.percent_bp is None else self.percent_bp / PERCENT_SCALE

    def selects(self, fleet: str, site_id: str, labels: Mapping[str, str]) -> bool:
        if self.sites is not None:
            return site_id in self.sites
        if self.selector is not None:
            return self.selector.matches(labels)
        if self.percent_bp is not None:
            return hash_bucket(fleet, site_id) < self.percent_bp
        return True

    @classmethod
    def from_spec(cls, spec: Any, *, mark: MarkFn | None = None) -> Wave:
        return cls._parse(spec, _Spec(mark, ()))

    @classmethod
    def _parse(cls, value: Any, at: _Spec) -> Wave:
        body = at.mapping(value)
        at.only(body, ("name", "sites", "selector", "percent", "soak", "gate"))
        if "name" not in body:
            raise at.error("missing 'name'")
        name = at.name(body["name"], "name")
        chosen = [k for k in ("sites", "selector", "percent") if k in body]
        if len(chosen) > 1:
            raise at.error(
                f"wave {name!r} sets both {chosen[0]!r} and {chosen[1]!r}; a wave selects by "
                "one of sites, selector or percent (or none: every remaining site)",
                chosen[1],
            )
        sites: frozenset[str] | None = None
        selector: LabelSelector | None = None
        percent_bp: int | None = None
        if "sites" in body:
            listed = [
                at.name(s, "sites", i) for i, s in enumerate(at.items(body["sites"], "sites"))
            ]
            if not listed:
                raise at.error("expected at least one site id", "sites")
            if len(set(listed)) != len(listed):
                dup = next(s for s in listed if listed.count(s) > 1)
                raise at.error(f"site {dup!r} is listed twice", "sites")
            sites = frozenset(listed)
        if "selector" in body:
            selector = LabelSelector._parse(body["selector"], at.at("selector"))
        if "percent" in body:
            raw = body["percent"]
            if isinstance(raw, bool) or not isinstance(raw, int | float):
                raise at.error(f"expected a number in (0, 100], found {_show(raw)}", "percent")
            scaled = raw * PERCENT_SCALE
            if not 0 < raw <= 100 or abs(scaled - round(scaled)) > 1e-6:
                raise at.error(
                    f"expected a number above 0 and at most 100 with at most two decimals, "
                    f"found {raw!r}",
                    "percent",
                )
            percent_bp = round(scaled)
        soak = at.duration(body["soak"], "soak") if "soak" in body else timedelta(0)
        gate = Gate._parse(body["gate"], at.at("gate")) if "gate" in body else None
        return cls(name, sites, selector, percent_bp, soak, gate)

    def describe(self) -> str:
        if self.sites is not None:
            who = f"{len(self.sites)} listed site(s)"
        elif self.selector is not None:
            who = "sites matching its selector"
        elif self.percent_bp is not None:
            who = f"{self.percent_bp / PERCENT_SCALE:g} % of the fleet by hash"
        else:
            who = "every remaining site"
        gated = f"; gate: {self.gate.describe()}" if self.gate is not None else ""
        return f"wave {self.name!r} ({who}, soak {format_duration(self.effective_soak)}{gated})"


@dataclass(frozen=True)
class FleetRollout:
    """A fleet's rollout rules: ordered ``waves``, ``paused`` and fleet-wide ``freezes``.

    Wave ``i`` opens at ``open(i-1) + soak(i)`` with ``open(-1)`` = the change
    time, so wave 0 opens at the change time (plus its own soak, if one is set).

    ``paused_at`` is the committer time of the signed commit that set
    ``paused: true`` (found by the caller from history). While paused, no wave
    that had not opened strictly before ``paused_at`` opens; waves already open
    stay open. ``paused: true`` with ``paused_at`` unknown (None) halts every
    wave — failing closed.

    No ``waves`` at all means one implicit wave, opening at the change time.
    """

    fleet: str
    waves: tuple[Wave, ...] = ()
    paused: bool = False
    paused_at: datetime | None = None
    freezes: tuple[Freeze, ...] = ()
    promoted: tuple[tuple[str, datetime], ...] = ()
    """Gated waves a signed Promotion opened for the change at hand, with when."""
    halted: str | None = None
    """Why a signed Halt stopped the change at hand (None: not halted)."""
    offsets: tuple[timedelta, ...] = field(default=(), repr=False, compare=False)
    """Cumulative soak of each wave from the change time (derived)."""

    @property
    def gated(self) -> bool:
        return any(w.gate is not None for w in self.waves)

    def promoted_at(self, wave: str) -> datetime | None:
        return next((at for name, at in self.promoted if name == wave), None)

    def __post_init__(self) -> None:
        if self.paused_at is not None:
            object.__setattr__(self, "paused_at", require_aware(self.paused_at, "paused_at"))
        total = timedelta(0)
        offsets: list[timedelta] = []
        for wave in self.waves:
            total += wave.effective_soak
            offsets.append(total)
        object.__setattr__(self, "offsets", tuple(offsets))

    @classmethod
    def from_spec(
        cls,
        spec: Any,
        *,
        fleet: str,
        paused_at: datetime | None = None,
        mark: MarkFn | None = None,
    ) -> FleetRollout:
        at = _Spec(mark)
        body = at.mapping(spec)
        waves: list[Wave] = []
        seen: set[str] = set()
        for i, raw in enumerate(at.items(body.get("waves"), "waves")):
            wave = Wave._parse(raw, at.at("waves", i))
            if wave.name in seen:
                raise at.error(f"wave name {wave.name!r} is used twice", "waves", i, "name")
            seen.add(wave.name)
            waves.append(wave)
        if waves and waves[0].gate is not None:
            raise at.error(
                f"wave {waves[0].name!r} is the first wave: a gate judges the waves before "
                "it, and there are none; gate the second wave instead",
                "waves",
                0,
                "gate",
            )
        for i, wave in enumerate(waves[:-1]):
            if wave.sites is None and wave.selector is None and wave.percent_bp is None:
                later = waves[i + 1].name
                raise at.error(
                    f"wave {wave.name!r} selects every remaining site, so wave {later!r} "
                    "after it can never select anyone; make it the last wave",
                    "waves",
                    i,
                )
        paused = body.get("paused", False)
        if not isinstance(paused, bool):
            raise at.error(f"expected true or false, found {_show(paused)}", "paused")
        freezes = _freezes(body.get("freezes"), at, f"fleet {fleet}")
        return cls(fleet, tuple(waves), paused, paused_at if paused else None, freezes)

    @classmethod
    def from_document(cls, doc: SpecDocument, *, paused_at: datetime | None = None) -> FleetRollout:
        return cls.from_spec(doc.spec, fleet=doc.name, paused_at=paused_at, mark=doc.mark)


def _freezes(value: Any, at: _Spec, origin: str) -> tuple[Freeze, ...]:
    return tuple(
        Freeze._parse(raw, at.at("freezes", i), origin)
        for i, raw in enumerate(at.items(value, "freezes"))
    )


@dataclass(frozen=True)
class SiteCalendar:
    """When one site may change: its zone, weekly windows, maintenance windows and freezes.

    ``windows`` and ``maintenance`` together are the times a change may start;
    when a site declares *neither*, it has no window restriction (any time is
    an update window), which is how Argo CD treats an app without sync windows.
    A site that wants "only during planned shutdowns" declares maintenance
    windows and no weekly ones. Freezes beat every window, maintenance included.

    ``freezes`` holds the site's own freezes plus any fleet freezes the caller
    merged in with :meth:`with_freezes`: every fleet the site belongs to freezes
    it, not only the fleet whose change is being rolled out (whose freezes
    :func:`~reconciler.core.schedule.decide` adds by itself). :func:`gate_inputs`
    does this merge from documents.
    """

    site_id: str
    timezone: ZoneInfo
    windows: tuple[WeeklyWindow, ...] = ()
    maintenance: tuple[MaintenanceWindow, ...] = ()
    freezes: tuple[Freeze, ...] = ()
    labels: tuple[tuple[str, str], ...] = ()

    @property
    def label_map(self) -> dict[str, str]:
        return dict(self.labels)

    @property
    def restricted(self) -> bool:
        """True when the site declared any window (weekly or maintenance)."""
        return bool(self.windows or self.maintenance)

    def with_freezes(self, freezes: Iterable[Freeze]) -> SiteCalendar:
        """This calendar plus ``freezes`` (e.g. those of every fleet the site belongs to)."""
        merged = list(self.freezes)
        merged.extend(f for f in freezes if f not in merged)
        return replace(self, freezes=tuple(merged))

    @classmethod
    def from_spec(
        cls,
        spec: Any,
        *,
        site_id: str,
        labels: Mapping[str, str] | None = None,
        mark: MarkFn | None = None,
    ) -> SiteCalendar:
        at = _Spec(mark)
        body = at.mapping(spec)
        zone_name = at.string(body.get("timezone"), "timezone")
        zone = load_zone(zone_name)
        if zone is None:
            raise at.error(
                f"unknown time zone {zone_name!r}; expected an IANA name like Europe/Berlin",
                "timezone",
            )
        windows = tuple(
            WeeklyWindow._parse(raw, at.at("updateWindows", i))
            for i, raw in enumerate(at.items(body.get("updateWindows"), "updateWindows"))
        )
        maintenance = tuple(
            MaintenanceWindow._parse(raw, at.at("maintenance", i))
            for i, raw in enumerate(at.items(body.get("maintenance"), "maintenance"))
        )
        freezes = _freezes(body.get("freezes"), at, f"site {site_id}")
        label_pairs = tuple(sorted((str(k), str(v)) for k, v in (labels or {}).items()))
        return cls(site_id, zone, windows, maintenance, freezes, label_pairs)

    @classmethod
    def from_document(cls, doc: SpecDocument) -> SiteCalendar:
        return cls.from_spec(doc.spec, site_id=doc.name, labels=doc.labels, mark=doc.mark)


class SpecDocument(Protocol):
    """What :meth:`SiteCalendar.from_document` needs from a loaded document."""

    @property
    def name(self) -> str: ...

    @property
    def spec(self) -> dict[str, Any]: ...

    @property
    def labels(self) -> dict[str, str]: ...

    def mark(self, *keys: str | int) -> Mark: ...


@dataclass(frozen=True)
class Change:
    """The change a site is asked to take, as far as the schedule cares.

    ``changed_at`` is the committer time of the signed commit that changed this
    site's slice — from signed data, never the node's own guess, so CI and the
    node compute the same schedule. ``emergency`` is True only when the trust
    module accepted an ``Outpost-Emergency:`` trailer on a root-signed commit;
    it passes windows and freezes, but not waves or a paused fleet.
    """

    changed_at: datetime
    emergency: bool = False
    emergency_reason: str = ""
    revision: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "changed_at", require_aware(self.changed_at, "changed_at"))
