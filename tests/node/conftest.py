"""Fixtures for the node's own tests: real ssh-keygen keys and git repositories from tests/trust."""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

_TRUST = str(Path(__file__).resolve().parents[1] / "trust")
if _TRUST not in sys.path:
    sys.path.insert(0, _TRUST)

from trust_git import Key, make_key  # noqa: E402


@pytest.fixture(scope="session")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Key]:
    """root (a root signer, valid), old (a root signer retired 2026-03-02 10:00Z), pos (the
    POS team, delegated in the repository), rogue (nobody's)."""
    directory = tmp_path_factory.mktemp("node-keys")
    return {name: make_key(directory, name) for name in ("root", "old", "pos", "rogue")}


@pytest.fixture
def no_hang() -> Iterator[None]:
    """A read that blocks (a FIFO opened the ordinary way) fails the test after 20 s instead
    of hanging the run."""

    def stuck(*_: object) -> None:
        raise AssertionError("a read blocked for 20 s")

    previous = signal.signal(signal.SIGALRM, stuck)
    signal.alarm(20)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)
