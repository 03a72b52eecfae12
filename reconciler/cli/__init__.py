"""The `outpost` command line: one module per command under `reconciler.cli`.

Each command module exposes `register(subparsers)`, which adds its parser and
sets `func` to a callable taking the parsed namespace and returning the exit
code. Exit codes follow one rule across commands: 0 clean, 1 findings (or a
refused input), 2 usage or I/O error. Its one-line ``help`` is ``COMMANDS[name]``,
so the root's help is written without importing any command module: a command's
module is imported only when that command runs (``build_parser``), and each module
imports its libraries (pygit2, yaml, cel, jsonschema, cryptography) inside the
functions that use them, so ``outpost --help`` starts in about Python's own time.

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
from collections.abc import Collection, Iterator, Sequence

from reconciler import __version__

COMMANDS: dict[str, str] = {
    "validate": "check every document against its schema, its references and the policies",
    "site": "manage site folders",
    "app": "work on apps: vendor a Helm chart or Kustomize base into manifests",
    "secrets": "per-site age keys and SOPS-encrypted secrets",
    "policy": "work with the CEL policies in policies/",
    "schedule": "show when each site takes a change: wave, update window, freezes",
    "render": "print one site's rendered slice (the Kubernetes objects it runs)",
    "diff": "show how each affected site's slice changes between two revisions",
    "verify": "verify the signatures and signer scopes of every commit in a range",
    "heartbeat": "sign the heartbeat tag onto the branch head with the time (CI, on a schedule)",
    "bundle": "carry signed history to an air-gapped plant as a git bundle",
    "images": "list the container and VM disk images a site needs (to mirror them)",
    "fleet": "collect status reports from sites and show which sites run what",
    "agent": "run the node agent or show its status",
    "node": "set up this machine as a site's node",
    "completion": "print a bash or zsh completion script for outpost",
}

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


def build_parser(commands: Collection[str] = tuple(COMMANDS)) -> argparse.ArgumentParser:
    """The command line, with ``commands`` in full and every other command as its summary.

    Only the modules of ``commands`` are imported: ``main`` passes the one command
    given, so ``outpost --help`` imports no command module and ``outpost validate``
    only ``reconciler.cli.validate``. A summary-only command parses nothing; it
    gives the root's help, and the choices an unknown command is told about, the
    same text the full parser does (``COMMANDS`` is each command's ``help``).
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
    for name, summary in COMMANDS.items():
        if name in commands:
            importlib.import_module(f"reconciler.cli.{name}").register(subparsers)
        else:
            subparsers.add_parser(name, help=summary)
    for _, each in walk(parser):
        each.formatter_class = HelpFormatter
    return parser


def command_named(arguments: Sequence[str]) -> str | None:
    """The command ``arguments`` run: the first word not an option, if it is a command.

    The root's own options take no value, so the first other word is the command.
    """
    for word in arguments:
        if word == "--":
            return None
        if not word.startswith("-"):
            return word if word in COMMANDS else None
    return None


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in arguments  # accepted anywhere: `outpost validate . --debug` too
    arguments = [a for a in arguments if a != "--debug"]
    command = command_named(arguments)
    parser = build_parser(() if command is None else (command,))
    args = parser.parse_args(arguments)
    args.debug = debug
    positional = getattr(args, _REPO_POSITIONAL, None)
    if positional is not None:
        args.repo = positional
    try:
        code: int = args.func(args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        return _failed(exc, debug=args.debug)
    return code


def _failed(exc: Exception, *, debug: bool) -> int:
    """Outpost's own error in one line; any other is a defect: one line, the stack on request."""
    from reconciler.core.errors import OutpostError
    from reconciler.core.source import last_read

    if isinstance(exc, OutpostError):
        print(f"outpost: {exc}", file=sys.stderr)
        return EXIT_ERROR
    where = f" (last file read: {last_read()})" if last_read() else ""
    text = str(exc).splitlines()[0] if str(exc) else ""
    print(
        f"outpost: internal error{where}: {type(exc).__name__}: {text[:300]}"
        f"{'' if debug else '; run again with --debug for the stack'}",
        file=sys.stderr,
    )
    if debug:
        import traceback

        traceback.print_exc()
    return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
