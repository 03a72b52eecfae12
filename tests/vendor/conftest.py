"""Real ``helm`` and ``kustomize`` for the vendoring tests, and a chart repository on loopback.

The binaries come from ``python -m tools.charttools build`` (the Go module proxy, cached like
the test control plane). If they are missing the fixture FAILS with that command; it never
skips and never builds silently.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tools.chartrepo import ChartRepository, serve  # noqa: E402
from tools.charttools import MissingToolsError, require_binaries  # noqa: E402


@pytest.fixture(scope="session")
def chart_bin() -> Path:
    try:
        bin_dir = require_binaries().bin_dir
    except MissingToolsError as error:
        missing = str(error)
    else:
        return bin_dir
    pytest.fail(missing, pytrace=False)


@pytest.fixture
def tool_env(chart_bin: Path) -> dict[str, str]:
    """The environment for ``python -m reconciler.cli``: this checkout, the built tools."""
    env = {k: v for k, v in os.environ.items() if k not in ("OUTPOST_HELM", "OUTPOST_KUSTOMIZE")}
    env["PATH"] = f"{chart_bin}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(ROOT)
    return env


@pytest.fixture
def chart_repo(tmp_path: Path, chart_bin: Path) -> Iterator[ChartRepository]:
    with serve(tmp_path / "chart-repository", chart_bin / "helm") as repository:
        yield repository
