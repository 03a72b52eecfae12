"""The collector's store from the command line: a USB outbox in, the fleet's table out.

``outpost fleet ingest DIR --db|--url`` verifies every signed report in an
air-gapped plant's outbox exactly as the HTTP ingest does (`Ingestor.check`)
and stores them in one transaction; ``outpost fleet status --db|--url`` prints
what the store holds, joined with the repository's sites when one is given
(sites that never reported show as silent).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reconciler.core.errors import OutpostError
from reconciler.fleet.collector.rollout import site_json, site_state, source_stale

if TYPE_CHECKING:  # `outpost fleet status` imports this module and needs neither
    from reconciler.fleet.collector.fleetview import FleetView, SiteInfo
    from reconciler.fleet.collector.ingest import Ingestor
    from reconciler.fleet.collector.store import SiteRecord

__all__ = ["FileOutcome", "format_markdown", "format_text", "ingest_directory", "site_rows"]


@dataclass(frozen=True)
class FileOutcome:
    source: str
    outcome: str
    message: str


def ingest_directory(ingestor: Ingestor, directory: Path) -> list[FileOutcome]:
    """Verify and store every ``outpost-status-*.json`` at or below ``directory``."""
    from reconciler.fleet.status import REPORT_PREFIX, read_report_file, report_files

    paths = report_files(directory)
    outcomes: dict[int, FileOutcome] = {}
    rows = []
    owners: list[tuple[int, str]] = []
    for index, path in enumerate(paths):
        shown = str(path.relative_to(directory))
        try:
            checked = ingestor.check(read_report_file(path, shown), shown)
        except OutpostError as exc:
            ingestor.count("refused")
            outcomes[index] = FileOutcome(shown, "refused", exc.message)
            continue
        named = path.name[len(REPORT_PREFIX) : -len(".json")]
        if named != checked.report.site:
            outcomes[index] = FileOutcome(
                shown,
                "refused",
                f"{shown}: the file is named for site {named!r} but reports on "
                f"{checked.report.site!r}; refusing to file it under either",
            )
            continue
        rows.append(ingestor.row(checked))
        owners.append((index, shown))
    results = ingestor.store.ingest(rows) if rows else []
    for (index, shown), row, result in zip(owners, rows, results, strict=True):
        ingestor.count(result)
        when = row.time.isoformat()
        message = {
            "stored": f"{row.site}: stored the report of {when} (signed by node {row.node})",
            "replay": f"{row.site}: the report of {when} is already on record",
            "older": f"{row.site}: the report of {when} is older than the one on record; "
            "kept the newer",
        }[result]
        outcomes[index] = FileOutcome(shown, result, message)
    return [outcomes[i] for i in sorted(outcomes)]


def site_rows(
    records: Mapping[str, SiteRecord], view: FleetView | None, *, now: datetime
) -> list[dict[str, Any]]:
    """Every site in the store (and in the repository, when given), as the API shows it."""
    sites = sorted(set(records) | set(view.sites if view else ()))
    return [
        site_json(site, records.get(site), view.sites.get(site) if view else None, now)
        for site in sites
    ]


def _age(seconds: int | None) -> str:
    if seconds is None:
        return "never"
    if seconds < 0:
        return "clock ahead"
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    if days:
        return f"{days}d{hours}h ago"
    if hours:
        return f"{hours}h{rest // 60}m ago"
    return f"{rest // 60}m ago"


def _cells(
    site: str, record: SiteRecord | None, info: SiteInfo | None, now: datetime
) -> tuple[str, ...]:
    """One line of the table: what `site_json` says of the site, read straight from the
    record (the table of 10,000 sites is printed without building their JSON first)."""
    waves = sorted(info.waves.items()) if info else []
    fleets = ", ".join(f"{f}/{w}" if w else f for f, w in waves)
    if record is None:
        return (site, "silent", fleets or "-", "none", "-", "never", "no report yet")
    state = site_state(record, info, now)
    stale = source_stale(record, now)
    if record.pending:
        until = f" (until {record.pending_until})" if record.pending_until else ""
        why = f"{record.pending[:12]} {record.outcome}: {record.pending_reason}{until}"
    elif record.last_error:
        why = f"{record.outcome}: {record.last_error}"
    elif stale:
        why = f"source last answered {record.source_answered or 'never'}"
    else:
        why = "up to date" if state == "ok" else state
    return (
        site,
        state + (" (stale)" if stale else ""),
        fleets or "-",
        record.applied[:12] if record.applied else "none",
        record.health or "-",
        _age(round((now - record.time).total_seconds())),
        why,
    )


def _table(
    records: Mapping[str, SiteRecord], view: FleetView | None, now: datetime
) -> list[tuple[str, ...]]:
    sites = sorted(set(records) | set(view.sites if view else ()))
    infos = view.sites if view else {}
    return [_cells(site, records.get(site), infos.get(site), now) for site in sites]


HEADER = ("SITE", "STATE", "FLEET/WAVE", "APPLIED", "HEALTH", "REPORTED", "WHY")


def format_text(records: Mapping[str, SiteRecord], view: FleetView | None, *, now: datetime) -> str:
    """One aligned line per site of the store (and of the repository, when given)."""
    cells = _table(records, view, now)
    if not cells:
        return "no status reports on record\n"
    table = [HEADER, *cells]
    widths = [max(len(r[i]) for r in table) for i in range(len(HEADER) - 1)]
    lines = [
        "  ".join(c.ljust(widths[i]) for i, c in enumerate(r[:-1])) + "  " + r[-1] for r in table
    ]
    return "\n".join(line.rstrip() for line in lines) + "\n"


def format_markdown(
    records: Mapping[str, SiteRecord], view: FleetView | None, *, now: datetime
) -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    cells = _table(records, view, now)
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in cells]
    counts: dict[str, int] = {}
    for row in cells:
        state = row[1].removesuffix(" (stale)")
        counts[state] = counts.get(state, 0) + 1
    summary = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
    return f"**{len(cells)} sites**: {summary or 'none'}\n\n" + "\n".join(lines) + "\n"
