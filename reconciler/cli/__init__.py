"""The `outpost` command line: one module per command under `reconciler.cli`.

Each command module exposes `register(subparsers)`, which adds its parser and
sets `func` to a callable taking the parsed namespace and returning the exit
code. Exit codes follow one rule across commands: 0 clean, 1 findings (or a
refused input), 2 usage or I/O error.

Habits every command keeps, checked by ``tests/test_cli_habits.py``:

- every parser's ``--help`` ends with an ``Example:`` (its ``epilog``);
- the configuration repository is ``--repo DIR`` (default: the current
  directory) wherever a command reads one; the positional ``PATH`` some
  commands used to take is still accepted, hidden from the help;
- JSON output uses camelCase keys, like the Kubernetes objects it sits next to.

An exception that is not Outpost's own is a defect, never the input's fault: it
exits 2 (never 1, which means findings) with one line naming the file read last,
and prints the stack only with ``--debug``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Iterator, Sequence

from reconciler import __version__
from reconciler.core.errors import OutpostError

COMMANDS: tuple[str, ...] = (
    "validate",
    "site",
    "app",
    "secrets",
    "policy",
    "schedule",
    "render",
    "diff",
    "verify",
    "heartbeat",
    "bundle",
    "images",
    "fleet",
    "agent",
    "node",
    "completion",
)

EXIT_OK = 0
EXIT_FINDINGS = 1
EXIT_ERROR = 2

DISTRIBUTION = "outpost-gitops"
_REPO_POSITIONAL = "repo_positional"


class HelpFormatter(argparse.HelpFormatter):
    """Wraps descriptions as usual but prints an ``Example:`` epilog line by line."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if text.startswith("Example"):
            return "\n".join(indent + line for line in text.splitlines())
        return super()._fill_text(text, width, indent)


def example(*commands: str) -> str:
    """An epilog of one or more example command lines."""
    title = "Example:" if len(commands) == 1 else "Examples:"
    return "\n".join([title, *(f"  {c}" for c in commands)])


def add_repo_argument(
    parser: argparse.ArgumentParser,
    *,
    positional_alias: bool = False,
    default: str | None = ".",
    required: bool = False,
    purpose: str = "",
) -> None:
    """``--repo DIR``, the one way every command names the configuration repository.

    ``positional_alias`` keeps a command's old positional PATH working (CI lines and
    pre-commit hooks written against it), hidden from the help. ``default=None`` is for
    commands that do without it; ``purpose`` says what the command reads in it.
    """
    text = "the configuration repository" + (f" {purpose}" if purpose else "")
    if default is not None and not required:
        text += f" (default: {default})"
    parser.add_argument("--repo", default=default, required=required, metavar="DIR", help=text)
    if positional_alias:
        parser.add_argument(_REPO_POSITIONAL, nargs="?", default=None, help=argparse.SUPPRESS)


def subparsers_of(parser: argparse.ArgumentParser) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """The direct subcommands of ``parser``: (name, parser), aliases left out."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            seen: set[int] = set()
            for name, sub in action.choices.items():
                if id(sub) not in seen:
                    seen.add(id(sub))
                    yield name, sub


def walk(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """Every parser of the command line with its command path, the root first."""
    yield path, parser
    for name, sub in subparsers_of(parser):
        yield from walk(sub, (*path, name))


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole command line, or with ``only`` (one of `COMMANDS`) just that command's part.

    `main` builds only the command it runs: importing and registering all sixteen
    command modules is a noticeable share of a quick command such as
    ``outpost fleet status``. ``outpost --help`` and an unknown command get all of them.
    """
    parser = argparse.ArgumentParser(
        prog="outpost",
        description="GitOps for retail stores and industrial plants.",
        epilog=example(
            "outpost validate --repo .",
            "outpost diff --base origin/main --summary",
            "outpost COMMAND --help",
        ),
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"outpost {__version__} ({DISTRIBUTION} {__version__})",
    )
    parser.add_argument("--debug", action="store_true", help="print the stack of an internal error")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in (only,) if only in COMMANDS else COMMANDS:
        module = importlib.import_module(f"reconciler.cli.{name}")
        module.register(subparsers)
    for _, each in walk(parser):
        each.formatter_class = HelpFormatter
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in arguments if not a.startswith("-")), None)
    parser = build_parser(only=command)
    debug = "--debug" in arguments  # accepted anywhere: `outpost validate . --debug` too
    args = parser.parse_args([a for a in arguments if a != "--debug"])
    args.debug = debug
    positional = getattr(args, _REPO_POSITIONAL, None)
    if positional is not None:
        args.repo = positional
    try:
        code: int = args.func(args)
    except OutpostError as exc:
        print(f"outpost: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # a defect: one line for the operator, the stack on request
        from reconciler.core.source import last_read

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
