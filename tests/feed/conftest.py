"""Fixtures for the bundle feed: signed history (the air-gap tests' helpers) and a real nginx."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "airgap"))

from airgap_world import History, Key, SignedRepo, make_key

from tools.webserver import Nginx


@pytest.fixture(scope="session")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Key]:
    """ops: the root signer the node trusts; rogue: a key nobody trusts."""
    directory = tmp_path_factory.mktemp("keys")
    return {"ops": make_key(directory, "ops"), "rogue": make_key(directory, "rogue")}


@pytest.fixture
def history(tmp_path: Path, keys: dict[str, Key]) -> History:
    """The example fleet as commit A, then two signed changes to the plant's slice, B and C."""
    repo = SignedRepo(tmp_path / "clone", keys["ops"])
    a = repo.commit("Example fleet")
    b = repo.change_plant("Ostrava: publish every 750 ms", 750)
    c = repo.change_plant("Ostrava: publish every 1000 ms", 1000)
    return History(repo, a, b, c)


@pytest.fixture
def nginx(tmp_path: Path) -> Iterator[Nginx]:
    """nginx from Debian on a free loopback port, serving ``tmp_path/www``."""
    with Nginx(tmp_path / "nginx", tmp_path / "www") as server:
        yield server
