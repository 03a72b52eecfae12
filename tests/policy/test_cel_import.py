"""Policies are compiled and evaluated with the ``cel`` binding but without its command line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

_VALIDATE_EXAMPLE = """
import json, sys
from datetime import date
from pathlib import Path
from reconciler.core.model import Repository
from reconciler.core.policy import validate_policies
from reconciler.core.source import WorkdirTree
repo = Repository(WorkdirTree(Path(sys.argv[1])))
findings = validate_policies(repo, list(repo.site_ids), today=date(2026, 6, 1))
print(json.dumps({
    "findings": [f.message for f in findings],
    "loaded": sorted(m for m in sys.modules if m.split(".")[0] in ("cel", "typer", "rich")),
}))
"""


def test_policies_run_without_cels_command_line() -> None:
    """The example fleet's policies compile and evaluate (clean, as the bundled tests say),
    and neither ``cel.cli`` nor the libraries it pulls in (typer, rich) were imported."""
    done = subprocess.run(
        [sys.executable, "-c", _VALIDATE_EXAMPLE, str(ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        check=True,
    )
    result = json.loads(done.stdout)
    assert result["findings"] == []
    assert result["loaded"] == ["cel", "cel.cel", "cel.stdlib"]


def test_a_failing_rule_still_fails(tmp_path: Path) -> None:
    """The binding imported this way evaluates: a rule that must fail does."""
    code = (
        "from reconciler.core.policy._cel import engine\n"
        "cel = engine()\n"
        "ctx = cel.Context(variables={'x': 3})\n"
        "print(cel.compile('x > 5').execute(ctx), cel.compile('x < 5').execute(ctx))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "True"]
