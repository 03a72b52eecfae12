"""Wall-clock arithmetic in IANA time zones, with one rule for DST gaps and overlaps.

Every schedule boundary is a *site-local* wall-clock reading ("22:30 on
Tuesday", "00:00 on 2027-01-05") that must become one absolute instant. Two
readings have no obvious answer, and this module decides both once, for every
caller:

- **Gap** (spring forward: 02:30 does not exist in Europe/Berlin on
  2026-03-29): the reading resolves to the *first instant at which the local
  clock shows that reading or later*, i.e. the instant of the transition
  (03:00 CEST). A window "starts at 02:30" on that night therefore opens the
  moment the clocks jump, rather than being skipped or moved an hour late.
- **Overlap** (fall back: 02:30 happens twice in Europe/Berlin on
  2026-10-25): the reading resolves to its *first* occurrence (PEP 495
  ``fold=0``), so a window opens as soon as the clock first shows its start.

Durations are real elapsed time, added in UTC: a 6h window that starts at
22:30 on the night of a change is still six hours long, and ends at 05:30 or
03:30 on the local clock.

All results are aware ``datetime`` objects in UTC. Zones whose offsets carry
seconds (local mean time before ~1900) work, but the schedule is only tested
for 1970 onward.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DAYS: tuple[str, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DAY_TITLES: tuple[str, ...] = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")

_DURATION_RE = re.compile(r"^(?:([0-9]+)d)?(?:([0-9]+)h)?(?:([0-9]+)m)?$")
_HHMM_RE = re.compile(r"^([01][0-9]|2[0-3]):([0-5][0-9])$")
_SECOND = timedelta(seconds=1)


def parse_duration(text: str) -> timedelta | None:
    """``"1h30m"`` → ``timedelta``; None when the text is not a contract duration."""
    match = _DURATION_RE.match(text)
    if not text or match is None:
        return None
    groups = match.groups()
    if any(g and len(g) > 9 for g in groups):
        return None  # ten digits or more: past what a timedelta holds
    days, hours, minutes = (int(g) if g else 0 for g in groups)
    try:
        return timedelta(days=days, hours=hours, minutes=minutes)
    except OverflowError:
        return None


def format_duration(value: timedelta) -> str:
    """The inverse of :func:`parse_duration` for whole minutes (``"0m"`` for zero)."""
    minutes = int(value.total_seconds()) // 60
    days, rest = divmod(minutes, 24 * 60)
    hours, mins = divmod(rest, 60)
    text = (f"{days}d" if days else "") + (f"{hours}h" if hours else "")
    text += f"{mins}m" if mins else ""
    return text or "0m"


def parse_hhmm(text: str) -> time | None:
    """``"22:30"`` → ``time(22, 30)``; None when the text is not ``HH:MM`` (24h)."""
    match = _HHMM_RE.match(text)
    return time(int(match.group(1)), int(match.group(2))) if match else None


def load_zone(name: str) -> ZoneInfo | None:
    """The IANA zone ``name``, or None when it is not a known zone key."""
    if not name or name.startswith(("/", ".")) or ".." in name:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return None


def require_aware(value: datetime, what: str) -> datetime:
    """Refuse naive datetimes: a schedule instant without an offset means nothing."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware, got naive {value.isoformat()}")
    return value.astimezone(UTC)


def wall(instant: datetime, zone: ZoneInfo) -> datetime:
    """The naive local wall-clock reading of ``instant`` in ``zone``."""
    return instant.astimezone(zone).replace(tzinfo=None)


@lru_cache(maxsize=1 << 16)
def resolve(zone: ZoneInfo, day: date, at: time) -> datetime:
    """The first instant (UTC) at which the clock in ``zone`` shows ``day at`` or later.

    Exists once → that instant. Exists twice (overlap) → the first one.
    Does not exist (gap) → the transition instant that ends the gap.
    """
    naive = datetime.combine(day, at)
    first = naive.replace(tzinfo=zone, fold=0).astimezone(UTC)
    other = naive.replace(tzinfo=zone, fold=1).astimezone(UTC)
    if wall(first, zone) == naive or wall(other, zone) == naive:
        # The reading exists; in an overlap fold=0 is the earlier instant.
        candidates = [u for u in (first, other) if wall(u, zone) == naive]
        return min(candidates)
    # Gap: the clock jumps over ``naive`` somewhere between the two readings.
    lo, hi = min(first, other), max(first, other)
    while hi - lo > _SECOND:
        mid = lo + (hi - lo) / 2
        mid = mid.replace(microsecond=0)
        if mid <= lo:
            mid = lo + _SECOND
        if wall(mid, zone) >= naive:
            hi = mid
        else:
            lo = mid
    return hi


def day_start(zone: ZoneInfo, day: date) -> datetime:
    """The first instant of ``day`` in ``zone`` (the gap rule applies to midnight too)."""
    return resolve(zone, day, time(0, 0))


def format_utc(instant: datetime) -> str:
    """``2026-11-26 22:00 UTC`` (seconds only when they are not zero)."""
    u = instant.astimezone(UTC)
    return f"{u:%Y-%m-%d} {_clock(u)} UTC"


def format_local(instant: datetime, zone: ZoneInfo) -> str:
    """``Tue 2026-11-24 22:30 Europe/Berlin (21:30 UTC)`` — what an operator reads."""
    local = instant.astimezone(zone)
    u = instant.astimezone(UTC)
    utc_part = _clock(u) if u.date() == local.date() else f"{u:%Y-%m-%d} {_clock(u)}"
    return (
        f"{DAY_TITLES[local.weekday()]} {local:%Y-%m-%d} {_clock(local)} {zone.key} "
        f"({utc_part} UTC)"
    )


def _clock(value: datetime) -> str:
    return f"{value:%H:%M:%S}" if value.second or value.microsecond else f"{value:%H:%M}"
