"""``outpost fleet``: fold status reports carried back from sites into one file, and print it.

``outpost fleet ingest DIR`` reads every ``outpost-status-<site>.json`` at or
below DIR (an air-gapped plant's outbox on the stick that came back) into the
fleet status file; ``outpost fleet status`` prints which sites run what, and
why a change has not landed yet, and which of the repository's sites never reported.

The fleet status file is ``$OUTPOST_FLEET_STATUS``, else
``$XDG_STATE_HOME/outpost/fleet-status.json`` (``~/.local/state/...``): neither
command writes into the current directory unless told to with ``--into``/``--from``.

Imports nothing heavy at module level: the agent's start-up builds this parser too.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from reconciler.cli import EXIT_ERROR, EXIT_FINDINGS, EXIT_OK, add_repo_argument, example

FORMATS = ("text", "json")
DEFAULT_HELP = "$OUTPOST_FLEET_STATUS, else $XDG_STATE_HOME/outpost/fleet-status.json"


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "fleet",
        help="collect status reports from sites and show which sites run what",
        description="Status reports carried back from sites (air-gapped plants' outboxes).",
        epilog=example("outpost fleet ingest /media/usb", "outpost fleet status --repo ."),
    )
    commands = parser.add_subparsers(dest="fleet_command", metavar="COMMAND", required=True)
    ingest = commands.add_parser(
        "ingest",
        help="read outpost-status-<site>.json reports from DIR into the fleet status file",
        description=(
            "Read every outpost-status-<site>.json at or below DIR into --into. Per site the "
            "newest report (by its own time) wins; an older one changes nothing. Exit 0 when "
            "every report was read, 1 when one was refused (malformed), 2 on I/O errors."
        ),
        epilog=example("outpost fleet ingest /media/usb"),
    )
    ingest.add_argument("directory", metavar="DIR", help="where the reports are (a stick)")
    ingest.add_argument(
        "--into", metavar="FILE", help=f"fleet status file (default: {DEFAULT_HELP})"
    )
    ingest.set_defaults(func=run_ingest)
    status = commands.add_parser(
        "status",
        help="print which sites run what, and why a change has not landed yet",
        description=(
            "Print one line per site: applied revision, health, age of its last report, and "
            "what waits and why; then every site of the repository at --repo that never "
            "reported. Exit 0, or 2 when the file cannot be read."
        ),
        epilog=example("outpost fleet status --repo ~/src/stores -o json"),
    )
    status.add_argument(
        "--from", dest="source", metavar="FILE", help=f"fleet status file (default: {DEFAULT_HELP})"
    )
    add_repo_argument(status)
    status.add_argument("-o", "--output", choices=FORMATS, default="text", help="output format")
    status.set_defaults(func=run_status)


def run_ingest(args: argparse.Namespace) -> int:
    import os
    from datetime import UTC, datetime
    from pathlib import Path

    from reconciler.core.errors import OutpostError
    from reconciler.fleet.status import default_fleet_file, ingest_dir, load_fleet, save_fleet

    now = datetime.now(UTC)  # the CLI is the edge: the one place that reads the clock
    target = Path(args.into) if args.into else default_fleet_file(os.environ)
    try:
        fleet = load_fleet(target)
        fleet, outcomes = ingest_dir(Path(args.directory), fleet, now=now)
        save_fleet(target, fleet)
    except OutpostError as exc:
        print(f"outpost fleet ingest: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except OSError as exc:
        print(f"outpost fleet ingest: cannot write {target}: {exc.strerror}", file=sys.stderr)
        return EXIT_ERROR
    refused = 0
    for outcome in outcomes:
        if outcome.outcome == "refused":
            refused += 1
            print(f"refused {outcome.message}", file=sys.stderr)
        else:
            print(f"{outcome.outcome} {outcome.message}")
    if not outcomes:
        print(f"no outpost-status-*.json reports under {args.directory}", file=sys.stderr)
    counts = {k: sum(1 for o in outcomes if o.outcome == k) for k in ("recorded", "stale")}
    print(
        f"{target}: {counts['recorded']} recorded, {counts['stale']} older than on record, "
        f"{refused} refused; {len(fleet.sites)} sites on record"
    )
    return EXIT_FINDINGS if refused else EXIT_OK


def run_status(args: argparse.Namespace) -> int:
    import os
    from datetime import UTC, datetime
    from pathlib import Path

    from reconciler.core.errors import OutpostError
    from reconciler.core.model import Repository
    from reconciler.core.source import WorkdirTree
    from reconciler.fleet.status import (
        default_fleet_file,
        format_text,
        load_fleet,
        never_reported,
        summarize,
    )

    source = Path(args.source) if args.source else default_fleet_file(os.environ)
    repo_dir = Path(args.repo)
    has_sites = (repo_dir / "sites").is_dir()
    if not source.exists() and (args.source or not has_sites):
        print(
            f"outpost fleet status: {source} does not exist; run `outpost fleet ingest DIR` "
            "first, or pass --repo to list the sites that never reported",
            file=sys.stderr,
        )
        return EXIT_ERROR
    try:
        fleet = load_fleet(source)
        site_ids = list(Repository(WorkdirTree(repo_dir)).site_ids) if has_sites else []
    except OutpostError as exc:
        print(f"outpost fleet status: {exc}", file=sys.stderr)
        return EXIT_ERROR
    if not has_sites:
        print(
            f"outpost fleet status: no sites/ under {repo_dir}; sites that never reported are "
            "not listed (pass --repo DIR)",
            file=sys.stderr,
        )
    never = never_reported(fleet, site_ids)
    rows = summarize(fleet, now=datetime.now(UTC))
    if args.output == "json":
        document = {"sites": [row.to_json() for row in rows], "neverReported": never}
        sys.stdout.write(json.dumps(document, indent=2, sort_keys=True) + "\n")
    else:
        sys.stdout.write(format_text(rows, never))
    return EXIT_OK
