"""Fixtures for node identity and signed reports: real keys, real ssh-keygen."""

from __future__ import annotations

from pathlib import Path

import pytest
from node_keys import node_key


@pytest.fixture
def muc_key(tmp_path: Path) -> Path:
    return node_key(tmp_path, "de-muc-0007")
