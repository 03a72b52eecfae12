"""The node carries no web framework, no database driver and nothing of the fleet side."""

from __future__ import annotations

import json
import subprocess
import sys

from node_keys import REPO_ROOT

FORBIDDEN = ("reconciler.fleet", "starlette", "uvicorn", "psycopg", "sqlite3", "anyio")


def test_the_node_imports_nothing_of_the_fleet_side() -> None:
    code = (
        "import json, sys\n"
        "import reconciler.node.agent, reconciler.node.report, reconciler.node.identity\n"
        "import reconciler.cli.agent, reconciler.node.pipeline\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO_ROOT,
        env={"PYTHONPATH": str(REPO_ROOT)},
    )
    loaded = json.loads(done.stdout)
    assert "reconciler.node.report" in loaded
    offenders = [m for m in loaded if m.startswith(FORBIDDEN)]
    assert offenders == []
