"""Findings: what validation and policy checks report, and the formats CI reads.

A finding always points at the file and line that caused it (the app manifest
or the site override, not the rendered object), so the reviewer of a pull
request sees it on the line they would change.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

from reconciler.core.errors import Mark, OutpostError

ERROR = "error"
WARNING = "warning"


@dataclass(frozen=True, order=True)
class Finding:
    """One problem at one place. ``rule`` names the check (``schema``, ``ref``, a policy name)."""

    path: str
    line: int
    message: str
    severity: str = ERROR
    rule: str = "schema"
    site: str = ""

    @classmethod
    def at(
        cls,
        mark: Mark,
        message: str,
        *,
        severity: str = ERROR,
        rule: str = "schema",
        site: str = "",
    ) -> Finding:
        return cls(mark.path, mark.line, message, severity, rule, site)

    @classmethod
    def from_error(cls, error: OutpostError, *, rule: str, site: str = "") -> Finding:
        mark = error.mark or Mark("")
        return cls(mark.path, mark.line, error.message, ERROR, rule, site)

    @property
    def location(self) -> str:
        return f"{self.path}:{self.line}" if self.line else self.path


def report_order(finding: Finding) -> tuple[str, int, str, str, str, str]:
    """How findings are listed: by file, line, rule and message, then severity and site, so
    that two runs over the same tree print the same bytes (findings that differ only by
    site come out of a set in an order that changes with each process)."""
    f = finding
    return (f.path, f.line, f.rule, f.message, f.severity, f.site)


def has_errors(findings: Iterable[Finding]) -> bool:
    return any(f.severity == ERROR for f in findings)


def format_text(findings: Sequence[Finding]) -> str:
    lines = [f"{f.location}: {f.severity}: {f.message} [{f.rule}]" for f in findings]
    errors = sum(1 for f in findings if f.severity == ERROR)
    warnings = len(findings) - errors
    lines.append(f"{errors} error(s), {warnings} warning(s)")
    return "\n".join(lines) + "\n"


def format_json(findings: Sequence[Finding]) -> str:
    return json.dumps([asdict(f) for f in findings], indent=2, sort_keys=True) + "\n"


def _gh_escape_data(value: str) -> str:
    return value.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _gh_escape_property(value: str) -> str:
    return _gh_escape_data(value).replace(":", "%3A").replace(",", "%2C")


def format_github(findings: Sequence[Finding]) -> str:
    """GitHub Actions workflow commands: each finding appears on the pull request's line."""
    out = []
    for f in findings:
        level = "error" if f.severity == ERROR else "warning"
        props = [f"file={_gh_escape_property(f.path)}"]
        if f.line:
            props.append(f"line={f.line}")
        props.append(f"title={_gh_escape_property('outpost ' + f.rule)}")
        out.append(f"::{level} {','.join(props)}::{_gh_escape_data(f.message)}")
    return "\n".join(out) + ("\n" if out else "")


def format_sarif(findings: Sequence[Finding], *, version: str) -> str:
    """SARIF 2.1.0 for code scanning: one run, one rule per check name."""
    rules = sorted({f.rule for f in findings})
    results = []
    for f in findings:
        location: dict[str, object] = {"artifactLocation": {"uri": f.path}}
        if f.line:
            location["region"] = {"startLine": f.line}
        result: dict[str, object] = {
            "ruleId": f.rule,
            "level": "error" if f.severity == ERROR else "warning",
            "message": {"text": f.message},
            "locations": [{"physicalLocation": location}],
        }
        if f.site:
            result["properties"] = {"site": f.site}
        results.append(result)
    sarif = {
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "outpost",
                        "version": version,
                        "rules": [{"id": r} for r in rules],
                    }
                },
                "results": results,
            }
        ],
    }
    return json.dumps(sarif, indent=2, sort_keys=True) + "\n"


FORMATS = ("text", "json", "github", "sarif")


def render_findings(findings: Sequence[Finding], fmt: str, *, version: str = "") -> str:
    if fmt == "json":
        return format_json(findings)
    if fmt == "github":
        return format_github(findings)
    if fmt == "sarif":
        return format_sarif(findings, version=version)
    return format_text(findings)


def aggregate(findings: Iterable[Finding], *, show: int = 3) -> list[Finding]:
    """Collapse findings that differ only in their site into one that names the sites.

    A bad image in a manifest 9,000 stores render is one line to change, so it is one
    finding ("… at 9,000 sites: de-ber-0042, de-muc-0007, … and 8,997 more"), not 9,000
    annotations on the pull request.
    """
    groups: dict[tuple[str, int, str, str, str], list[str]] = {}
    for f in findings:
        groups.setdefault((f.path, f.line, f.message, f.severity, f.rule), []).append(f.site)
    result: list[Finding] = []
    for (path, line, message, severity, rule), sites in groups.items():
        named = sorted({s for s in sites if s})
        if len(named) <= 1:
            result.append(Finding(path, line, message, severity, rule, named[0] if named else ""))
            continue
        shown = ", ".join(named[:show])
        more = f" and {len(named) - show:,} more" if len(named) > show else ""
        result.append(
            Finding(
                path, line, f"{message} (at {len(named):,} sites: {shown}{more})", severity, rule
            )
        )
    return result
