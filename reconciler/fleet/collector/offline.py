"""The collector's store from the command line: a USB outbox in, the fleet's table out.

``outpost fleet ingest DIR --db|--url`` verifies every signed report in an
air-gapped plant's outbox exactly as the HTTP ingest does (`Ingestor.check`)
and stores them in one transaction; ``outpost fleet status --db|--url`` prints
what the store holds, joined with the repository's sites when one is given
(sites that never reported show as silent).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from reconciler.core.errors import OutpostError
from reconciler.fleet.collector.fleetview import FleetView
from reconciler.fleet.collector.ingest import Ingestor
from reconciler.fleet.collector.rollout import site_json
from reconciler.fleet.status import REPORT_PREFIX, read_report_file, report_files

__all__ = ["FileOutcome", "format_markdown", "format_text", "ingest_directory", "site_rows"]


@dataclass(frozen=True)
class FileOutcome:
    source: str
    outcome: str
    message: str


def ingest_directory(ingestor: Ingestor, directory: Path) -> list[FileOutcome]:
    """Verify and store every ``outpost-status-*.json`` at or below ``directory``."""
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
    records: Mapping[str, Any], view: FleetView | None, *, now: datetime
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


def _why(row: Mapping[str, Any]) -> str:
    pending = row.get("pending")
    if pending:
        until = f" (until {pending['until']})" if pending.get("until") else ""
        return f"{str(pending['revision'])[:12]} {row['outcome']}: {pending['reason']}{until}"
    if row.get("lastError"):
        return f"{row['outcome']}: {row['lastError']}"
    if row.get("reported") is None:
        return "no report yet"
    if row.get("stale"):
        return f"source last answered {row.get('sourceLastAnswered') or 'never'}"
    return "up to date" if row["state"] == "ok" else row["state"]


def _cells(row: Mapping[str, Any]) -> tuple[str, ...]:
    applied = (row.get("applied") or {}).get("revision")
    fleets = ", ".join(f"{f}/{w}" if w else f for f, w in sorted(row["fleets"].items()))
    return (
        row["site"],
        row["state"] + (" (stale)" if row.get("stale") else ""),
        fleets or "-",
        applied[:12] if applied else "none",
        row.get("health") or "-",
        _age(row.get("ageSeconds")),
        _why(row),
    )


HEADER = ("SITE", "STATE", "FLEET/WAVE", "APPLIED", "HEALTH", "REPORTED", "WHY")


def format_text(rows: Sequence[Mapping[str, Any]]) -> str:
    if not rows:
        return "no status reports on record\n"
    table = [HEADER, *(_cells(row) for row in rows)]
    widths = [max(len(r[i]) for r in table) for i in range(len(HEADER) - 1)]
    lines = [
        "  ".join(c.ljust(widths[i]) for i, c in enumerate(r[:-1])) + "  " + r[-1] for r in table
    ]
    return "\n".join(line.rstrip() for line in lines) + "\n"


def format_markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(cell(c) for c in _cells(row)) + " |" for row in rows]
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["state"]] = counts.get(row["state"], 0) + 1
    summary = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
    return f"**{len(rows)} sites**: {summary or 'none'}\n\n" + "\n".join(lines) + "\n"
