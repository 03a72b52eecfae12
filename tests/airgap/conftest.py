"""Fixtures for air-gap tests: keys made once per session, a signed fleet repository A → B → C."""

from __future__ import annotations

from pathlib import Path

import pytest
from airgap_world import History, Key, SignedRepo, make_key


@pytest.fixture(scope="session")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Key]:
    """ops: the root signer the plant trusts; rogue: a key nobody trusts."""
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
