"""Status carried back from sites: which sites run what, and why not yet.

Every agent writes its status report (``kind: SiteStatus``, the shape of
`reconciler.node.agent.status_document`) to its state directory and, when an outbox
is configured, as ``outpost-status-<site>.json`` there. For an air-gapped plant
that outbox is the same USB stick that brought the bundle; back at the desk,
``outpost fleet ingest DIR`` folds the reports it finds into one fleet status
file, and ``outpost fleet status`` prints it.

Rules:

- one entry per site; the newest report wins by its own ``time``. A report
  older than (or as old as) the one on record changes nothing — sticks come
  back in any order, and an old stick must not make a plant look behind;
- a malformed report is refused with its file name and the reason, and the
  others are still ingested;
- the file name must name the site the report is about: a report copied under
  another plant's name is refused rather than filed under the wrong plant;
- a report timed more than `FUTURE_SLACK` ahead of this machine is recorded
  with a warning: the plant's clock is wrong, and the operator should know.

Reports are not signed: they say what a plant claims to run, for operators.
Nothing in the fleet's trust decisions reads them.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from reconciler.core.envelope import check_kind, loads, parse_time, read_object
from reconciler.core.errors import DocumentError, PermanentError, SourceUnavailable
from reconciler.core.files import write_json
from reconciler.core.source import read_file

__all__ = [
    "FLEET_STATUS_FILE",
    "REPORT_GLOB",
    "FleetEntry",
    "FleetStatus",
    "IngestOutcome",
    "ReportError",
    "SiteReport",
    "SiteRow",
    "default_fleet_file",
    "format_text",
    "ingest_dir",
    "load_fleet",
    "merge",
    "never_reported",
    "parse_report",
    "save_fleet",
    "summarize",
]

FLEET_STATUS_FILE = "fleet-status.json"
REPORT_GLOB = "outpost-status-*.json"
REPORT_PREFIX = "outpost-status-"
MAX_REPORT_BYTES = 1024 * 1024
MAX_FLEET_BYTES = 256 * 1024 * 1024
"""The fleet status file: some 25 KiB a site at most, for 10,000 sites."""
OPERATOR_FILES = "the operator's files"
MAX_REPORT_FILES = 10_000
FUTURE_SLACK = timedelta(hours=1)
_SITE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


class ReportError(PermanentError):
    """A status report (or the fleet status file) is malformed."""


@dataclass(frozen=True)
class SiteReport:
    """One parsed ``SiteStatus`` report and the file it came from."""

    site: str
    time: datetime
    body: Mapping[str, Any] = field(hash=False, compare=False)
    source: str = ""


def parse_report(data: bytes, source: str) -> SiteReport:
    """Check a report's shape; ReportError naming ``source`` and the field otherwise."""

    def bad(reason: str) -> ReportError:
        return ReportError(f"{source}: {reason}")

    body = read_object(data, cap=MAX_REPORT_BYTES, what="a status report", bad=bad)
    if body.get("kind") == "SignedSiteStatus" and isinstance(body.get("payload"), str):
        # A node with a key writes signed reports. This file keeps what they claim; the
        # collector's store (`outpost fleet ingest --db`) is where signatures are checked.
        try:
            body = loads(body["payload"])
        except ValueError as exc:
            raise bad(f"the signed report's payload is not JSON ({exc})") from None
        if not isinstance(body, dict):
            raise bad("the signed report's payload is not a JSON object")
    check_kind(body, "SiteStatus", bad)
    site = body.get("site")
    if not isinstance(site, str) or not _SITE.match(site):
        raise bad(f"site {site!r} is not a site id")
    name = Path(source).name
    if name.startswith(REPORT_PREFIX) and name != f"{REPORT_PREFIX}{site}.json":
        raise bad(
            f"the file is named for site {name[len(REPORT_PREFIX) : -len('.json')]!r} but "
            f"reports on {site!r}; refusing to file it under either"
        )
    time = parse_time(body.get("time"))
    if time is None:
        raise bad(f"time {body.get('time')!r} is not an RFC 3339 time with an offset")
    applied = body.get("applied")
    if not isinstance(applied, dict) or not isinstance(applied.get("revision"), str | None):
        raise bad(f"applied {applied!r} is not {{revision, at}}")
    pending = body.get("pending")
    if pending is not None and (
        not isinstance(pending, dict) or not isinstance(pending.get("revision"), str)
    ):
        raise bad(f"pending {pending!r} is neither null nor {{revision, reason, until}}")
    for key in ("outcome", "health"):
        if not isinstance(body.get(key), str):
            raise bad(f"{key} {body.get(key)!r} is not a string")
    if not isinstance(body.get("warnings", []), list):
        raise bad("warnings is not a list")
    return SiteReport(site=site, time=time, body=body, source=source)


@dataclass(frozen=True)
class FleetEntry:
    """The newest report on record for one site."""

    site: str
    time: datetime
    report: Mapping[str, Any] = field(hash=False, compare=False)
    source: str = ""
    ingested: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "time": self.time.isoformat(),
            "source": self.source,
            "ingested": self.ingested.isoformat() if self.ingested else None,
            "report": dict(self.report),
        }


