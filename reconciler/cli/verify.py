"""``outpost verify``: check that every commit of a range is signed by someone allowed to make it.

Usable in CI on a pull request's commits (``--since origin/main``) and what the
node agent runs before it reads a candidate. One line per commit: short sha,
principal, key fingerprint, verdict. Exit 0 all verified, 1 any refused, 2 on
usage or I/O errors (no repository, unreadable or invalid trust root).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reconciler.cli import COMMANDS, EXIT_ERROR, EXIT_FINDINGS, EXIT_OK, add_repo_argument, example

if TYPE_CHECKING:
    from reconciler.core.trust.verify import RangeResult

FORMATS = ("text", "json")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "verify",
        help=COMMANDS["verify"],
        description=(
            "Verify every commit in (SINCE, REV] — or all of REV's history without --since — "
            "against the root signers in the trust file (git's allowed_signers format) and "
            "the delegations in policies/signers.yaml, following trust-root rotations "
            "(policies/root-signers) from the root given: an old root file follows the same "
            "chain a node does. Commits that wait for approvals (spec.thresholds) are listed "
            "as pending. Exit 0 when all are verified, 1 when any is refused or pending, 2 on "
            "usage or I/O errors."
        ),
        epilog=example("outpost verify --trust allowed_signers --since origin/main HEAD"),
    )
    parser.add_argument(
        "rev", nargs="?", default="HEAD", metavar="REV", help="the candidate commit (default: HEAD)"
    )
    parser.add_argument(
        "--trust",
        required=True,
        type=Path,
        metavar="FILE",
        help="the root signers, in git's allowed_signers format",
    )
    add_repo_argument(parser)
    parser.add_argument(
        "--since",
        metavar="REV",
        help="the last applied (or already trusted) commit; REV must descend from it",
    )
    parser.add_argument("-o", "--output", choices=FORMATS, default="text", help="output format")
    parser.add_argument(
        "--max-commits",
        type=int,
        default=None,
        metavar="N",
        help="refuse ranges longer than N commits (default: 5000)",
    )
    parser.add_argument(
        "--max-skew",
        type=int,
        default=300,
        metavar="SECONDS",
        help="how far a committer time may lie ahead of this clock (default 300)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime, timedelta

    from reconciler.core.errors import OutpostError, VerificationError
    from reconciler.core.trust.allowed_signers import parse_allowed_signers
    from reconciler.core.trust.gitsource import open_repository, verify_repository
    from reconciler.core.trust.verify import DEFAULT_MAX_COMMITS

    max_commits = args.max_commits if args.max_commits is not None else DEFAULT_MAX_COMMITS
    if max_commits < 1 or args.max_skew < 0:
        print("outpost verify: --max-commits must be ≥ 1 and --max-skew ≥ 0", file=sys.stderr)
        return EXIT_ERROR
    try:
        data = args.trust.read_bytes()
    except OSError as exc:
        print(
            f"outpost verify: cannot read the trust file {args.trust}: {exc.strerror}",
            file=sys.stderr,
        )
        return EXIT_ERROR
    try:
        trust = parse_allowed_signers(data, str(args.trust))
        repo = open_repository(Path(args.repo))
        result = verify_repository(
            repo,
            trust,
            now=datetime.now(UTC),
            candidate=args.rev,
            since=args.since,
            max_commits=max_commits,
            max_skew=timedelta(seconds=args.max_skew),
        )
    except VerificationError as exc:  # a commit object too malformed to read: refused
        print(f"outpost verify: refused: {exc}", file=sys.stderr)
        return EXIT_FINDINGS
    except OutpostError as exc:
        print(f"outpost verify: {exc}", file=sys.stderr)
        return EXIT_ERROR
    sys.stdout.write(render_json(result) if args.output == "json" else render_text(result))
    return EXIT_OK if result.complete else EXIT_FINDINGS


def render_text(result: RangeResult) -> str:
    """One aligned line per commit, oldest first, then a one-line summary."""
    rows = []
    for verdict in result.verdicts:
        principal = verdict.principal or "-"
        if verdict.root:
            principal = f"root:{principal}"
        status: str = verdict.verdict
        if not verdict.ok:
            status = f"refused: {verdict.reason}"
        elif verdict.emergency:
            status = f"verified (emergency: {verdict.emergency_reason})"
        rows.append((verdict.short, principal, verdict.fingerprint or "-", status))
    lines = []
    if rows:
        width_p = max(len(r[1]) for r in rows)
        width_f = max(len(r[2]) for r in rows)
        lines = [f"{s}  {p:<{width_p}}  {f:<{width_f}}  {v}" for s, p, f, v in rows]
    for rotation in result.rotations:
        lines.append(
            f"trust root rotated by {rotation.commit[:7]} (approved by "
            f"{', '.join(rotation.approvers)}): commits after {rotation.effective[:7]} are "
            "verified against its policies/root-signers"
        )
    error = result.error
    if error is not None:
        lines.append(f"refused: {error.message}")
        return "\n".join(lines) + "\n"
    for item in result.pending:
        lines.append(f"pending: {item.message}")
    since = f" since {result.last_applied[:7]}" if result.last_applied else ""
    count = len(result.verdicts)
    lines.append(f"verified {count} commit{'s' if count != 1 else ''}{since}")
    if result.pending:
        held = result.applicable
        lines.append(
            f"{len(result.pending)} commit(s) wait for approvals: a node takes "
            + (f"{held[:7]} meanwhile" if held and held != result.last_applied else "nothing new")
        )
    return "\n".join(lines) + "\n"


def render_json(result: RangeResult) -> str:
    error = result.error
    body = {
        "candidate": result.candidate,
        "since": result.last_applied,
        "verified": result.ok,
        "error": error.message if error is not None else None,
        "complete": result.complete,
        "applicable": result.applicable if result.ok else None,
        "pending": [
            {
                "sha": item.sha,
                "what": item.what,
                "needed": item.needed,
                "approvers": list(item.approvers),
                "others": list(item.others),
                "message": item.message,
            }
            for item in result.pending
        ],
        "rotations": [
            {
                "commit": rotation.commit,
                "effective": rotation.effective,
                "approvers": list(rotation.approvers),
            }
            for rotation in result.rotations
        ],
        "commits": [
            {
                "sha": v.sha,
                "principal": v.principal,
                "root": v.root,
                "fingerprint": v.fingerprint,
                "verdict": v.verdict,
                "reason": v.reason,
                "committerTime": v.committer_time,
                "emergency": v.emergency,
                "emergencyReason": v.emergency_reason or None,
            }
            for v in result.verdicts
        ],
    }
    return json.dumps(body, indent=2) + "\n"
