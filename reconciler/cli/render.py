"""``outpost render SITE``: print the objects one site runs, from a working tree or a revision."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from reconciler.cli import COMMANDS, EXIT_ERROR, EXIT_OK, add_repo_argument, example

FORMATS = ("yaml", "json")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "render",
        help=COMMANDS["render"],
        description=(
            "Render SITE's slice from the working tree at --repo, or from the commit --rev "
            "(read from git objects, no checkout). Secrets are listed, never decrypted. "
            "Exit 0 when rendered, 2 when the site cannot be rendered or on usage/I/O errors."
        ),
        epilog=example("outpost render de-muc-0007 --rev HEAD -o json"),
    )
    parser.add_argument("site", metavar="SITE", help="site id (the folder name under sites/)")
    parser.add_argument(
        "--rev", metavar="REV", help="git revision to render (default: working tree)"
    )
    add_repo_argument(parser)
    parser.add_argument("-o", "--output", choices=FORMATS, default="yaml", help="output format")
    parser.set_defaults(func=run)


def open_tree(repo_dir: str, rev: str | None) -> Any:
    """A working tree, or the commit ``rev`` of the git repository at ``repo_dir``."""
    from pathlib import Path

    from reconciler.core.source import WorkdirTree

    if rev is None:
        return WorkdirTree(Path(repo_dir))
    import pygit2

    from reconciler.core.errors import SourceUnavailable
    from reconciler.core.source import CommitTree

    found = pygit2.discover_repository(repo_dir)
    if found is None:
        raise SourceUnavailable(f"{repo_dir} is not inside a git repository; --rev needs one")
    return CommitTree(pygit2.Repository(found), rev)


def run(args: argparse.Namespace) -> int:
    from reconciler.core.errors import OutpostError
    from reconciler.core.model import Repository
    from reconciler.core.render import render_site, to_json, to_yaml

    try:
        repo = Repository(open_tree(args.repo, args.rev))
        rendered = render_site(repo, args.site)
    except OutpostError as exc:
        print(f"outpost render: {exc}", file=sys.stderr)
        return EXIT_ERROR
    sys.stdout.write(to_json(rendered) if args.output == "json" else to_yaml(rendered))
    return EXIT_OK
