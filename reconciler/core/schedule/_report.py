"""``outpost schedule`` output: who gets a change when, as text, Markdown or JSON.

Pure functions of a list of :class:`Prediction` rows and the schedule's start
(the time the change would land, e.g. the merge time of a pull request). The
summary answers the reviewer's first question in one line —
"5 canary stores tonight; 480 early stores Wed–Thu; 1,804 by Sunday;
130 stores held by 'peak-season' until 5 Jan" — and the tables back it up by
wave, by day and by site.

Days are grouped in one reviewer-chosen zone (UTC by default): sites live in
many zones, and a per-day count needs one calendar. Each site's own local time
is in the per-site table. Markdown stays under GitHub's 65,536-character
comment limit by truncating the per-site table (never the summary).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, Literal
from zoneinfo import ZoneInfo

from reconciler.core.schedule._decide import Prediction
from reconciler.core.schedule._zones import DAY_TITLES, require_aware

Format = Literal["text", "markdown", "json"]
FORMATS: tuple[str, ...] = ("text", "markdown", "json")
MARKDOWN_BUDGET = 60_000
"""Characters of Markdown to aim for (GitHub rejects comments above 65,536)."""

_DAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_BLOCKED = {
    "paused": "fleet paused",
    "no-wave": "selected by no wave",
    "no-window": "no update window left",
    "awaits-promotion": "awaiting a signed promotion",
    "halted": "rollout halted",
}
_NO_WAVE = "(no waves)"


@dataclass(frozen=True)
class WaveSummary:
    """One wave of one fleet: how many sites, when it opens, when its sites apply."""

    fleet: str | None
    name: str | None
    index: int | None
    sites: int
    opens: datetime | None
    earliest: datetime | None
    latest: datetime | None
    held: int
    blocked: int
    awaits: str | None = None
    """The gate the wave waits on (a signed promotion), as the schedule explains it."""
    earliest_open: datetime | None = None
    """Awaiting promotion: the earliest the wave could open, promoted as soon as allowed."""

    @property
    def label(self) -> str:
        return self.name if self.name is not None else _NO_WAVE


@dataclass(frozen=True)
class DaySummary:
    """Sites whose first allowed instant falls on ``day`` (in the report's zone)."""

    day: date
    sites: int
    cumulative: int


@dataclass(frozen=True)
class HoldSummary:
    """Sites a freeze pushes past their first window."""

    freeze: str
    until: date
    sites: int
    noun: str


@dataclass(frozen=True)
class BlockSummary:
    """Sites that will not apply at all without a new commit."""

    kind: str
    fleet: str | None
    sites: int
    noun: str

    @property
    def text(self) -> str:
        what = _BLOCKED.get(self.kind, self.kind)
        if self.kind == "paused" and self.fleet:
            what = f"fleet {self.fleet!r} paused"
        return what


@dataclass(frozen=True)
class Summary:
    """Everything the three formats print, computed once."""

    start: datetime
    zone: ZoneInfo | None
    """The calendar days are counted in; None = each site's own local days."""
    total: int
    waves: tuple[WaveSummary, ...]
    days: tuple[DaySummary, ...]
    held: tuple[HoldSummary, ...]
    blocked: tuple[BlockSummary, ...]
    sentence: str


def _local_time(p: Prediction, zone: ZoneInfo | None) -> datetime | None:
    """``first_allowed`` on the report's calendar: ``zone``, or the site's own when None."""
    if p.first_allowed is None:
        return None
    return p.first_allowed.astimezone(zone or ZoneInfo(p.timezone))


def _local_start(p: Prediction, start: datetime, zone: ZoneInfo | None) -> datetime:
    return start.astimezone(zone or ZoneInfo(p.timezone))


def summarize(
    predictions: Sequence[Prediction], *, start: datetime, zone: ZoneInfo | None = None
) -> Summary:
    """Group predictions by wave, by day, by freeze and by block.

    Days are counted in ``zone`` when given (a reviewer's calendar, e.g. UTC),
    otherwise in each site's own local calendar — so "tonight" means each
    store's own evening, which is what a window at 22:30 local is about.
    """
    start = require_aware(start, "start")
    waves: dict[tuple[str, int, str], list[Prediction]] = {}
    for p in predictions:
        waves.setdefault(_wave_key(p), []).append(p)
    wave_rows: list[WaveSummary] = []
    for key in sorted(waves):
        rows = waves[key]
        times = [p.first_allowed for p in rows if p.first_allowed is not None]
        opens = [p.wave_opens for p in rows if p.wave_opens is not None]
        awaiting = [p for p in rows if p.blocked_kind == "awaits-promotion"]
        hoped = [p.earliest_open for p in awaiting if p.earliest_open is not None]
        wave_rows.append(
            WaveSummary(
                fleet=rows[0].fleet,
                name=rows[0].wave,
                index=rows[0].wave_index,
                sites=len(rows),
                opens=min(opens) if opens else None,
                earliest=min(times) if times else None,
                latest=max(times) if times else None,
                held=sum(1 for p in rows if p.held_by is not None and p.first_allowed is not None),
                blocked=sum(1 for p in rows if p.first_allowed is None),
                awaits=awaiting[0].blocker if awaiting else None,
                earliest_open=min(hoped) if hoped else None,
            )
        )
    per_day: dict[date, int] = {}
    for p in predictions:
        local = _local_time(p, zone)
        if local is not None:
            per_day[local.date()] = per_day.get(local.date(), 0) + 1
    days: list[DaySummary] = []
    running = 0
    for day in sorted(per_day):
        running += per_day[day]
        days.append(DaySummary(day, per_day[day], running))
    holds: dict[tuple[str, date], list[Prediction]] = {}
    blocks: dict[tuple[str, str], list[Prediction]] = {}
    for p in predictions:
        if p.first_allowed is None:
            kind = p.blocked_kind or "no-window"
            fleet = (p.fleet or "") if kind == "paused" else ""
            blocks.setdefault((kind, fleet), []).append(p)
        elif p.held_by is not None and p.held_until is not None:
            holds.setdefault((p.held_by, p.held_until), []).append(p)
    held = tuple(
        HoldSummary(name, until, len(rows), _noun(rows))
        for (name, until), rows in sorted(holds.items(), key=lambda kv: (kv[0][1], kv[0][0]))
    )
    blocked = tuple(
        BlockSummary(kind, fleet or None, len(rows), _noun(rows))
        for (kind, fleet), rows in sorted(blocks.items())
    )
    sentence = _sentence(predictions, held, blocked, start, zone)
    return Summary(
        start, zone, len(predictions), tuple(wave_rows), tuple(days), held, blocked, sentence
    )


def _wave_key(p: Prediction) -> tuple[str, int, str]:
    return (p.fleet or "", p.wave_index if p.wave_index is not None else 1 << 30, p.wave or "")


def _noun(rows: Sequence[Prediction], count: int | None = None) -> str:
    kinds = {p.site_type for p in rows}
    base = kinds.pop() if len(kinds) == 1 else "site"
    if base not in ("store", "plant", "site"):
        base = "site"
    n = len(rows) if count is None else count
    return base if n == 1 else base + "s"


def _day_phrase(delta: int, day: date, first: datetime | None = None) -> str:
    if delta == 0:
        return "tonight" if first is not None and first.hour >= 17 else "today"
    if delta == 1:
        return "tomorrow"
    if 1 < delta < 7:
        return DAY_TITLES[day.weekday()]
    return f"{day.day} {day:%b}"


def _by_phrase(delta: int, day: date) -> str:
    if delta == 0:
        return "today"
    if delta == 1:
        return "tomorrow"
    if 1 < delta < 7:
        return _DAY_NAMES[day.weekday()]
    return f"{day.day} {day:%b}"


def _when(
    rows: Sequence[Prediction], start: datetime, zone: ZoneInfo | None
) -> tuple[tuple[int, date, datetime], tuple[int, date, datetime]]:
    """The (days after start, day, local time) of the earliest and latest row."""
    stamped: list[tuple[int, date, datetime]] = []
    for p in rows:
        local = _local_time(p, zone)
        if local is not None:
            delta = (local.date() - _local_start(p, start, zone).date()).days
            stamped.append((delta, local.date(), local))
    stamped.sort(key=lambda x: (x[0], x[1], x[2].replace(tzinfo=None)))
    return stamped[0], stamped[-1]


def _sentence(
    predictions: Sequence[Prediction],
    held: Sequence[HoldSummary],
    blocked: Sequence[BlockSummary],
    start: datetime,
    zone: ZoneInfo | None,
) -> str:
    if not predictions:
        return "no site is affected"
    parts: list[str] = []
    flowing: list[Prediction] = []
    groups: dict[tuple[str, int, str], list[Prediction]] = {}
    for p in predictions:
        if p.first_allowed is not None and p.held_by is None:
            groups.setdefault(_wave_key(p), []).append(p)
            flowing.append(p)
    many_fleets = len({key[0] for key in groups}) > 1
    for key in sorted(groups):
        rows = groups[key]
        (d0, day0, t0), (d1, day1, _) = _when(rows, start, zone)
        when = _day_phrase(d0, day0, t0)
        if (d1, day1) != (d0, day0):
            when = f"{_day_phrase(d0, day0)}–{_day_phrase(d1, day1)}"
        wave = rows[0].wave
        if wave is not None and many_fleets and rows[0].fleet:
            wave = f"{rows[0].fleet}/{wave}"
        label = f"{wave} " if wave is not None else ""
        parts.append(f"{len(rows):,} {label}{_noun(rows)} {when}")
    if len(groups) > 1:
        _, (d1, day1, _) = _when(flowing, start, zone)
        parts.append(f"{len(flowing):,} by {_by_phrase(d1, day1)}")
    for h in held:
        parts.append(f"{h.sites:,} {h.noun} held by {h.freeze!r} until {h.until.day} {h.until:%b}")
    for b in blocked:
        parts.append(f"{b.sites:,} {b.noun} blocked: {b.text}")
    return "; ".join(parts)


# --------------------------------------------------------------------------- cells


def _utc(value: datetime | None) -> str:
    return f"{value.astimezone(UTC):%Y-%m-%d %H:%M}" if value is not None else "—"


def _local(p: Prediction) -> str:
    local = p.local_first_allowed
    if local is None:
        return "—"
    return f"{DAY_TITLES[local.weekday()]} {local:%Y-%m-%d %H:%M}"


def _span(w: WaveSummary) -> str:
    if w.earliest is None or w.latest is None:
        return "—"
    if w.earliest == w.latest:
        return _utc(w.earliest)
    return f"{_utc(w.earliest)} … {_utc(w.latest)}"


def _sorted_sites(predictions: Sequence[Prediction]) -> list[Prediction]:
    far = datetime.max.replace(tzinfo=UTC)
    return sorted(predictions, key=lambda p: (p.first_allowed or far, p.site))


def _wave_rows(summary: Summary) -> list[list[str]]:
    return [
        [
            w.fleet or "—",
            w.label,
            f"{w.sites:,}",
            _utc(w.opens) if w.awaits is None else f"awaits promotion, ≥ {_utc(w.earliest_open)}",
            _span(w),
            f"{w.held:,}",
            f"{w.blocked:,}",
        ]
        for w in summary.waves
    ]


_WAVE_HEAD = ["fleet", "wave", "sites", "opens (UTC)", "first allowed (UTC)", "held", "blocked"]
_SITE_HEAD = [
    "site",
    "timezone",
    "fleet",
    "wave",
    "wave opens (UTC)",
    "first allowed (local)",
    "first allowed (UTC)",
    "blocker",
]


def _site_row(p: Prediction) -> list[str]:
    return [
        p.site,
        p.timezone,
        p.fleet or "—",
        p.wave or ("—" if p.fleet is None else _NO_WAVE),
        _utc(p.wave_opens),
        _local(p),
        _utc(p.first_allowed),
        p.blocker or "",
    ]


def _day_rows(summary: Summary) -> list[list[str]]:
    return [
        [f"{DAY_TITLES[d.day.weekday()]} {d.day.isoformat()}", f"{d.sites:,}", f"{d.cumulative:,}"]
        for d in summary.days
    ]


def _zone_label(summary: Summary) -> str:
    return summary.zone.key if summary.zone is not None else "site-local time"


def _header(summary: Summary) -> str:
    start = summary.start.astimezone(UTC)
    return (
        f"from {DAY_TITLES[start.weekday()]} {start:%Y-%m-%d %H:%M} UTC; "
        f"{summary.total:,} site(s); days in {_zone_label(summary)}"
    )


# --------------------------------------------------------------------------- text


def render_text(
    predictions: Sequence[Prediction],
    *,
    start: datetime,
    zone: ZoneInfo | None = None,
    notes: Sequence[str] = (),
) -> str:
    """Plain text for a terminal: summary line, then tables by wave, by day and by site.

    ``notes`` (what the schedule assumed, e.g. when an unmerged change merges)
    follow the header, before the summary.
    """
    summary = summarize(predictions, start=start, zone=zone)
    out = [f"Rollout schedule {_header(summary)}", *(f"note: {n}" for n in notes)]
    out += [summary.sentence, ""]
    numeric = {2, 5, 6}
    out += ["By wave", *_table(_WAVE_HEAD, _wave_rows(summary), numeric)]
    out += [f"  {w.fleet}/{w.label}: {w.awaits}" for w in summary.waves if w.awaits] + [""]
    out += [f"By day ({_zone_label(summary)})"]
    out += [*_table(["day", "sites", "cumulative"], _day_rows(summary), {1, 2}), ""]
    out += ["Sites", *_table(_SITE_HEAD, [_site_row(p) for p in _sorted_sites(predictions)])]
    return "\n".join(line.rstrip() for line in out) + "\n"


def _table(head: list[str], rows: list[list[str]], numeric: set[int] | None = None) -> list[str]:
    numeric = numeric or set()
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.rjust(widths[i]) if i in numeric else c.ljust(widths[i]) for i, c in enumerate(cells)
        )

    return [line(head), *(line(r) for r in rows)]


