"""``outpost fleet promote`` as a command: real store, real repository, real signatures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from reconciler.core.schedule import read_records
from reconciler.core.source import CommitTree
from tests.promote.promote_world import CANARY, World, make_world, report
from tests.trust.trust_git import root_line

WHEN = int((datetime.now(UTC) - timedelta(days=2)).timestamp())


def _outpost(world: World, tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    trust = tmp / "allowed_signers"
    trust.write_text(root_line("root@example.com", world.root) + "\n")
    argv = [sys.executable, "-m", "reconciler.cli", "fleet", "promote", "--repo",
            str(world.repo.path), "--trust", str(trust), "--db", str(tmp / "store.db"), *args]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120, check=False)


def _world(tmp: Path) -> tuple[World, str]:
    world = make_world(tmp, 20, when=WHEN)
    change = world.repo.commit({"fleets/retail.yaml": world.fleet("1.1.0")}, world.root, "pos 1.1.0", when=WHEN + 60)  # fmt: skip
    world.store.close()
    return world, change


def test_promote_opens_the_next_wave_when_the_canary_is_healthy(tmp_path: Path) -> None:
    from reconciler.fleet.collector.store import open_store

    world, change = _world(tmp_path)
    store = open_store(str(tmp_path / "store.db"), now=datetime.now(UTC))
    for site in world.sites[:CANARY]:
        report(store, site, datetime.now(UTC), applied=change, health="healthy", outcome="applied")
    store.close()
    dry = _outpost(world, tmp_path, "--dry-run", "-o", "json")
    assert dry.returncode == 0, dry.stderr
    assert json.loads(dry.stdout)["decisions"][0]["action"] == "promote"
    assert world.repo.head() == change  # a dry run commits nothing
    done = _outpost(world, tmp_path, "--key", str(world.promoter.private))
    assert done.returncode == 0, done.stderr
    assert "retail" in done.stdout and "promote" in done.stdout
    import pygit2

    git = pygit2.Repository(str(world.repo.path))
    records = read_records(CommitTree(git, world.repo.head()), "retail")
    assert [r.opened[0][0] for r in records] == ["early"] and records[0].change == change
    assert world.repo.verify(world.trust, since=change, now=datetime.now(UTC)).ok


def test_promote_halts_and_exits_1_when_a_canary_rolled_back(tmp_path: Path) -> None:
    from reconciler.fleet.collector.store import open_store

    world, change = _world(tmp_path)
    store = open_store(str(tmp_path / "store.db"), now=datetime.now(UTC))
    report(store, world.sites[0], datetime.now(UTC), applied=world.repo.git("rev-parse", "HEAD~1"),
           health="healthy", outcome="rolled-back", failed=(change,))  # fmt: skip
    store.close()
    done = _outpost(world, tmp_path, "--key", str(world.promoter.private))
    assert done.returncode == 1, done.stderr
    assert "halt" in done.stdout and "at most 0" in done.stdout
    message = world.repo.git("log", "-1", "--format=%B")
    assert world.sites[0] in message and "rolled-back" in message


def test_promote_without_a_key_is_an_error(tmp_path: Path) -> None:
    world, _ = _world(tmp_path)
    done = _outpost(world, tmp_path)
    assert done.returncode == 2 and "--key is needed" in done.stderr
