"""The `outpost` command line: one module per command under `reconciler.cli`.

Each command module exposes `register(subparsers)`, which adds its parser and
sets `func` to a callable taking the parsed namespace and returning the exit
code. Exit codes follow one rule across commands: 0 clean, 1 findings (or a
refused input), 2 usage or I/O error.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from reconciler.core.errors import OutpostError

COMMANDS: tuple[str, ...] = (
    "validate",
    "site",
    "secrets",
    "policy",
    "schedule",
    "render",
    "diff",
    "verify",
    "bundle",
    "images",
    "fleet",
    "agent",
)

EXIT_OK = 0
EXIT_FINDINGS = 1
EXIT_ERROR = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="outpost",
        description="GitOps for retail stores and industrial plants.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        module = importlib.import_module(f"reconciler.cli.{name}")
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
    except OutpostError as exc:
        print(f"outpost: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
