"""Fixtures for the secrets tests: real sops, real age keys, a fresh repository per test."""

from __future__ import annotations

from pathlib import Path

import pytest
from sopsworld import World, build_world

from reconciler.core.secrets import Sops


@pytest.fixture(scope="session")
def sops() -> Sops:
    return Sops()


@pytest.fixture
def world(tmp_path: Path, sops: Sops) -> World:
    return build_world(tmp_path, sops)
