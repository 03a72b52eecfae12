"""``outpost app vendor APP [--version V] [--check]``: render Helm charts and Kustomize bases."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from reconciler.cli import COMMANDS, EXIT_ERROR, EXIT_FINDINGS, EXIT_OK, add_repo_argument, example


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "app",
        help=COMMANDS["app"],
        description="Work on the apps under apps/.",
        epilog=example("outpost app vendor mqtt-broker --version 2.0.20"),
    )
    app_sub = parser.add_subparsers(dest="app_command", metavar="SUBCOMMAND", required=True)
    vendor = app_sub.add_parser(
        "vendor",
        help="render an app's spec.source into apps/APP/manifests/VERSION/ (or --check it)",
        description=(
            "Render an app's Helm chart or Kustomize directory with the real helm / kustomize "
            "into apps/APP/manifests/VERSION/ (one file per object) and record the inputs, the "
            "chart's digest and the tools' versions in apps/APP/vendor.lock.json; review the "
            "change with git diff. A chart whose digest changed under a recorded chart version "
            "is refused. --check renders again and compares, writing nothing: exit 1 when the "
            "committed output is stale or was edited by hand. helm and kustomize are taken "
            "from $OUTPOST_HELM / $OUTPOST_KUSTOMIZE or PATH."
        ),
        epilog=example(
            "outpost app vendor mqtt-broker --version 2.0.20",
            "outpost app vendor --check --repo .",
        ),
    )
    vendor.add_argument("app", metavar="APP", nargs="?", help="the app (all with --check)")
    vendor.add_argument(
        "--version",
        dest="versions",
        action="append",
        metavar="V",
        help="the app version to render (repeatable; default: every version)",
    )
    vendor.add_argument(
        "--check", action="store_true", help="render again and compare; write nothing"
    )
    add_repo_argument(vendor)
    vendor.set_defaults(func=run_vendor)


def run_vendor(args: argparse.Namespace) -> int:
    from reconciler.ci.vendor import ChangedChartError, Tools, check_rendered, vendor
    from reconciler.core.errors import OutpostError
    from reconciler.core.findings import format_text, has_errors

    root = Path(args.repo)
    tools = Tools.find()
    try:
        if args.check:
            findings = check_rendered(root, [args.app] if args.app else None, tools)
            if has_errors(findings):
                sys.stderr.write(format_text(findings))
                return EXIT_FINDINGS
            print("vendored output matches a fresh render and its records")
            return EXIT_OK
        if not args.app:
            print("outpost app vendor: name the APP to vendor (or use --check)", file=sys.stderr)
            return EXIT_ERROR
        result = vendor(root, args.app, args.versions, tools)
    except ChangedChartError as exc:
        print(f"outpost app vendor: refused: {exc}", file=sys.stderr)
        return EXIT_FINDINGS
    except OutpostError as exc:
        print(f"outpost app vendor: {exc}", file=sys.stderr)
        return EXIT_ERROR
    for version, files in result.changed.items():
        base = f"apps/{args.app}/manifests"
        listed = "".join(f"\n  {base}/{f}" for f in files) if files else " (no change)"
        print(f"{args.app} {version}:{listed}")
    for version, why in result.kept.items():
        print(f"{args.app} {version}: kept as vendored ({why})")
    print(f"recorded in apps/{args.app}/vendor.lock.json; review with `git diff`, then commit")
    return EXIT_OK
