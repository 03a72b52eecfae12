"""``outpost site new ID --fleet F``: scaffold a site folder that validates."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from reconciler.cli import EXIT_ERROR, EXIT_FINDINGS, EXIT_OK


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("site", help="manage site folders")
    site_sub = parser.add_subparsers(dest="site_command", metavar="SUBCOMMAND", required=True)
    new = site_sub.add_parser(
        "new",
        help="scaffold sites/ID/ (site.yaml, hardware.yaml) for a fleet",
        description="Write sites/ID/site.yaml and hardware.yaml; they validate as written.",
    )
    new.add_argument("site_id", metavar="ID")
    new.add_argument("--fleet", required=True, help="the fleet the site joins")
    new.add_argument("--timezone", help="IANA time zone (default: the fleet's most common)")
    new.add_argument("--repo", default=".", help="repository root (default: .)")
    new.set_defaults(func=run_new)


def run_new(args: argparse.Namespace) -> int:
    from reconciler.ci.scaffold import new_site
    from reconciler.core.errors import OutpostError
    from reconciler.core.findings import format_text, has_errors
    from reconciler.core.model import Repository
    from reconciler.core.source import WorkdirTree
    from reconciler.core.validate import validate_tree

    root = Path(args.repo)
    try:
        scaffold = new_site(
            Repository(WorkdirTree(root)), args.site_id, args.fleet, timezone=args.timezone
        )
    except OutpostError as exc:
        print(f"outpost site new: {exc}", file=sys.stderr)
        return EXIT_ERROR
    for path, text in scaffold.files.items():
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
        print(f"wrote {path}")
    findings = [
        f for f in validate_tree(WorkdirTree(root)) if f.path.startswith(f"sites/{args.site_id}/")
    ]
    if has_errors(findings):
        sys.stderr.write(format_text(findings))
        return EXIT_FINDINGS
    print(f"sites/{args.site_id}/ validates; fill in the lines marked TODO before you commit")
    return EXIT_OK
