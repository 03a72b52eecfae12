"""The `outpost` command line: one module per command under `reconciler.cli`.

Each command module exposes `register(subparsers)`, which adds its parser and
sets `func` to a callable taking the parsed namespace and returning the exit
code. Exit codes follow one rule across commands: 0 clean, 1 findings (or a
refused input), 2 usage or I/O error.

An exception that is not Outpost's own is a defect, never the input's fault: it
exits 2 (never 1, which means findings) with one line naming the file read last,
and prints the stack only with ``--debug``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from reconciler.errors import OutpostError

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
    parser.add_argument("--debug", action="store_true", help="print the stack of an internal error")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        module = importlib.import_module(f"reconciler.cli.{name}")
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    arguments = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in arguments  # accepted anywhere: `outpost validate . --debug` too
    args = parser.parse_args([a for a in arguments if a != "--debug"])
    args.debug = debug
    try:
        code: int = args.func(args)
    except OutpostError as exc:
        print(f"outpost: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # a defect: one line for the operator, the stack on request
        from reconciler.source import last_read

        where = f" (last file read: {last_read()})" if last_read() else ""
        text = str(exc).splitlines()[0] if str(exc) else ""
        print(
            f"outpost: internal error{where}: {type(exc).__name__}: {text[:300]}"
            f"{'' if args.debug else '; run again with --debug for the stack'}",
            file=sys.stderr,
        )
        if args.debug:
            import traceback

            traceback.print_exc()
        return EXIT_ERROR
    return code


if __name__ == "__main__":
    sys.exit(main())
