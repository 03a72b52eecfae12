"""The installed package holds every subpackage and the schemas (a wheel, not just a checkout)."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_subpackage_is_listed_for_installation() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    listed = set(config["tool"]["setuptools"]["packages"])
    found = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for init in (ROOT / "reconciler").rglob("__init__.py")
    }
    assert found <= listed, f"add to [tool.setuptools] packages: {sorted(found - listed)}"
    assert config["tool"]["setuptools"]["package-dir"]["reconciler._schemas"] == "schemas"


def test_every_command_module_is_registered() -> None:
    from reconciler.cli import COMMANDS

    modules = {
        p.stem for p in (ROOT / "reconciler" / "cli").glob("*.py") if not p.stem.startswith("__")
    }
    assert modules == set(COMMANDS)
