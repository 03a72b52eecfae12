"""A small repository with real age keys and real sops (used by conftest's ``world`` fixture).

Layout under ``tmp_path``::

    repo/   fleets/shops.yaml (break-glass), sites/shop-a, sites/shop-b, sites/plant-c
    keys/   shop-a.key, shop-b.key, plant-c.key, break-glass.key  (outside the repo)

Sites get their keys through ``init_site`` (the command under test) and their
secrets through ``encrypt_secret``; the plaintext values are random per test, so
a grep for them anywhere on disk or in logs means a leak.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from pathlib import Path

from reconciler.core.secrets import Sops, encrypt_secret, init_site, keygen

FLEET = """\
apiVersion: outpost/v1
kind: Fleet
metadata:
  name: {name}
spec:
  description: test fleet
  selector: {{matchLabels: {{segment: {segment}}}}}
  # operations' key
  breakGlass: {{recipients: ["{break_glass}"]}}
"""

SITE = """\
# {site_id}: a test site; this comment must survive key edits
apiVersion: outpost/v1
kind: Site
metadata:
  name: {site_id}
  labels: {{segment: {segment}}}
spec:
  type: {type}
  timezone: Europe/Berlin
  fleets: [{fleet}]
  connectivity: online   # keep me
  updateWindows:
    - {{days: [mon], start: "22:00", duration: 4h}}
"""

SECRET = """\
apiVersion: v1
kind: Secret
metadata:
  name: {name}
  namespace: {namespace}
type: Opaque
stringData:
  user: {user}
  password: "{password}"
"""

SITES = {
    "shop-a": ("shops", "retail", "store"),
    "shop-b": ("shops", "retail", "store"),
    "plant-c": ("plants", "manufacturing", "plant"),
}


@dataclass
class World:
    root: Path
    keys_dir: Path
    sops: Sops
    keys: dict[str, Path] = field(default_factory=dict)
    recipients: dict[str, str] = field(default_factory=dict)
    plaintexts: dict[str, list[str]] = field(default_factory=dict)

    @property
    def break_glass(self) -> Path:
        return self.keys["break-glass"]

    def all_plaintext(self) -> list[str]:
        return [v for values in self.plaintexts.values() for v in values]

    def add_secret(self, site_id: str, name: str, namespace: str = "pos") -> str:
        password = secrets.token_urlsafe(16)
        user = "u" + secrets.token_hex(6)
        text = SECRET.format(name=name, namespace=namespace, user=user, password=password)
        path = encrypt_secret(self.root, site_id, text.encode(), sops=self.sops)
        self.plaintexts.setdefault(site_id, []).extend([password, user])
        return path


def build_world(tmp_path: Path, sops: Sops) -> World:
    root = tmp_path / "repo"
    keys_dir = tmp_path / "keys"
    (root / "fleets").mkdir(parents=True)
    keys_dir.mkdir()
    world = World(root, keys_dir, sops)
    bg_path = keys_dir / "break-glass.key"
    world.recipients["break-glass"] = keygen(bg_path, root, created=None)
    world.keys["break-glass"] = bg_path
    for fleet, segment in (("shops", "retail"), ("plants", "manufacturing")):
        (root / "fleets" / f"{fleet}.yaml").write_text(
            FLEET.format(name=fleet, segment=segment, break_glass=world.recipients["break-glass"])
        )
    for site_id, (fleet, segment, kind) in SITES.items():
        folder = root / "sites" / site_id
        folder.mkdir(parents=True)
        (folder / "site.yaml").write_text(
            SITE.format(site_id=site_id, segment=segment, type=kind, fleet=fleet)
        )
    for site_id in SITES:
        key = keys_dir / f"{site_id}.key"
        result = init_site(root, site_id, key)
        world.keys[site_id] = key
        world.recipients[site_id] = result.recipient
    world.add_secret("shop-a", "wifi-psk")
    world.add_secret("shop-a", "pos-db")
    world.add_secret("shop-b", "wifi-psk")
    world.add_secret("plant-c", "historian-credentials", namespace="plant-data")
    return world
