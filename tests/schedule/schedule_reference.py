"""An independent reference model of the schedule, for property tests to compare against.

It reads the raw specs (the dicts a site.yaml and a fleet.yaml hold), not the parsed
objects, and shares no code with ``reconciler.core.schedule``: it never calls ``wave_slot``,
``resolve``, ``hash_bucket`` or any parser of the product. It is written from the
contract's words and is slow and simple on purpose:

- a wall-clock reading becomes an instant by scanning UTC minute by minute for the first
  instant whose local clock shows that reading or later (that *is* the rule for DST gaps
  and overlaps, stated without arithmetic on offsets);
- the bucket of a site for percent waves is SHA-256 of ``"<fleet>/<site>"`` computed by a
  plain FIPS 180-4 implementation written here (checked against the standard's own test
  values in ``test_schedule_waves.py``), first 8 bytes big-endian, modulo 10,000;
- freezes hold on every local calendar day from ``from`` to ``to``, both included.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from functools import cache
from typing import Any
from zoneinfo import ZoneInfo

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
MINUTE = timedelta(minutes=1)

# -- SHA-256, FIPS 180-4 §4.2.2 and §6.2 ---------------------------------------------------

_K = [
    0x428A2F98, 0x71374491, 0xB5C0FBCF, 0xE9B5DBA5, 0x3956C25B, 0x59F111F1, 0x923F82A4,
    0xAB1C5ED5, 0xD807AA98, 0x12835B01, 0x243185BE, 0x550C7DC3, 0x72BE5D74, 0x80DEB1FE,
    0x9BDC06A7, 0xC19BF174, 0xE49B69C1, 0xEFBE4786, 0x0FC19DC6, 0x240CA1CC, 0x2DE92C6F,
    0x4A7484AA, 0x5CB0A9DC, 0x76F988DA, 0x983E5152, 0xA831C66D, 0xB00327C8, 0xBF597FC7,
    0xC6E00BF3, 0xD5A79147, 0x06CA6351, 0x14292967, 0x27B70A85, 0x2E1B2138, 0x4D2C6DFC,
    0x53380D13, 0x650A7354, 0x766A0ABB, 0x81C2C92E, 0x92722C85, 0xA2BFE8A1, 0xA81A664B,
    0xC24B8B70, 0xC76C51A3, 0xD192E819, 0xD6990624, 0xF40E3585, 0x106AA070, 0x19A4C116,
    0x1E376C08, 0x2748774C, 0x34B0BCB5, 0x391C0CB3, 0x4ED8AA4A, 0x5B9CCA4F, 0x682E6FF3,
    0x748F82EE, 0x78A5636F, 0x84C87814, 0x8CC70208, 0x90BEFFFA, 0xA4506CEB, 0xBEF9A3F7,
    0xC67178F2,
]  # fmt: skip
_H0 = [
    0x6A09E667, 0xBB67AE85, 0x3C6EF372, 0xA54FF53A,
    0x510E527F, 0x9B05688C, 0x1F83D9AB, 0x5BE0CD19,
]  # fmt: skip
_MASK = 0xFFFFFFFF


def _rotr(x: int, n: int) -> int:
    return ((x >> n) | (x << (32 - n))) & _MASK


def sha256(message: bytes) -> bytes:
    """SHA-256 as FIPS 180-4 writes it: pad, schedule, 64 rounds per block."""
    length = len(message) * 8
    padded = message + b"\x80" + b"\x00" * ((55 - len(message)) % 64) + length.to_bytes(8, "big")
    h = list(_H0)
    for offset in range(0, len(padded), 64):
        w = [int.from_bytes(padded[offset + 4 * i : offset + 4 * i + 4], "big") for i in range(16)]
        for t in range(16, 64):
            s0 = _rotr(w[t - 15], 7) ^ _rotr(w[t - 15], 18) ^ (w[t - 15] >> 3)
            s1 = _rotr(w[t - 2], 17) ^ _rotr(w[t - 2], 19) ^ (w[t - 2] >> 10)
            w.append((w[t - 16] + s0 + w[t - 7] + s1) & _MASK)
        a, b, c, d, e, f, g, hh = h
        for t in range(64):
            t1 = hh + (_rotr(e, 6) ^ _rotr(e, 11) ^ _rotr(e, 25)) + ((e & f) ^ (~e & g))
            t1 = (t1 + _K[t] + w[t]) & _MASK
            t2 = (_rotr(a, 2) ^ _rotr(a, 13) ^ _rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c))
            hh, g, f, e, d, c, b, a = g, f, e, (d + t1) & _MASK, c, b, a, (t1 + t2) & _MASK
        h = [(x + y) & _MASK for x, y in zip(h, (a, b, c, d, e, f, g, hh), strict=True)]
    return b"".join(x.to_bytes(4, "big") for x in h)


def bucket_of_digest(digest: bytes) -> int:
    """First 8 bytes as a big-endian number, modulo 10,000 (basis points)."""
    value = 0
    for byte in digest[:8]:
        value = value * 256 + byte
    return value % 10_000


@cache
def bucket(fleet: str, site_id: str) -> int:
    """The contract: SHA-256 of ``<fleet>/<site>``, first 8 bytes big-endian, mod 10,000."""
    return bucket_of_digest(sha256(f"{fleet}/{site_id}".encode()))


# -- durations, wall clocks ------------------------------------------------------------------


def duration(text: str) -> timedelta:
    """``"1d2h30m"``: days, hours, minutes, each optional, in that order."""
    match = re.fullmatch(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?", text)
    assert match is not None and text, text
    d, h, m = (int(x or 0) for x in match.groups())
    return timedelta(days=d, hours=h, minutes=m)


@cache
def wall_to_instant(zone: str, day: date, hhmm: str) -> datetime:
    """The first instant (to the minute) at which the local clock reads ``day hhmm`` or later."""
    reading = datetime.combine(day, datetime.strptime(hhmm, "%H:%M").time())
    tz = ZoneInfo(zone)
    t = reading.replace(tzinfo=UTC) - timedelta(hours=16)  # every offset is within ±14 h
    while t.astimezone(tz).replace(tzinfo=None) < reading:
        t += MINUTE
    return t


# -- the rules ---------------------------------------------------------------------------------


def _selects(wave: dict[str, Any], fleet: str, site_id: str, labels: dict[str, str]) -> bool:
    if "sites" in wave:
        return site_id in wave["sites"]
    if "selector" in wave:
        wanted = wave["selector"].get("matchLabels", {})
        return all(labels.get(k) == v for k, v in wanted.items())
    if "percent" in wave:
        return bucket(fleet, site_id) < round(wave["percent"] * 100)
    return True


def wave_opens(
    fleet: dict[str, Any] | None,
    site_id: str,
    labels: dict[str, str],
    changed_at: datetime,
    paused_at: datetime | None,
) -> datetime | None:
    """When the site's wave opens for a change made at ``changed_at``; None: never."""
    if fleet is None:
        return changed_at
    waves = fleet.get("waves", [])
    opens = changed_at
    if waves:
        for wave in waves:
            opens += duration(wave.get("soak", "0m"))
            if _selects(wave, fleet["name"], site_id, labels):
                break
        else:
            return None
    if fleet.get("paused") and (paused_at is None or opens >= paused_at):
        return None
    return opens