@dataclass(frozen=True)
class FleetStatus:
    """Every site's newest report: the fleet status file."""

    sites: Mapping[str, FleetEntry] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "apiVersion": "outpost/v1",
            "kind": "FleetStatus",
            "sites": {site: self.sites[site].to_json() for site in sorted(self.sites)},
        }

    @classmethod
    def from_json(cls, data: Any, where: str) -> FleetStatus:
        if (
            not isinstance(data, dict)
            or data.get("kind") != "FleetStatus"
            or data.get("apiVersion") != "outpost/v1"
            or not isinstance(data.get("sites"), dict)
        ):
            raise ReportError(
                f"{where}: not a fleet status file (expected apiVersion outpost/v1, kind "
                "FleetStatus and a sites object)"
            )
        sites: dict[str, FleetEntry] = {}
        for site, entry in data["sites"].items():
            if not isinstance(entry, dict) or not isinstance(entry.get("report"), dict):
                raise ReportError(f"{where}: sites.{site} has no report object")
            report = parse_report(
                json.dumps(entry["report"]).encode(), f"{where}: sites.{site}.report"
            )
            if report.site != site:
                raise ReportError(f"{where}: sites.{site} holds a report on {report.site!r}")
            sites[site] = FleetEntry(
                site=site,
                time=report.time,
                report=report.body,
                source=str(entry.get("source", "")),
                ingested=parse_time(entry.get("ingested")),
            )
        return cls(sites=sites)


IngestResult = Literal["recorded", "stale", "unchanged", "refused"]


@dataclass(frozen=True)
class IngestOutcome:
    """What ingesting one file did."""

    source: str
    outcome: IngestResult
    message: str
    site: str | None = None


def merge(
    fleet: FleetStatus, report: SiteReport, *, now: datetime
) -> tuple[FleetStatus, IngestOutcome]:
    """Record ``report`` if it is newer than the one on record for its site."""
    known = fleet.sites.get(report.site)
    when = report.time.isoformat()
    if known is not None and report.time < known.time:
        return fleet, IngestOutcome(
            report.source,
            "stale",
            f"{report.site}: report of {when} is older than the one on record "
            f"({known.time.isoformat()}); kept the newer",
            report.site,
        )
    if known is not None and report.time == known.time:
        return fleet, IngestOutcome(
            report.source, "unchanged", f"{report.site}: report of {when} already on record",
            report.site,
        )  # fmt: skip
    entry = FleetEntry(report.site, report.time, report.body, report.source, now)
    message = f"{report.site}: recorded the report of {when}"
    if report.time - now > FUTURE_SLACK:
        message += (
            f" — warning: it is dated {_age(report.time - now)} ahead of this machine's "
            "clock; the site's clock may be wrong"
        )
    return FleetStatus({**fleet.sites, report.site: entry}), IngestOutcome(
        report.source, "recorded", message, report.site
    )


def ingest_dir(
    directory: Path, fleet: FleetStatus, *, now: datetime
) -> tuple[FleetStatus, list[IngestOutcome]]:
    """Fold every ``outpost-status-*.json`` at or below ``directory`` into ``fleet``.

    SourceUnavailable if the folder cannot be read; each bad file is a refused outcome.
    """
    paths = report_files(directory)
    outcomes: list[IngestOutcome] = []
    for path in paths:
        shown = str(path.relative_to(directory))
        try:
            report = parse_report(read_report_file(path, shown), shown)
        except ReportError as exc:
            outcomes.append(IngestOutcome(shown, "refused", exc.message))
            continue
        fleet, outcome = merge(fleet, report, now=now)
        outcomes.append(outcome)
    return fleet, outcomes


def report_files(directory: Path) -> list[Path]:
    """Every ``outpost-status-*.json`` at or below ``directory`` (links left out), sorted;
    SourceUnavailable if the folder cannot be read or holds over `MAX_REPORT_FILES`."""
    if not directory.is_dir():
        raise SourceUnavailable(f"{directory} is not a folder (is the stick mounted?)")
    try:
        paths = sorted(p for p in directory.rglob(REPORT_GLOB) if not p.is_symlink())
    except OSError as exc:
        raise SourceUnavailable(f"cannot read {directory}: {exc.strerror}") from None
    if len(paths) > MAX_REPORT_FILES:
        raise SourceUnavailable(
            f"{directory} holds {len(paths)} status reports, over the cap of {MAX_REPORT_FILES}:"
            " point at the folder the reports were copied to"
        )
    return paths


def read_report_file(path: Path, shown: str) -> bytes:
    """The bytes of one report file, bounded (`read_file`: a FIFO or a device on the stick is
    refused without blocking, a huge file by its size); ReportError naming ``shown``."""
    try:
        return read_file(path, shown, MAX_REPORT_BYTES, holder="a report folder")
    except DocumentError as exc:
        raise ReportError(str(exc)) from None


