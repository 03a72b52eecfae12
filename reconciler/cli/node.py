"""``outpost node enroll``: a fresh node finds itself in the repository and sets itself up."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from reconciler.cli import COMMANDS, EXIT_ERROR, EXIT_FINDINGS, EXIT_OK, example


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "node",
        help=COMMANDS["node"],
        description="Commands run on a site's node itself, as root.",
        epilog=example(
            "outpost node enroll --repo /mnt/outpost-config --trust-root /mnt/allowed_signers "
            "--source-url https://git.example.com/retail/outpost-config.git"
        ),
    )
    sub = parser.add_subparsers(dest="node_command", metavar="SUBCOMMAND", required=True)
    enroll = sub.add_parser(
        "enroll",
        help="match this machine to its hardware.yaml entry, make its keys, write agent.yaml",
        description=(
            "Read this machine's identity (/etc/machine-id and the DMI product serial), find "
            "the one site and node whose hardware.yaml registers it at the commit enrolled from "
            "(a checkout, --repo, or a bundle, --bundle), and check that commit is signed by "
            "the trust root. Then install the trust root (print its fingerprints: compare them "
            "with operations' by phone), make the node key and the site's age key (0600, owned "
            "by --user), write the signed enrollment request for `outpost site accept`, and "
            "write agent.yaml with spec.trust.floor pinned to that commit. Refuses the wrong "
            "box, a box no store registers, and a node already enrolled. Exit 0, 1 refused, "
            "2 errors."
        ),
        epilog=example(
            "outpost node enroll --repo /mnt/outpost-config --trust-root /mnt/allowed_signers "
            "--site de-muc-0007 --source-url https://git.example.com/retail/outpost-config.git",
            "outpost node enroll --bundle /media/outpost/full.bundle --trust-root "
            "/media/outpost/allowed_signers --bundle-inbox /media/outpost",
        ),
    )
    enroll.add_argument(
        "--repo", metavar="DIR", help="the configuration repository (a checkout) to enroll from"
    )
    enroll.add_argument("--bundle", help="a full git bundle of the repository to enroll from")
    enroll.add_argument("--branch", default="main", help="the branch to follow (default: main)")
    enroll.add_argument(
        "--trust-root", required=True, help="the allowed_signers file operations handed over"
    )
    enroll.add_argument("--site", help="the store this box stands in; any other match is refused")
    enroll.add_argument("--config-dir", default="/etc/outpost", help="default: /etc/outpost")
    enroll.add_argument("--user", default="outpost", help="the agent's user (default: outpost)")
    enroll.add_argument("--state-dir", default="/var/lib/outpost", help="the agent's state")
    enroll.add_argument("--source-url", help="the git remote the node fetches from")
    enroll.add_argument("--password-file", help="a file holding the git token for --source-url")
    enroll.add_argument("--feed-url", help="a bundle feed the node follows")
    enroll.add_argument("--bundle-inbox", help="a folder where bundles arrive (air-gapped)")
    enroll.add_argument("--kubeconfig", help="the local cluster's kubeconfig for the agent")
    enroll.add_argument("--report-url", help="the collector's report URL")
    enroll.add_argument(
        "--request-out",
        help="where to write the request (default: CONFIG_DIR/enrollment-request.json)",
    )
    enroll.add_argument(
        "--first-apply",
        choices=("immediate", "gated"),
        default="immediate",
        help="a site with nothing running applies at once (immediate) or waits for its window",
    )
    enroll.add_argument(
        "--age-key",
        help="the site's age key made by its first node (a site with several nodes shares it)",
    )
    enroll.add_argument("--machine-id-file", default="/etc/machine-id", help=argparse.SUPPRESS)
    enroll.add_argument(
        "--serial-file", default="/sys/class/dmi/id/product_serial", help=argparse.SUPPRESS
    )
    enroll.set_defaults(func=run_enroll)


def _path(value: str | None) -> Path | None:
    return None if value is None else Path(value)


def run_enroll(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from reconciler.core.enrollment import EnrollmentRefused
    from reconciler.core.errors import OutpostError
    from reconciler.node.enroll import EnrollOptions, enroll

    options = EnrollOptions(
        config_dir=Path(args.config_dir),
        trust_root=Path(args.trust_root),
        repo=_path(args.repo),
        bundle=_path(args.bundle),
        branch=args.branch,
        site=args.site,
        machine_id_file=Path(args.machine_id_file),
        serial_file=Path(args.serial_file),
        user=args.user,
        state_dir=Path(args.state_dir),
        kubeconfig=_path(args.kubeconfig),
        source_url=args.source_url,
        password_file=_path(args.password_file),
        feed_url=args.feed_url,
        bundle_inbox=_path(args.bundle_inbox),
        report_url=args.report_url,
        request_out=_path(args.request_out),
        first_apply=args.first_apply,
        age_key=_path(args.age_key),
    )
    try:
        done = enroll(options, now=datetime.now(UTC))
    except EnrollmentRefused as exc:
        print(f"outpost node enroll: refused: {exc}", file=sys.stderr)
        return EXIT_FINDINGS
    except OutpostError as exc:
        print(f"outpost node enroll: {exc}", file=sys.stderr)
        return EXIT_ERROR
    node = done.node
    print(f"enrolled:    {node.site}/{node.node} ({node.where})")
    print(f"floor:       {done.floor} (spec.trust.floor)")
    print(f"trust root:  {done.trust_root}  sha256 {done.trust_sha256}")
    for key in done.trust_keys:
        print(f"             {key}")
    print("             ^ read these to operations; they must match theirs before you go on")
    print(f"node key:    {done.identity_key} (0600, {done.owner})  {done.public_key}")
    print(f"age key:     {done.age_key} (0600, {done.owner})  {done.age_recipient}")
    print(f"config:      {done.config}")
    print(f"request:     {done.request}")
    print(
        "next:        send the request to operations: `outpost site accept "
        f"{done.request.name}` in the repository, then a root-signed commit; the node's "
        "first tick after that applies the site"
    )
    return EXIT_OK
