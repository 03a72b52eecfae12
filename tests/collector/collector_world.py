"""The collector tests' world: node keys, signed reports, a running `outpost fleet serve`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from reconciler.core.report import Envelope, seal
from reconciler.node.identity import load_identity
from tools import fleetserve, signedfleet

REPO_ROOT = Path(__file__).resolve().parents[2]

NODE_KEYS = REPO_ROOT / "tests" / "keys" / "node"
FLEET_TIME = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)


class Keys:
    """The example fleet's node keys, copied with mode 0600."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._cache: dict[str, Any] = {}

    def path(self, site: str, node: str = "edge-1") -> Path:
        target = self.directory / f"{site}-{node}.key"
        if not target.exists():
            shutil.copyfile(NODE_KEYS / f"{site}-{node}.key", target)
            target.chmod(0o600)
        return target

    def private(self, site: str, node: str = "edge-1") -> Any:
        key = f"{site}/{node}"
        if key not in self._cache:
            self._cache[key] = load_identity(self.path(site, node)).private_key
        return self._cache[key]


def status(
    site: str, at: datetime, *, outcome: str = "applied", revision: str = "a" * 40, **extra: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "outpost/v1",
        "kind": "SiteStatus",
        "site": site,
        "time": at.isoformat(),
        "outcome": outcome,
        "applied": {"revision": revision, "at": at.isoformat()},
        "lastGood": revision,
        "fetched": {"revision": revision, "at": at.isoformat()},
        "sourceLastAnswered": at.isoformat(),
        "pending": None,
        "health": "healthy",
        "drift": {"objects": 0, "corrected": 0},
        "lastError": None,
        "warnings": [],
        "failedRevisions": [],
        "inventory": 3,
    }
    body.update(extra)
    return body


def signed(keys: Keys, site: str, at: datetime, *, node: str = "edge-1", **kw: Any) -> Envelope:
    return seal(status(site, at, **kw), keys.private(site, node))


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_server(
    tmp_path: Path, store: list[str], fleet: signedfleet.SignedFleet, *extra: str
) -> Server:
    process, port, log = fleetserve.start(
        store,
        fleet.path,
        fleet.allowed_signers,
        *extra,
        log=lambda port: tmp_path / f"collector-{port}.log",
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        ready=lambda answer: bool(json.loads(answer.data)["repository"]),
    )
    return Server(f"http://127.0.0.1:{port}", process, log)
