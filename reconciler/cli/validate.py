"""``outpost validate``: schemas, references, secrets and policies for a tree or a change."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from reconciler import __version__
from reconciler.cli import COMMANDS, EXIT_ERROR, EXIT_FINDINGS, EXIT_OK, add_repo_argument, example

FORMATS = ("text", "json", "github", "sarif")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "validate",
        help=COMMANDS["validate"],
        description=(
            "Validate the repository at --repo (default: the current directory). "
            "Exit 0 when clean, 1 when there are error findings, 2 on usage or I/O errors."
        ),
        epilog=example(
            "outpost validate --repo . --changed-since origin/main -o github",
        ),
    )
    add_repo_argument(parser, positional_alias=True)
    parser.add_argument("-o", "--output", choices=FORMATS, default="text", help="output format")
    parser.add_argument(
        "--changed-since",
        metavar="REV",
        help="only check the sites whose slice a change since REV (a git revision) can affect",
    )
    parser.add_argument(
        "--no-policies", action="store_true", help="skip CEL policies (schemas and references only)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from reconciler.ci.validate import validate_repository
    from reconciler.core.errors import OutpostError, SourceUnavailable
    from reconciler.core.findings import has_errors, render_findings

    today = None if args.no_policies else datetime.now(UTC).date()
    try:
        result = validate_repository(Path(args.repo), changed_since=args.changed_since, today=today)
        findings, checked = result.findings, result.checked
    except SourceUnavailable as exc:
        print(f"outpost validate: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except OutpostError as exc:
        print(f"outpost validate: {exc}", file=sys.stderr)
        return EXIT_ERROR
    sys.stdout.write(render_findings(findings, args.output, version=__version__))
    if args.output == "text":
        print(checked)
    return EXIT_FINDINGS if has_errors(findings) else EXIT_OK
