"""`main` builds only the command it runs; that part is the same as in the whole command line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from reconciler.cli import COMMANDS, build_parser, walk

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("command", COMMANDS)
def test_a_command_built_alone_parses_and_helps_as_in_the_whole_parser(command: str) -> None:
    whole = {path: p.format_help() for path, p in walk(build_parser()) if path[:1] == (command,)}
    alone = {
        path: p.format_help()
        for path, p in walk(build_parser((command,)))
        if path[:1] == (command,)
    }
    assert alone == whole


def test_status_imports_no_other_command_and_no_trust_code(tmp_path: Path) -> None:
    probe = (
        "import sys\n"
        "from reconciler.cli import main\n"
        f"code = main(['fleet', 'status', '--db', {str(tmp_path / 'c.db')!r}])\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('reconciler.'))\n"
        "print(code, *loaded, file=sys.stderr)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    code, *loaded = done.stderr.split()
    assert code == "0" and done.stdout == "no status reports on record\n"
    assert "reconciler.cli.fleet" in loaded
    assert not [
        m for m in loaded if m.startswith("reconciler.cli.") and m != "reconciler.cli.fleet"
    ]
    assert not [m for m in loaded if m.startswith(("reconciler.core.trust", "reconciler.node"))]
