"""`outpost fleet status`'s table is read straight from the stored records; it must say, cell
for cell, what the API's JSON (`site_json`) says of each site."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from reconciler.fleet.collector.fleetview import FleetView, SiteInfo
from reconciler.fleet.collector.offline import HEADER, _age, format_markdown, format_text, site_rows
from reconciler.fleet.collector.store import SiteRecord

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
SITES = [f"s-{n}" for n in range(6)]
texts = st.none() | st.text(alphabet="abc xyz:-", min_size=1, max_size=12)
revisions = st.none() | st.sampled_from(["a" * 40, "b" * 40, "c" * 12])
moments = st.timedeltas(min_value=timedelta(days=-1), max_value=timedelta(days=40))


@st.composite
def records(draw: st.DrawFn, site: str) -> SiteRecord:
    age = draw(moments)
    answered = draw(st.none() | moments)
    return SiteRecord(
        site,
        "edge-1",
        NOW - age,
        NOW - age,
        "digest",
        draw(
            st.sampled_from(["applied", "unchanged", "waiting", "refused", "failed", "rolled-back"])
        ),
        draw(st.sampled_from(["", "healthy", "degraded", "failed"])),
        draw(revisions),
        None,
        draw(revisions),
        draw(texts),
        draw(st.none() | st.just("2027-01-05T23:00:00+00:00")),
        draw(texts),
        (),
        (NOW - answered).isoformat() if answered is not None else None,
        (),
    )


def reference_cells(row: Mapping[str, Any]) -> tuple[str, ...]:
    """The table's cells as they were made from the JSON row before the table was read from
    the records (kept here as the oracle)."""
    applied = (row.get("applied") or {}).get("revision")
    fleets = ", ".join(f"{f}/{w}" if w else f for f, w in sorted(row["fleets"].items()))
    pending = row.get("pending")
    if pending:
        until = f" (until {pending['until']})" if pending.get("until") else ""
        why = f"{str(pending['revision'])[:12]} {row['outcome']}: {pending['reason']}{until}"
    elif row.get("lastError"):
        why = f"{row['outcome']}: {row['lastError']}"
    elif row.get("reported") is None:
        why = "no report yet"
    elif row.get("stale"):
        why = f"source last answered {row.get('sourceLastAnswered') or 'never'}"
    else:
        why = "up to date" if row["state"] == "ok" else row["state"]
    return (
        row["site"],
        row["state"] + (" (stale)" if row.get("stale") else ""),
        fleets or "-",
        applied[:12] if applied else "none",
        row.get("health") or "-",
        _age(row.get("ageSeconds")),
        why,
    )


@st.composite
def worlds(draw: st.DrawFn) -> tuple[dict[str, SiteRecord], FleetView | None]:
    stored = draw(st.lists(st.sampled_from(SITES), unique=True))
    found = {site: draw(records(site)) for site in stored}
    if not draw(st.booleans()):
        return found, None
    listed = draw(st.lists(st.sampled_from(SITES), unique=True))
    infos = {
        site: SiteInfo(
            site,
            draw(st.sampled_from(["online", "intermittent", "air-gapped"])),
            ("retail",),
            {"retail": draw(st.none() | st.sampled_from(["canary", "all"]))},
            {},
            {},
        )
        for site in listed
    }
    return found, FleetView("r" * 40, infos, {"retail": ("canary", "all")})


@given(worlds())
def test_the_table_says_what_the_json_says(world: tuple[dict[str, SiteRecord], Any]) -> None:
    stored, view = world
    rows = site_rows(stored, view, now=NOW)
    expected = [reference_cells(row) for row in rows]
    text = format_text(stored, view, now=NOW)
    if not rows:
        assert text == "no status reports on record\n"
        return
    table = [HEADER, *expected]
    widths = [max(len(r[i]) for r in table) for i in range(len(HEADER) - 1)]
    lines = [
        "  ".join(c.ljust(widths[i]) for i, c in enumerate(r[:-1])) + "  " + r[-1] for r in table
    ]
    assert text == "\n".join(line.rstrip() for line in lines) + "\n"
    markdown = format_markdown(stored, view, now=NOW)
    assert markdown.startswith(f"**{len(rows)} sites**: ")
    for row in rows:
        assert f"{row['state']}" in markdown.splitlines()[0]
