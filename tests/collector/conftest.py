"""Fixtures for the collector: real PostgreSQL, a signed example fleet, node keys."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from collector_world import FLEET_TIME, Keys

from tools import postgres as pg
from tools import signedfleet


@pytest.fixture(scope="session")
def postgres() -> Iterator[pg.Postgres]:
    server = pg.start()
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_target(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "collector.db")
    server: pg.Postgres = request.getfixturevalue("postgres")
    return server.create_database()


@pytest.fixture(scope="session")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> signedfleet.SignedFleet:
    return signedfleet.create(tmp_path_factory.mktemp("fleet"), when=FLEET_TIME)


@pytest.fixture(scope="session")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    return Keys(tmp_path_factory.mktemp("node-keys"))