def load_fleet(path: Path) -> FleetStatus:
    """The fleet status file, or an empty fleet if it does not exist yet."""
    if not os.path.lexists(path):
        return FleetStatus()
    try:
        raw = read_file(path, str(path), MAX_FLEET_BYTES, holder=OPERATOR_FILES, follow_links=True)
    except DocumentError as exc:
        raise SourceUnavailable(f"cannot read {path}: {exc.message}") from None
    try:
        data = loads(raw)
    except ValueError as exc:  # UnicodeDecodeError too
        raise ReportError(f"{path}: not JSON ({exc})") from None
    return FleetStatus.from_json(data, str(path))


def default_fleet_file(environ: Mapping[str, str]) -> Path:
    """Where the fleet status file lives unless a command is told: never the current directory.

    ``$OUTPOST_FLEET_STATUS`` names the file; otherwise it is under the XDG state
    directory (``$XDG_STATE_HOME``, else ``~/.local/state``), like any per-user state.
    """
    named = environ.get("OUTPOST_FLEET_STATUS")
    if named:
        return Path(named)
    base = environ.get("XDG_STATE_HOME") or str(Path(environ.get("HOME", "~")) / ".local/state")
    return Path(base).expanduser() / "outpost" / FLEET_STATUS_FILE


def save_fleet(path: Path, fleet: FleetStatus) -> None:
    write_json(path, fleet.to_json())


@dataclass(frozen=True)
class SiteRow:
    """One line of ``outpost fleet status``."""

    site: str
    applied: str | None
    applied_at: str | None
    outcome: str
    health: str
    pending: str | None
    pending_reason: str | None
    pending_until: str | None
    reported: datetime
    age_seconds: float
    last_error: str | None
    warnings: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "site": self.site,
            "applied": self.applied,
            "appliedAt": self.applied_at,
            "outcome": self.outcome,
            "health": self.health,
            "pending": (
                {
                    "revision": self.pending,
                    "reason": self.pending_reason,
                    "until": self.pending_until,
                }
                if self.pending
                else None
            ),
            "reported": self.reported.isoformat(),
            "ageSeconds": round(self.age_seconds),
            "lastError": self.last_error,
            "warnings": list(self.warnings),
        }


def summarize(fleet: FleetStatus, *, now: datetime) -> list[SiteRow]:
    """One row per site, sorted by site id."""
    rows: list[SiteRow] = []
    for site in sorted(fleet.sites):
        entry = fleet.sites[site]
        body = entry.report
        applied = body.get("applied") or {}
        pending = body.get("pending") or {}
        error = body.get("lastError")
        rows.append(
            SiteRow(
                site=site,
                applied=_opt_str(applied.get("revision")),
                applied_at=_opt_str(applied.get("at")),
                outcome=str(body.get("outcome", "")),
                health=str(body.get("health", "")),
                pending=_opt_str(pending.get("revision")),
                pending_reason=_opt_str(pending.get("reason")),
                pending_until=_opt_str(pending.get("until")),
                reported=entry.time,
                age_seconds=(now - entry.time).total_seconds(),
                last_error=_opt_str(error),
                warnings=tuple(str(w) for w in body.get("warnings") or ()),
            )
        )
    return rows


def never_reported(fleet: FleetStatus, site_ids: Sequence[str]) -> list[str]:
    """The repository's sites with no report on record, sorted: new, unplugged or lost."""
    return sorted(set(site_ids) - set(fleet.sites))


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)


def _age(delta: timedelta) -> str:
    seconds = int(abs(delta.total_seconds()))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    if days:
        return f"{days}d{hours}h" if hours else f"{days}d"
    if hours:
        return f"{hours}h{minutes}m" if minutes else f"{hours}h"
    return f"{minutes}m"


def _why(row: SiteRow) -> str:
    if row.pending:
        reason = row.pending_reason or row.outcome
        until = f" (until {row.pending_until})" if row.pending_until else ""
        return f"{row.pending[:12]} {row.outcome}: {reason}{until}"
    if row.last_error:
        return f"{row.outcome}: {row.last_error}"
    return "up to date" if row.outcome in ("unchanged", "applied") else row.outcome


def format_text(rows: Sequence[SiteRow], never: Sequence[str] = ()) -> str:
    """A table: site, applied revision, health, report age, and why a change has not landed.

    ``never`` are the repository's sites without any report: they are listed last, so a
    store that was never enrolled (or whose reports never come home) is not invisible.
    """
    if not rows and not never:
        return "no status reports on record\n"
    header = ("SITE", "APPLIED", "HEALTH", "REPORTED", "WHY NOT YET")
    table = [
        (
            row.site,
            row.applied[:12] if row.applied else "none",
            row.health,
            f"{_age(timedelta(seconds=row.age_seconds))} ago"
            if row.age_seconds >= 0
            else f"in {_age(timedelta(seconds=row.age_seconds))} (clock ahead)",
            _why(row),
        )
        for row in rows
    ]
    table += [
        (site, "-", "unknown", "never", "no status report on record: not enrolled, or its "
         "reports do not come home")
        for site in never
    ]  # fmt: skip
    widths = [max(len(r[i]) for r in (header, *table)) for i in range(4)]
    lines = [
        "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(r[:4])) + "  " + r[4]
        for r in (header, *table)
    ]
    return "\n".join(line.rstrip() for line in lines) + "\n"
