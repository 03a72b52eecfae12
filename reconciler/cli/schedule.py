"""``outpost schedule [PATH]``: who gets a change when — wave, window, freeze, per site.

Parses the arguments, calls ``ci.schedule`` (`schedule_change` for ``--base``,
`schedule_tree` without it) and prints its predictions as text, markdown or JSON.
See ``reconciler.ci.schedule`` for how a change is scheduled.

Imports nothing heavy at module level: the agent's start-up builds this parser too.
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from reconciler.cli import COMMANDS, EXIT_ERROR, EXIT_FINDINGS, EXIT_OK, add_repo_argument, example

_FORMATS = ("text", "markdown", "json")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "schedule",
        help=COMMANDS["schedule"],
        description=(
            "With --base: for every site whose slice the change base..head (or base..working "
            "tree) touches, its wave, when the wave opens, the first instant its node may "
            "apply (site-local and UTC) and what holds it, computed from the commits as the "
            "node computes it. Without --base: every site of the working tree (or each "
            "--site), as if its slice changed at --from. Both end with a summary by wave and "
            "by day. Exit 0 on success, 1 when --trust-root refuses the range, 2 on "
            "unreadable documents, revisions or arguments."
        ),
        epilog=example(
            "outpost schedule --repo . --base origin/main -o markdown",
            "outpost schedule --site de-muc-0007 --from 2026-12-24T08:00:00Z",
            'outpost schedule --base origin/main --emergency "CVE-2026-1234 hotfix"',
        ),
    )
    add_repo_argument(parser, positional_alias=True)
    parser.add_argument(
        "--site", action="append", dest="sites", metavar="ID", help="only this site (repeatable)"
    )
    parser.add_argument(
        "--base", metavar="REV", help="schedule the change since this revision (e.g. main)"
    )
    parser.add_argument(
        "--head", metavar="REV", help="the changed revision (default with --base: working tree)"
    )
    parser.add_argument(
        "--from",
        dest="start",
        metavar="TIME",
        help="RFC 3339 with offset, e.g. 2026-11-24T12:00:00Z: when a working-tree change "
        "merges (default: now); for a committed --head, when nodes first see it (default: "
        "its committer time)",
    )
    parser.add_argument(
        "--tz",
        metavar="ZONE",
        help="count days in this IANA zone (default: each site's own local days)",
    )
    parser.add_argument(
        "--emergency",
        metavar="REASON",
        help="schedule as a root-signed emergency change (passes windows and freezes); "
        "not with --head, whose commits say it themselves",
    )
    parser.add_argument(
        "--trust-root",
        metavar="FILE",
        help="with --head: verify base..head against this allowed_signers file as a node "
        "would, so only root-signed emergency trailers count",
    )
    parser.add_argument("-o", "--output", choices=_FORMATS, default="text", help="output format")
    parser.set_defaults(func=run)


def _parse_time(text: str) -> datetime | None:
    from datetime import UTC

    try:
        value = datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError:
        return None
    if value.tzinfo is None:
        return None
    return value.astimezone(UTC)


def _usage(message: str) -> int:
    print(f"outpost schedule: {message}", file=sys.stderr)
    return EXIT_ERROR


def run(args: argparse.Namespace) -> int:
    from datetime import UTC

    from reconciler.core.errors import OutpostError
    from reconciler.core.schedule import load_zone, render

    now = datetime.now(UTC).replace(microsecond=0)  # the edge: the one clock reading
    start = None
    if args.start is not None:
        start = _parse_time(args.start)
        if start is None:
            return _usage(
                f"--from {args.start!r} is not an RFC 3339 time with an offset "
                "(e.g. 2026-11-24T12:00:00Z or 2026-11-24T13:00:00+01:00)"
            )
    zone = None
    if args.tz is not None:
        zone = load_zone(args.tz)
        if zone is None:
            return _usage(f"--tz {args.tz!r} is not an IANA zone")
    if args.base is None:
        for flag, value in (("--head", args.head), ("--trust-root", args.trust_root)):
            if value is not None:
                return _usage(f"{flag} needs --base (the change is base..head)")
        return _run_tree(args, start or now, zone)
    if args.head is not None and args.emergency is not None:
        return _usage(
            "--emergency is for a working-tree change; a committed --head carries its own "
            "Outpost-Emergency trailer"
        )
    if args.head is None and args.trust_root is not None:
        return _usage("--trust-root checks the commits of base..head; give --head")
    from reconciler.ci.schedule import schedule_change

    try:
        result = schedule_change(
            Path(args.repo),
            args.base,
            args.head,
            start=start,
            now=now,
            emergency=args.emergency,
            trust_root=Path(args.trust_root) if args.trust_root else None,
            sites=args.sites,
        )
    except OutpostError as exc:
        print(f"outpost schedule: {exc}", file=sys.stderr)
        return EXIT_ERROR
    if result.refused is not None:
        print(
            f"outpost schedule: a node would refuse {args.head}: {result.refused}", file=sys.stderr
        )
        return EXIT_FINDINGS
    sys.stdout.write(
        render(
            result.predictions,
            args.output,
            start=result.start,
            zone=zone,
            notes=result.notes,
            change=result.change,
        )
    )
    for error in result.errors:
        print(f"outpost schedule: {error}", file=sys.stderr)
    return EXIT_ERROR if result.errors else EXIT_OK


def _run_tree(args: argparse.Namespace, start: datetime, zone: Any) -> int:
    from reconciler.ci.schedule import schedule_tree
    from reconciler.core.schedule import render

    result = schedule_tree(Path(args.repo), start, sites=args.sites, emergency=args.emergency)
    if result.error is not None:
        print(f"outpost schedule: {result.error}", file=sys.stderr)
        return EXIT_ERROR
    sys.stdout.write(render(result.predictions, args.output, start=start, zone=zone))
    return EXIT_OK