# --------------------------------------------------------------------------- markdown


def render_markdown(
    predictions: Sequence[Prediction],
    *,
    start: datetime,
    zone: ZoneInfo | None = None,
    max_rows: int = 500,
    notes: Sequence[str] = (),
) -> str:
    """A pull-request comment: summary in bold, wave/day tables, per-site table folded.

    The per-site table stops after ``max_rows`` rows or when the comment would
    pass :data:`MARKDOWN_BUDGET` characters, and says how many rows it left out.
    """
    summary = summarize(predictions, start=start, zone=zone)
    out = [
        "### Rollout schedule",
        "",
        f"**{_md(summary.sentence)}**",
        "",
        f"Schedule {_md(_header(summary))}.",
        "",
        *(f"> {_md(n)}" for n in notes),
        *([""] if notes else []),
        "#### By wave",
        "",
        *_md_table(_WAVE_HEAD, _wave_rows(summary), {2, 5, 6}),
        "",
        f"#### By day ({_zone_label(summary)})",
        "",
        *_md_table(["day", "sites", "cumulative"], _day_rows(summary), {1, 2}),
        "",
    ]
    rows = _sorted_sites(predictions)
    out += [
        "<details>",
        f"<summary>Per-site schedule ({len(rows):,} sites)</summary>",
        "",
        *_md_table(_SITE_HEAD, []),
    ]
    size = sum(len(line) + 1 for line in out)
    shown = 0
    for p in rows:
        line = _md_row([_md(c) for c in _site_row(p)])
        if shown >= max_rows or size + len(line) + 200 > MARKDOWN_BUDGET:
            break
        out.append(line)
        size += len(line) + 1
        shown += 1
    if shown < len(rows):
        out += [
            "",
            f"_… and {len(rows) - shown:,} more sites; run `outpost schedule -o text` "
            "for the full list._",
        ]
    out += ["", "</details>"]
    return "\n".join(out) + "\n"


