"""``outpost site new ID --fleet F``: scaffold a site folder that validates."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from reconciler.cli import COMMANDS, EXIT_ERROR, EXIT_FINDINGS, EXIT_OK, add_repo_argument, example


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "site",
        help=COMMANDS["site"],
        description="Manage the site folders under sites/.",
        epilog=example("outpost site new de-dre-0301 --fleet retail-eu --timezone Europe/Berlin"),
    )
    site_sub = parser.add_subparsers(dest="site_command", metavar="SUBCOMMAND", required=True)
    new = site_sub.add_parser(
        "new",
        help="scaffold sites/ID/ (site.yaml, hardware.yaml) for a fleet",
        description=(
            "Write sites/ID/site.yaml and hardware.yaml. Values only the site's people know "
            "(node name, machine id) are written as REPLACE-ME placeholders that fail "
            "`outpost validate` until they are filled in; a time zone taken from the fleet "
            "instead of --timezone is marked as a guess."
        ),
        epilog=example("outpost site new de-dre-0301 --fleet retail-eu --timezone Europe/Berlin"),
    )
    new.add_argument("site_id", metavar="ID")
    new.add_argument("--fleet", required=True, help="the fleet the site joins")
    new.add_argument("--timezone", help="IANA time zone (default: the fleet's most common)")
    add_repo_argument(new)
    new.set_defaults(func=run_new)
    accept = site_sub.add_parser(
        "accept",
        help="record an enrolled node's keys (its enrollment request) in its site's folder",
        description=(
            "Verify REQUEST (written and signed by `outpost node enroll` on the node) and check "
            "it against sites/SITE/hardware.yaml: the node, its machine id and serial. Then "
            "record the node's public key in hardware.yaml and the site's new age recipient in "
            "site.yaml and .sops.yaml, and re-encrypt the site's secrets to it and the fleets' "
            "break-glass keys (decrypting with --key, a break-glass key or the old site key). "
            "A replaced box's key and recipient are replaced. Nothing is committed: the command "
            "prints the git commands. Exit 0, 1 refused, 2 errors."
        ),
        epilog=example(
            "outpost site accept enrollment-request.json --repo . --key ~/break-glass.agekey"
        ),
    )
    accept.add_argument("request", metavar="REQUEST", help="the node's enrollment request file")
    accept.add_argument(
        "--key",
        help="an age key that decrypts the site's secrets (default: OUTPOST_AGE_KEY_FILE)",
    )
    add_repo_argument(accept)
    accept.set_defaults(func=run_accept)


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
    other = [f for f in findings if f.rule != "placeholder"]
    if has_errors(other):
        sys.stderr.write(format_text(other))
        return EXIT_FINDINGS
    print(next_steps(args.site_id, args.repo, findings))
    return EXIT_OK


def run_accept(args: argparse.Namespace) -> int:
    from reconciler.ci.accept import accept_request
    from reconciler.core.enrollment import EnrollmentRefused
    from reconciler.core.errors import OutpostError
    from reconciler.core.secrets import key_file_from_env

    root = Path(args.repo)
    key = Path(args.key) if args.key else key_file_from_env()
    try:
        done = accept_request(root, Path(args.request), key=key)
    except EnrollmentRefused as exc:
        print(f"outpost site accept: refused: {exc}", file=sys.stderr)
        return EXIT_FINDINGS
    except OutpostError as exc:
        print(f"outpost site accept: {exc}", file=sys.stderr)
        return EXIT_ERROR
    request = done.request
    where = f"{request.site}/{request.node}"
    print(f"accepted:  {where} (machine id {request.machine_id}, serial {request.serial or '-'})")
    print(
        f"node key:  {request.public_key}"
        + (" (replaces the old box's key)" if done.old_public_key else "")
    )
    print(
        f"age key:   {request.age_recipient}"
        + (" (replaces the old site key)" if done.old_recipient else "")
    )
    for path in done.written:
        print(f"changed:   {path}")
    if not done.written:
        print("nothing to change: the repository already records this request's keys")
        return EXIT_OK
    repo_arg = "" if args.repo == "." else f"-C {args.repo} "
    print("\nReview, then commit signed by a root signer:")
    print(f"  git {repo_arg}add {' '.join(done.written)}")
    print(
        f'  git {repo_arg}commit -S -m "Enroll {where}: node key {request.public_key.fingerprint}"'
    )
    return EXIT_OK


def next_steps(site_id: str, repo: str, findings: list[Any]) -> str:
    """What the operator does next, in order, with the commands."""
    left = [f for f in findings if f.rule == "placeholder"]
    repo_arg = "" if repo == "." else f" --repo {repo}"
    steps = []
    if left:
        where = ", ".join(dict.fromkeys(f"{f.path}:{f.line}" for f in left))
        steps.append(
            f"Replace the {len(left)} REPLACE-ME placeholder line(s) ({where}); "
            "`outpost validate` fails until you do. The node name must be the name the site's "
            "cluster gives its node (`kubectl get nodes` there)."
        )
    steps += [
        "Check the time zone and update windows in site.yaml (a GUESSED zone is marked).",
        f"outpost secrets init-site {site_id} --key-out {site_id}.agekey{repo_arg}"
        "   # only to add secrets before the box arrives: enrollment makes the site's own key "
        "and `site accept` re-encrypts them to it",
        f"outpost validate{repo_arg}, then a signed commit (git commit -S) and a pull request",
        "Ship the box: at first boot `outpost node enroll` finds it in hardware.yaml by its "
        "machine id and serial and writes its enrollment request; then "
        f"`outpost site accept REQUEST{repo_arg}` and a signed commit (README's 'On a node')",
    ]
    return "\n".join(["", "Next steps:", *(f"  {i}. {s}" for i, s in enumerate(steps, 1))])
