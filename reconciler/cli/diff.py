"""``outpost diff``: which sites' slices a change touches, and how (for pull requests)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from reconciler.cli import COMMANDS, EXIT_ERROR, EXIT_FINDINGS, EXIT_OK, add_repo_argument, example

FORMATS = ("text", "markdown", "json")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "diff",
        help=COMMANDS["diff"],
        description=(
            "Render every site a change can affect, at --base and at --head (default: the "
            "working tree), and show per-object unified diffs. Sites that do not change are "
            "not listed; sites that change alike are shown once, as a group. Exit 0 when no "
            "slice changes, 1 when some do, 2 on errors (a site that cannot be rendered at the "
            "head, a revision that does not exist)."
        ),
        epilog=example(
            "outpost diff --base origin/main --summary",
            "outpost diff --base origin/main --head HEAD --site de-muc-0007 -o json",
        ),
    )
    parser.add_argument("--base", required=True, metavar="REV", help="the revision to compare to")
    parser.add_argument("--head", metavar="REV", help="the new revision (default: working tree)")
    add_repo_argument(parser)
    parser.add_argument(
        "--site", action="append", dest="sites", metavar="ID", help="only this site (repeatable)"
    )
    parser.add_argument(
        "--summary",
        action="store_true",
        help="one line per group of sites that change alike, no diffs",
    )
    parser.add_argument("-o", "--output", choices=FORMATS, default="text", help="output format")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from reconciler.ci.diff import FORMATS as RENDERERS
    from reconciler.ci.diff import diff_revisions
    from reconciler.core.errors import OutpostError

    try:
        result = diff_revisions(args.repo, args.base, args.head, only=args.sites)
    except OutpostError as exc:
        print(f"outpost diff: {exc}", file=sys.stderr)
        return EXIT_ERROR
    sys.stdout.write(RENDERERS[args.output](result, summary_only=args.summary))
    if result.head_errors:
        return EXIT_ERROR
    return EXIT_FINDINGS if result.changed else EXIT_OK
