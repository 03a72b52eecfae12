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
            "outpost validate --repo . --shard 2/4 -o json > shard-2.json",
            "outpost validate --merge shard-*.json -o sarif > outpost.sarif",
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
    parser.add_argument(
        "--shard",
        metavar="I/N",
        help="check only shard I of N (a CI matrix job): the sites of run I of the sorted "
        "sites/ folders, and (shard 1) the rest of the repository; findings are not collapsed "
        "across sites, so combine the shards' -o json with --merge",
    )
    parser.add_argument(
        "--merge",
        metavar="JSON",
        nargs="+",
        type=Path,
        help="read no repository: combine the -o json outputs of every shard of one run "
        "into that run's findings, printed in --output's format",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from reconciler.ci.validate import Shard, read_shard_outputs, validate_repository
    from reconciler.core.errors import OutpostError, SourceUnavailable
    from reconciler.core.findings import has_errors, render_findings

    today = None if args.no_policies else datetime.now(UTC).date()
    try:
        if args.merge:
            if args.shard or args.changed_since:
                raise ValueError(
                    "--merge reads shard outputs only; leave out --shard and --changed-since"
                )
            result = read_shard_outputs(args.merge)
        else:
            shard = Shard.parse(args.shard) if args.shard is not None else None
            result = validate_repository(
                Path(args.repo), changed_since=args.changed_since, today=today, shard=shard
            )
        findings, checked = result.findings, result.checked
    except ValueError as exc:
        print(f"outpost validate: {exc}", file=sys.stderr)
        return EXIT_ERROR
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
