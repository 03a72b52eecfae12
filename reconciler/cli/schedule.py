"""``outpost schedule [PATH]``: who gets a change when — wave, window, freeze, per site.

Working-tree mode: every site (or those named with ``--site``) is scheduled as
if its whole slice changed at ``--from`` (default: now). Each site is gated by
the slowest of its fleets' rollouts, and frozen by every fleet's freezes, which
is what the agent does when it cannot tell which fleet's part of a slice
changed. A fleet with ``paused: true`` shows as blocked: the working tree has
no history to say when it was paused, so no wave opens (fail closed).

Scheduling only the sites a pull request touches, with the merge commit's
time, needs render's diff of two revisions; the computation per site is the
same :func:`reconciler.schedule.predict` call made here.

Imports nothing heavy at module level: the agent's start-up builds this parser too.
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from reconciler.cli import EXIT_ERROR, EXIT_OK

_FORMATS = ("text", "markdown", "json")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "schedule",
        help="show when each site takes a change: wave, update window, freezes",
        description=(
            "Print, for every site in the working tree (or each --site), its wave, when "
            "the wave opens, the first instant it may apply (site-local and UTC) and what "
            "holds it, with a summary by wave and by day. Exit 0 on success, 2 on "
            "unreadable documents or arguments."
        ),
    )
    parser.add_argument("path", nargs="?", default=".", help="repository root (default: .)")
    parser.add_argument(
        "--site", action="append", dest="sites", metavar="ID", help="only this site (repeatable)"
    )
    parser.add_argument(
        "--from",
        dest="start",
        metavar="TIME",
        help="when the change lands, RFC 3339 with offset, e.g. 2026-11-24T12:00:00Z "
        "(default: now)",
    )
    parser.add_argument(
        "--tz",
        metavar="ZONE",
        help="count days in this IANA zone (default: each site's own local days)",
    )
    parser.add_argument(
        "--emergency",
        metavar="REASON",
        help="schedule as a root-signed emergency change (passes windows and freezes)",
    )
    parser.add_argument("-o", "--output", choices=_FORMATS, default="text")
    parser.set_defaults(func=run)


def _parse_start(text: str | None) -> datetime | None:
    from datetime import UTC

    if text is None:
        return datetime.now(UTC)  # the CLI is the edge: the one place that reads the clock
    try:
        value = datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError:
        return None
    if value.tzinfo is None:
        return None
    return value.astimezone(UTC)


def run(args: argparse.Namespace) -> int:
    from reconciler.model import Repository
    from reconciler.schedule import Change, gate_inputs, load_zone, predict, render
    from reconciler.source import WorkdirTree

    start = _parse_start(args.start)
    if start is None:
        print(
            f"outpost schedule: --from {args.start!r} is not an RFC 3339 time with an offset "
            "(e.g. 2026-11-24T12:00:00Z or 2026-11-24T13:00:00+01:00)",
            file=sys.stderr,
        )
        return EXIT_ERROR
    zone = None
    if args.tz is not None:
        zone = load_zone(args.tz)
        if zone is None:
            print(f"outpost schedule: --tz {args.tz!r} is not an IANA zone", file=sys.stderr)
            return EXIT_ERROR
    repo = Repository(WorkdirTree(Path(args.path)))
    site_ids = list(args.sites) if args.sites else list(repo.site_ids)
    change = Change(
        start, emergency=args.emergency is not None, emergency_reason=args.emergency or ""
    )
    rows = []
    for site_id in site_ids:
        folder = repo.site(site_id)
        fleets = []
        for name in folder.site.fleets:
            fleet = repo.fleet(name)
            if fleet is None:
                print(
                    f"outpost schedule: {folder.site.doc.mark('spec', 'fleets')}: site "
                    f"{site_id!r} names fleet {name!r} but fleets/{name}.yaml does not exist",
                    file=sys.stderr,
                )
                return EXIT_ERROR
            fleets.append(fleet.doc)
        calendar, rollout = gate_inputs(folder.site.doc, fleets, change)
        rows.append(predict(calendar, rollout, change, start, site_type=folder.site.type))
    sys.stdout.write(render(rows, args.output, start=start, zone=zone))
    return EXIT_OK