def _md(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("<", "&lt;").replace("*", "\\*")


def _md_row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _md_table(head: list[str], rows: list[list[str]], numeric: set[int] | None = None) -> list[str]:
    numeric = numeric or set()
    rule = ["--:" if i in numeric else "---" for i in range(len(head))]
    return [_md_row(head), _md_row(rule), *(_md_row([_md(c) for c in r]) for r in rows)]


# --------------------------------------------------------------------------- json


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z") if value else None


def to_json_data(
    predictions: Sequence[Prediction],
    *,
    start: datetime,
    zone: ZoneInfo | None = None,
    notes: Sequence[str] = (),
    change: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The JSON document as plain data (times RFC 3339 in UTC, local times with offset).

    ``change`` describes the change scheduled (revisions, commits, assumed merge
    time) when there is one; None for a plain working-tree schedule.
    """
    summary = summarize(predictions, start=start, zone=zone)
    return {
        "start": _iso(summary.start),
        "zone": summary.zone.key if summary.zone is not None else None,
        "change": dict(change) if change is not None else None,
        "notes": list(notes),
        "summary": summary.sentence,
        "total": summary.total,
        "waves": [
            {
                "fleet": w.fleet,
                "wave": w.name,
                "index": w.index,
                "sites": w.sites,
                "opens": _iso(w.opens),
                "earliest": _iso(w.earliest),
                "latest": _iso(w.latest),
                "held": w.held,
                "blocked": w.blocked,
                "awaitsPromotion": w.awaits,
                "earliestOpen": _iso(w.earliest_open),
            }
            for w in summary.waves
        ],
        "days": [
            {"day": d.day.isoformat(), "sites": d.sites, "cumulative": d.cumulative}
            for d in summary.days
        ],
        "held": [
            {"freeze": h.freeze, "until": h.until.isoformat(), "sites": h.sites}
            for h in summary.held
        ],
        "blocked": [{"kind": b.kind, "fleet": b.fleet, "sites": b.sites} for b in summary.blocked],
        "sites": [
            {
                "site": p.site,
                "timezone": p.timezone,
                "type": p.site_type,
                "fleet": p.fleet,
                "wave": p.wave,
                "waveIndex": p.wave_index,
                "waveOpens": _iso(p.wave_opens),
                "firstAllowed": _iso(p.first_allowed),
                "firstAllowedLocal": (
                    p.local_first_allowed.isoformat() if p.local_first_allowed else None
                ),
                "heldBy": p.held_by,
                "heldUntil": p.held_until.isoformat() if p.held_until else None,
                "blocked": p.blocked_kind,
                "blocker": p.blocker,
                "earliestOpen": _iso(p.earliest_open),
                "earliestAllowed": _iso(p.earliest_allowed),
            }
            for p in _sorted_sites(predictions)
        ],
    }


def render_json(
    predictions: Sequence[Prediction],
    *,
    start: datetime,
    zone: ZoneInfo | None = None,
    notes: Sequence[str] = (),
    change: Mapping[str, Any] | None = None,
) -> str:
    """:func:`to_json_data` as indented JSON text."""
    data = to_json_data(predictions, start=start, zone=zone, notes=notes, change=change)
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def render(
    predictions: Sequence[Prediction],
    fmt: str,
    *,
    start: datetime,
    zone: ZoneInfo | None = None,
    notes: Sequence[str] = (),
    change: Mapping[str, Any] | None = None,
) -> str:
    """Dispatch on ``fmt`` (``text`` | ``markdown`` | ``json``); ValueError for anything else.

    ``notes`` are printed by every format; ``change`` goes into JSON only (the
    notes say the same for people).
    """
    if fmt == "text":
        return render_text(predictions, start=start, zone=zone, notes=notes)
    if fmt == "markdown":
        return render_markdown(predictions, start=start, zone=zone, notes=notes)
    if fmt == "json":
        return render_json(predictions, start=start, zone=zone, notes=notes, change=change)
    raise ValueError(f"unknown schedule format {fmt!r}; expected one of {', '.join(FORMATS)}")
