"""``outpost images SITE``: every image a site's slice pulls, to mirror into its registry.

Text output is one image per line, ready for ``skopeo``/Hauler/Zarf scripts;
JSON adds each image's kind (container or VM disk), digest and the objects
(with file:line) that use it. Exit 1 when an image is not pinned by digest
(it cannot be mirrored reproducibly), 2 when the site cannot be rendered.

Imports nothing heavy at module level: the agent's start-up builds this parser too.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from reconciler.cli import COMMANDS, EXIT_ERROR, EXIT_FINDINGS, EXIT_OK, add_repo_argument, example

FORMATS = ("text", "json")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "images",
        help=COMMANDS["images"],
        description=(
            "Render SITE's slice from the working tree at --repo, or from the commit --rev, "
            "and list every container image and KubeVirt VM disk image it uses, sorted and "
            "deduplicated. With --since REV, only the images the change since REV adds (what "
            "a bundle created with the same --since needs mirrored: the plant has the rest). "
            "Exit 0 when every image is pinned by digest, 1 when one is not, 2 when the site "
            "cannot be rendered or on usage/I/O errors."
        ),
        epilog=example(
            "outpost images cz-ova-plant --rev HEAD",
            "outpost images cz-ova-plant --since 3f2c1a9 --rev HEAD | xargs -n1 skopeo copy …",
        ),
    )
    parser.add_argument("site", metavar="SITE", help="site id (the folder name under sites/)")
    parser.add_argument("--rev", metavar="REV", help="git revision to read (default: working tree)")
    parser.add_argument(
        "--since",
        metavar="REV",
        help="only images not already used at REV (the revision the plant runs)",
    )
    add_repo_argument(parser)
    parser.add_argument("-o", "--output", choices=FORMATS, default="text", help="output format")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from reconciler.cli.render import open_tree
    from reconciler.core.errors import OutpostError
    from reconciler.core.model import Repository
    from reconciler.core.render import render_site
    from reconciler.fleet.images import new_images, site_images

    try:
        repo = Repository(open_tree(args.repo, args.rev))
        rendered = render_site(repo, args.site)
        images = site_images(rendered)
        if args.since:
            old = Repository(open_tree(args.repo, args.since))
            # A site that did not exist at --since needs every image of its slice.
            before = site_images(render_site(old, args.site)) if args.site in old.site_ids else []
            images = new_images(before, images)
    except OutpostError as exc:
        print(f"outpost images: {exc}", file=sys.stderr)
        return EXIT_ERROR
    if args.output == "json":
        document = {
            "site": args.site,
            "revision": rendered.revision,
            "since": args.since,
            "images": [image.to_json() for image in images],
        }
        sys.stdout.write(json.dumps(document, indent=2, sort_keys=True) + "\n")
    else:
        sys.stdout.write("".join(f"{name}\n" for name in dict.fromkeys(i.image for i in images)))
    loose = sorted({i.image for i in images if i.digest is None})
    for image in loose:
        users = ", ".join(
            f"{u.object} ({u.origin})" for i in images if i.image == image for u in i.users
        )
        print(
            f"outpost images: {image} is not pinned by digest (used by {users}); a tag can "
            "move between mirroring and pulling — pin it as name@sha256:...",
            file=sys.stderr,
        )
    return EXIT_FINDINGS if loose else EXIT_OK
