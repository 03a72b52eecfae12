"""The command line's habits: --version, an example in every help, completion from the parser,
one name for the repository, one JSON key style."""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pygit2
import pytest

from reconciler import __version__
from reconciler.cli import COMMANDS, build_parser, command_named, main, walk

ROOT = Path(__file__).resolve().parents[1]
PATHS = [path for path, _ in walk(build_parser())]


def test_the_parser_walk_reaches_every_subcommand() -> None:
    names = {" ".join(path) for path in PATHS}
    for expected in (
        "",
        "validate",
        "secrets sync",
        "secrets keygen",
        "secrets sops-config",
        "fleet status",
        "bundle create",
        "agent run",
        "completion",
    ):
        assert expected in names


@pytest.mark.parametrize("path", PATHS, ids=lambda p: " ".join(p) or "outpost")
def test_every_help_ends_with_an_example(
    path: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main([*path, "--help"])
    assert exited.value.code == 0
    text = capsys.readouterr().out
    example = re.search(r"^Examples?:\n((?:  outpost .*\n?)+)", text, re.MULTILINE)
    assert example, f"`outpost {' '.join(path)} --help` has no example:\n{text}"
    # the example runs the command it documents (the root's may name any command)
    first = example.group(1).splitlines()[0].split()
    assert first[1 : 1 + len(path)] == list(path) or not path


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert (
        capsys.readouterr().out.strip() == f"outpost {__version__} (outpost-gitops {__version__})"
    )


# -- the repository is --repo everywhere -------------------------------------------------


def _visible_arguments() -> Iterator[tuple[tuple[str, ...], argparse.Action]]:
    for path, parser in walk(build_parser()):
        for action in parser._actions:
            if action.help != argparse.SUPPRESS:
                yield path, action


def test_the_repository_is_named_by_repo_only() -> None:
    """Every visible argument that names the configuration repository is --repo DIR."""
    naming = []
    for path, action in _visible_arguments():
        if "repository" in str(action.help or "") and "configuration repository" in str(
            action.help
        ):
            naming.append((path, tuple(action.option_strings), action.metavar))
    assert naming, "no command takes the repository?"
    for path, options, metavar in naming:
        assert (options, metavar) == (("--repo",), "DIR"), path
    readers = {path for path, _, _ in naming}
    for command in (
        ("validate",),
        ("schedule",),
        ("render",),
        ("diff",),
        ("images",),
        ("verify",),
        ("policy", "test"),
        ("site", "new"),
        ("bundle", "create"),
        ("fleet", "status"),
        ("secrets", "check"),
        ("secrets", "sync"),
    ):
        assert command in readers, command


PLAIN_SECRET = "apiVersion: v1\nkind: Secret\nmetadata: {name: plain}\nstringData: {a: b}\n"


@pytest.mark.parametrize(
    ("command", "broken", "text"),
    [
        (["validate", "--no-policies"], "sites/de-muc-0007/hardware.yaml", "not: [valid"),
        (["secrets", "check"], "sites/de-muc-0007/secrets/plain.sops.yaml", PLAIN_SECRET),
    ],
    ids=["validate", "secrets check"],
)
def test_the_old_positional_path_still_works(
    tmp_path: Path, command: list[str], broken: str, text: str, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = tmp_path / "repo"
    for folder in ("sites", "fleets", "apps", "policies"):
        shutil.copytree(ROOT / folder, repo / folder)
    shutil.copyfile(ROOT / ".sops.yaml", repo / ".sops.yaml")
    (repo / broken).write_text(text)
    by_option = main([*command, "--repo", str(repo)])
    with_option = capsys.readouterr().out
    by_position = main([*command, str(repo)])
    assert (by_option, by_position) == (1, 1)
    assert capsys.readouterr().out == with_option
    assert broken in with_option


def test_help_does_not_show_the_hidden_positional(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["validate", "--help"])
    usage = capsys.readouterr().out.split("\n\n")[0]
    assert "--repo DIR" in usage and "repo_positional" not in usage


# -- completion ----------------------------------------------------------------------------


def _script(shell: str, capsys: pytest.CaptureFixture[str]) -> str:
    assert main(["completion", shell]) == 0
    return capsys.readouterr().out


def _bash_complete(script: str, line: str) -> list[str]:
    words = line.split(" ")
    program = (
        f"{script}\n"
        f"COMP_WORDS=({' '.join(repr(w) for w in words)})\n"
        f"COMP_CWORD={len(words) - 1}\n"
        "_outpost\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    done = subprocess.run(
        ["bash", "--norc", "--noprofile", "-c", program],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return [w for w in done.stdout.splitlines() if w]


# `outpost fleet`'s subcommands, in the order its help lists them.
FLEET_COMMANDS = ["ingest", "status", "serve", "promote", "token"]


def test_bash_completion(capsys: pytest.CaptureFixture[str]) -> None:
    script = _script("bash", capsys)
    assert _bash_complete(script, "outpost fl") == ["fleet"]
    assert _bash_complete(script, "outpost fleet ") == FLEET_COMMANDS
    assert sorted(_bash_complete(script, "outpost diff -o ")) == ["json", "markdown", "text"]
    assert "--summary" in _bash_complete(script, "outpost diff --s")
    assert "--version" in _bash_complete(script, "outpost --")
    validate = _bash_complete(script, "outpost validate --")
    assert "--repo" in validate and "--changed-since" in validate
    assert not any("positional" in w for w in validate)
    assert _bash_complete(script, "outpost secrets s") == ["sync", "show", "sops-config"]
    assert _bash_complete(script, "outpost agent run --log-format j") == ["json"]
    # after an option that takes a path, file names (here: of the cwd) are offered
    assert "pyproject.toml" in _bash_complete(script, "outpost validate --repo pyproj")


def _zsh_complete(script: str, line: str) -> list[str]:
    words = line.split(" ")
    program = (
        'compadd() { [[ $1 == -- ]] && shift; print -l -- "$@"; }\n'
        "_files() { print -- '<files>'; }\n"
        "compdef() { :; }\n"
        f"{script}\n"
        f"words=({' '.join(repr(w) for w in words)})\n"
        f"CURRENT={len(words)}\n"
        "_outpost\n"
    )
    done = subprocess.run(
        ["zsh", "-f", "-c", program], capture_output=True, text=True, timeout=30, check=True
    )
    return [w for w in done.stdout.splitlines() if w]


def test_zsh_completion(capsys: pytest.CaptureFixture[str]) -> None:
    script = _script("zsh", capsys)
    assert script.startswith("#compdef outpost")
    top = _zsh_complete(script, "outpost ")
    assert {"validate", "fleet", "completion"} <= set(top)
    assert _zsh_complete(script, "outpost fleet ") == FLEET_COMMANDS
    assert _zsh_complete(script, "outpost render x -o ") == ["yaml", "json"]
    assert _zsh_complete(script, "outpost render --repo ") == ["<files>"]
    assert "--log-format" in _zsh_complete(script, "outpost agent run -")


# -- one JSON key style --------------------------------------------------------------------

# Values that are data, not Outpost's own keys: Kubernetes objects and their labels.
_DATA_KEYS = {"object", "nodeLabels", "report", "change"}


def _keys(value: Any, where: str = "") -> Iterator[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield f"{where}.{key}"
            if key not in _DATA_KEYS:
                yield from _keys(item, f"{where}.{key}")
    elif isinstance(value, list):
        for item in value:
            yield from _keys(item, f"{where}[]")


def _snake(document: Any) -> list[str]:
    return [k for k in _keys(document) if "_" in k.rsplit(".", 1)[-1]]


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example fleet in a git repository, then a commit that changes a fleet's app."""
    repo = tmp_path_factory.mktemp("json") / "repo"
    for folder in ("sites", "fleets", "apps", "policies", "schemas"):
        shutil.copytree(ROOT / folder, repo / folder)
    git = pygit2.init_repository(str(repo))
    signature = pygit2.Signature("Test", "test@example.com", 1_700_000_000, 0)

    def commit(message: str) -> None:
        git.index.add_all()
        git.index.write()
        tree = git.index.write_tree()
        parents = [] if git.head_is_unborn else [git.head.target]
        git.create_commit("HEAD", signature, signature, message, tree, parents)

    commit("example fleet")
    text = (repo / "sites/de-muc-0007/site.yaml").read_text()
    (repo / "sites/de-muc-0007/site.yaml").write_text(text.replace("Europe/Berlin", "UTC", 1))
    commit("change")
    return repo


@pytest.mark.parametrize(
    "command",
    [
        ["render", "de-muc-0007", "-o", "json"],
        ["diff", "--base", "HEAD~1", "--head", "HEAD", "-o", "json"],
        ["schedule", "--base", "HEAD~1", "--head", "HEAD", "-o", "json"],
        ["images", "plant-ostrava", "-o", "json"],
        ["fleet", "status", "-o", "json"],
    ],
    ids=lambda c: c[0],
)
def test_json_keys_are_camel_case(
    history: Path,
    command: list[str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("OUTPOST_FLEET_STATUS", str(tmp_path / "none.json"))
    code = main([*command, "--repo", str(history)])
    assert code in (0, 1), capsys.readouterr().err
    document = json.loads(capsys.readouterr().out)
    assert len(list(_keys(document))) > 1, command
    assert _snake(document) == []


def test_agent_status_json_is_camel_case() -> None:
    from datetime import UTC, datetime

    from reconciler.node.agent import TickReport, status_document
    from reconciler.node.state import AgentState

    state = AgentState(
        site="s",
        applied="a" * 40,
        applied_at=1.0,
        failed=("b" * 40,),
        failed_reasons={"b" * 40: "x"},
        refused={"c" * 40: "unsigned"},
        last_success_at=2.0,
    )
    report = TickReport(error="e", error_at="t", leftover=["Namespace/pos"], removed=1)
    document = status_document("s", state, report, datetime.now(UTC))
    assert _snake(document) == []


def test_python_m_reconciler_cli_version() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "reconciler.cli", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=True,
    )
    assert __version__ in done.stdout


# -- start-up: a command imports only what it runs ----------------------------------------

HEAVY = ("cel", "pygit2", "jsonschema", "yaml", "cryptography")

_IMPORTED_BY_HELP = """
import contextlib, io, json, sys
from reconciler.cli import main
found = {}
for path in json.loads(sys.argv[1]):
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            main([*path, "--help"])
        except SystemExit:
            pass
    found[" ".join(path)] = sorted({m.split(".")[0] for m in sys.modules} & set(sys.argv[2:]))
print(json.dumps(found))
"""


def test_help_imports_none_of_the_heavy_libraries() -> None:
    """`outpost --help` and every command's --help, in a fresh process: no pygit2, yaml, cel,
    jsonschema or cryptography (they cost most of a command's start-up), root help first."""
    paths = [list(path) for path in PATHS]
    done = subprocess.run(
        [sys.executable, "-c", _IMPORTED_BY_HELP, json.dumps(paths), *HEAVY],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        check=True,
    )
    found = json.loads(done.stdout)
    assert list(found) == [" ".join(path) for path in paths]
    assert {path: heavy for path, heavy in found.items() if heavy} == {}


def test_help_imports_no_command_module() -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import contextlib, io, sys\nfrom reconciler.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            "    try:\n        main(['--help'])\n    except SystemExit:\n        pass\n"
            "print(' '.join(sorted(m for m in sys.modules if m.startswith('reconciler'))))",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=True,
    )
    assert done.stdout.split()[-2:] == ["reconciler", "reconciler.cli"]


def test_the_lazy_parser_helps_like_the_whole_one() -> None:
    """Built for one command (as `main` builds it), every help text is the full parser's."""
    whole = {path: each.format_help() for path, each in walk(build_parser())}
    root = build_parser(())
    assert root.format_help() == whole[()]
    for name in COMMANDS:
        lazy = {path: each.format_help() for path, each in walk(build_parser((name,)))}
        assert {p: h for p, h in lazy.items() if p[:1] == (name,)} == {
            p: h for p, h in whole.items() if p[:1] == (name,)
        }
        assert lazy[()] == whole[()]


@pytest.mark.parametrize(
    ("arguments", "command"),
    [
        (["--help"], None),
        ([], None),
        (["validate", "--repo", "x"], "validate"),
        (["--debug", "fleet", "status"], "fleet"),
        (["-h", "agent"], "agent"),
        (["nope", "validate"], None),
        (["--", "validate"], None),
    ],
)
def test_the_command_is_the_first_word_not_an_option(
    arguments: list[str], command: str | None
) -> None:
    assert command_named(arguments) == command
