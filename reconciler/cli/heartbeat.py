"""``outpost heartbeat``: sign the heartbeat tag onto the branch head (CI, on a schedule)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from reconciler.cli import COMMANDS, EXIT_ERROR, EXIT_OK, add_repo_argument, example


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "heartbeat",
        help=COMMANDS["heartbeat"],
        description=(
            "Move the annotated tag outpost/heartbeat onto the head of BRANCH, SSH-signed "
            "(namespace git) with KEY, whose public key spec.heartbeat.keys of "
            "policies/signers.yaml lists. Nodes compare its signed time with the fleet's "
            "heartbeat.maxSilence: a server that stops moving it is reported as one that may "
            "withhold updates. Exit 0 when written (and pushed), 2 on errors."
        ),
        epilog=example(
            "outpost heartbeat --repo . --key /run/secrets/heartbeat --branch main --push origin"
        ),
    )
    add_repo_argument(parser)
    parser.add_argument(
        "--key", required=True, type=Path, metavar="FILE", help="the SSH private key to sign with"
    )
    parser.add_argument("--branch", default="main", help="the branch nodes follow (default: main)")
    parser.add_argument(
        "--push", metavar="REMOTE", help="push the tag (forced) to this remote afterwards"
    )
    parser.add_argument("-o", "--output", choices=("text", "json"), default="text")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from reconciler.ci.heartbeat import write_heartbeat
    from reconciler.core.errors import OutpostError

    try:
        written = write_heartbeat(
            Path(args.repo), args.key, branch=args.branch, now=datetime.now(UTC), push=args.push
        )
    except OutpostError as exc:
        print(f"outpost heartbeat: {exc}", file=sys.stderr)
        return EXIT_ERROR
    if args.output == "json":
        body = {
            "tag": written.tag,
            "target": written.target,
            "signedAt": written.signed_at.isoformat(),
            "pushed": written.pushed,
        }
        sys.stdout.write(json.dumps(body, indent=2) + "\n")
    else:
        pushed = f", pushed to {written.pushed}" if written.pushed else ""
        print(
            f"heartbeat {written.tag} → {written.target[:12]} signed at "
            f"{written.signed_at:%Y-%m-%d %H:%M:%SZ}{pushed}"
        )
    return EXIT_OK
