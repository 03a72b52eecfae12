"""``outpost bundle create``: signed history for an air-gapped plant, as a git bundle file.

The bundle is made with the git command line (libgit2 cannot write bundles), so the
workstation running this needs git on PATH. The operator's clone is only read.

Imports nothing heavy at module level: the agent's start-up builds this parser too.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from reconciler.cli import COMMANDS, EXIT_ERROR, EXIT_FINDINGS, EXIT_OK, add_repo_argument, example


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "bundle",
        help=COMMANDS["bundle"],
        description="Make git bundles that an air-gapped plant's agent imports from its inbox.",
        epilog=example(
            "outpost bundle create --site cz-ova-plant --since 3f2c1a9 --trust allowed_signers "
            "plant.bundle"
        ),
    )
    commands = parser.add_subparsers(dest="bundle_command", metavar="COMMAND", required=True)
    create = commands.add_parser(
        "create",
        help="write a bundle of --since..--rev (or the full history) and its manifest",
        description=(
            "Write OUT, a git bundle of the commits after --since up to --rev (or the whole "
            "history of --rev with --full), and OUT.manifest.json (site, from, to, created, "
            "sha256, size). Use as --since the revision the plant runs (its status report "
            "names it): the bundle then carries only what the plant does not have. Needs the "
            "git command line. With --trust (the plant's allowed_signers) nothing is written "
            "unless the plant would take it: every commit verified against those signers and "
            "the delegations, and the site's slice validated, rendered and policy-checked. "
            "Exit 0 when written, 1 when refused (unknown revision, --since not an ancestor of "
            "--rev, nothing to bundle, a commit or slice the plant would refuse), 2 on usage "
            "or I/O errors."
        ),
        epilog=example(
            "outpost bundle create --site cz-ova-plant --since 3f2c1a9 --trust allowed_signers "
            "plant.bundle"
        ),
    )
    create.add_argument("--site", required=True, metavar="SITE", help="the plant's site id")
    since = create.add_mutually_exclusive_group(required=True)
    since.add_argument("--since", metavar="REV", help="the revision the plant already has")
    since.add_argument(
        "--full", action="store_true", help="the whole history of --rev (a first install)"
    )
    create.add_argument("--rev", default="HEAD", metavar="REV", help="bundle up to this revision")
    create.add_argument(
        "--trust",
        metavar="FILE",
        help="the plant's root signers (allowed_signers): refuse what the plant would refuse",
    )
    add_repo_argument(create)
    create.add_argument("out", metavar="OUT", help="the bundle file to write, e.g. plant.bundle")
    create.set_defaults(func=run_create)

    publish = commands.add_parser(
        "publish",
        help="keep a feed of bundles for nodes to pull from a static server or CDN",
        description=(
            "Bring the feed in OUT_DIR up to --branch: an incremental bundle from the head "
            "published before, a full bundle for new nodes, and index.json naming them. "
            "Publishing the same head again writes nothing. Steps older than --keep leave "
            "the chain. Upload bundles/ first and index.json last. Needs the git command "
            "line and the full history (no shallow clone). Exit 0 when the feed is current, "
            "1 when refused (no such branch, history unrelated to the feed), 2 on I/O errors."
        ),
        epilog=example("outpost bundle publish --repo . --branch main --keep 30d public/feed"),
    )
    publish.add_argument("--branch", required=True, metavar="BRANCH", help="e.g. main")
    add_repo_argument(publish)
    publish.add_argument(
        "--keep",
        default="30d",
        metavar="DURATION",
        help="how long steps stay in the chain for offline nodes (default 30d)",
    )
    publish.add_argument("out_dir", metavar="OUT_DIR", help="the feed folder to update")
    publish.set_defaults(func=run_publish)


def run_create(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime
    from pathlib import Path

    from reconciler.core.errors import OutpostError
    from reconciler.fleet.bundle import BundleError, create_bundle, manifest_path

    out = Path(args.out)
    trust = None
    if args.trust:
        from reconciler.core.trust.allowed_signers import parse_allowed_signers

        try:
            trust = parse_allowed_signers(Path(args.trust).read_bytes(), args.trust)
        except OSError as exc:
            print(
                f"outpost bundle create: cannot read the trust file {args.trust}: {exc.strerror}",
                file=sys.stderr,
            )
            return EXIT_ERROR
        except OutpostError as exc:
            print(f"outpost bundle create: {exc}", file=sys.stderr)
            return EXIT_ERROR
    try:
        manifest = create_bundle(
            Path(args.repo),
            args.site,
            None if args.full else args.since,
            args.rev,
            out,
            now=datetime.now(UTC),  # the CLI is the edge: the one place that reads the clock
            trust=trust,
        )
    except BundleError as exc:
        print(f"outpost bundle create: {exc}", file=sys.stderr)
        return EXIT_FINDINGS
    except OutpostError as exc:
        print(f"outpost bundle create: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except OSError as exc:
        print(f"outpost bundle create: cannot write {out}: {exc.strerror}", file=sys.stderr)
        return EXIT_ERROR
    span = f"{manifest.from_[:12]}..{manifest.to[:12]}" if manifest.from_ else manifest.to[:12]
    print(
        f"wrote {out} ({manifest.size} bytes, {manifest.commits} commit"
        f"{'' if manifest.commits == 1 else 's'}, {span}, for {manifest.site})"
    )
    print(f"wrote {manifest_path(out)} (sha256 {manifest.sha256})")
    return EXIT_OK


def run_publish(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime
    from pathlib import Path

    from reconciler.core.errors import OutpostError
    from reconciler.fleet.feed import publish_feed
    from reconciler.node.config import parse_duration
    from reconciler.node.inbox import BundleError

    out = Path(args.out_dir)
    try:
        keep = parse_duration(args.keep, where="--keep")
        result = publish_feed(
            Path(args.repo),
            args.branch,
            out,
            now=datetime.now(UTC),  # the CLI is the edge: the one place that reads the clock
            keep_seconds=keep,
        )
    except BundleError as exc:
        print(f"outpost bundle publish: {exc}", file=sys.stderr)
        return EXIT_FINDINGS
    except OutpostError as exc:
        print(f"outpost bundle publish: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except OSError as exc:
        print(f"outpost bundle publish: cannot write {out}: {exc.strerror}", file=sys.stderr)
        return EXIT_ERROR
    index = result.index
    if result.note:
        print(f"note: {result.note}")
    if result.outcome == "unchanged":
        print(f"{out}: {index.branch} is already published at {index.head[:12]}")
    for name in result.written:
        print(f"wrote {out / name}")
    for name in result.removed:
        print(f"removed {out / name}")
    print(
        f"{out}/index.json: head {index.head[:12]}, {len(index.chain)} step(s) kept, "
        f"latest {index.latest.name} ({index.latest.manifest.size} bytes, sha256 "
        f"{index.latest.manifest.sha256})"
    )
    return EXIT_OK
