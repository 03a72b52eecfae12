"""A fleet of N stores in a real signed git repository, a promoter key, and a collector store.

Shared by the simulation and the trust tests: real ``ssh-keygen`` keys, real ``git commit
-S`` signatures, the real collector store (SQLite).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from reconciler.fleet.collector.store import Row, Store, open_store
from tests.trust.trust_git import Key, Repo, make_key, root_line, signers_yaml, trust_root

CANARY = 5

APP = """apiVersion: outpost/v1
kind: App
metadata: {{name: pos}}
spec:
  namespace: pos
  versions:
    "1.0.0": {{images: {{server: registry.example.com/pos/server:1.0.0}}}}
    "1.1.0": {{images: {{server: registry.example.com/pos/server:1.1.0}}}}
"""

FLEET = """apiVersion: outpost/v1
kind: Fleet
metadata: {{name: retail}}
spec:
  selector: {{matchLabels: {{segment: retail}}}}
  apps:
    pos: {{version: {version}}}
  waves:
    - {{name: canary, sites: [{canary}]}}
    - {{name: early, percent: 10, gate: {{healthy: 90, maxFailed: 0, minSoak: 1h}}}}
    - {{name: all, gate: {{minSoak: 1h}}}}
"""

MANIFEST = """apiVersion: v1
kind: ConfigMap
metadata:
  name: pos-config
  namespace: ${app.namespace}
data:
  VERSION: ${app.version}
  STORE_ID: ${site.name}
"""

SITE = """apiVersion: outpost/v1
kind: Site
metadata:
  name: {site}
  labels: {{segment: retail}}
spec:
  type: store
  timezone: Europe/Berlin
  fleets: [retail]
  connectivity: online
"""


def site_id(i: int) -> str:
    return f"st-{i:05d}"


@dataclass
class World:
    repo: Repo
    root: Key
    promoter: Key
    sites: list[str]
    store: Store

    @property
    def trust(self) -> Any:
        return trust_root(root_line("root@example.com", self.root))

    def fleet(self, version: str) -> str:
        return FLEET.format(version=version, canary=", ".join(self.sites[:CANARY]))


def make_world(tmp: Path, count: int, *, when: int) -> World:
    keys = tmp / "keys"
    keys.mkdir()
    root = make_key(keys, "root")
    promoter = make_key(keys, "promoter")
    repo = Repo(tmp / "repo")
    sites = [site_id(i) for i in range(count)]
    world = World(repo, root, promoter, sites, open_store(str(tmp / "store.db"), now=_at(when)))
    files: dict[str, str | None] = {
        "apps/pos/app.yaml": APP.format(),
        "apps/pos/manifests/configmap.yaml": MANIFEST,
        "fleets/retail.yaml": world.fleet("1.0.0"),
        "policies/signers.yaml": signers_yaml({"promoter": ([promoter], ["rollouts/**"])}),
    }
    files.update({f"sites/{s}/site.yaml": SITE.format(site=s) for s in sites})
    repo.commit(files, root, "fleet of stores", when=when)
    return world


def _at(ts: int) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def report(
    store: Store,
    site: str,
    at: datetime,
    *,
    applied: str,
    health: str,
    outcome: str,
    failed: tuple[str, ...] = (),
    pending: str | None = None,
    reason: str | None = None,
) -> None:
    """Store one report as the collector's ingest would after verifying its signature."""
    body = {
        "outcome": outcome,
        "health": health,
        "applied": {"revision": applied, "at": at.isoformat()},
        "pending": {"revision": pending, "reason": reason} if pending else None,
        "failedRevisions": list(failed),
        "sourceLastAnswered": at.isoformat(),
    }
    digest = f"{site}-{at.timestamp()}"
    store.ingest([Row(site, "edge-1", at, at, digest, body, json.dumps(body), "sig")])