def allowed(
    site: dict[str, Any],
    site_id: str,
    labels: dict[str, str],
    fleet: dict[str, Any] | None,
    changed_at: datetime,
    emergency: bool,
    paused_at: datetime | None,
    t: datetime,
) -> bool:
    """May the change be applied at instant ``t``?"""
    opens = wave_opens(fleet, site_id, labels, changed_at, paused_at)
    if opens is None or t < opens:
        return False
    if emergency:
        return True
    zone = site["timezone"]
    today = t.astimezone(ZoneInfo(zone)).date()
    freezes = list(site.get("freezes", [])) + list((fleet or {}).get("freezes", []))
    for freeze in freezes:
        if date.fromisoformat(freeze["from"]) <= today <= date.fromisoformat(freeze["to"]):
            return False
    windows = site.get("updateWindows", [])
    maintenance = site.get("maintenance", [])
    if not windows and not maintenance:
        return True
    for window in windows:
        length = duration(window["duration"])
        for back in range(-1, 4):
            day = today - timedelta(days=back)
            if WEEKDAYS[day.weekday()] in window["days"]:
                start = wall_to_instant(zone, day, window["start"])
                if start <= t < start + length:
                    return True
    for slot in maintenance:
        start = datetime.fromisoformat(slot["start"])
        end = datetime.fromisoformat(slot["end"])
        if start <= t < end:
            return True
    return False
