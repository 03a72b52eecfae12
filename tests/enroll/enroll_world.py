"""A signed repository of three sites with registered hardware, real age keys and real sops.

Built on the secrets tests' world (``tests/secrets/sopsworld.py``: fleets with a
break-glass key, three sites with their own age keys and encrypted secrets) plus a
``hardware.yaml`` per site, committed with real ``ssh-keygen`` signatures by a root
signer (``tests/trust/trust_git.py``). Machine identities live in files, as on a box.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

_TESTS = Path(__file__).resolve().parents[1]
for _folder in ("trust", "secrets"):
    if str(_TESTS / _folder) not in sys.path:
        sys.path.insert(0, str(_TESTS / _folder))

from sopsworld import World, build_world  # noqa: E402
from trust_git import Key, Repo, root_line  # noqa: E402

from reconciler.core.secrets import Sops  # noqa: E402
from reconciler.node.enroll import EnrollOptions  # noqa: E402

# site → (node, machine id, serial)
BOXES = {
    "shop-a": ("edge-1", "a1" * 16, "CZC0000A1"),
    "shop-b": ("edge-1", "b2" * 16, "CZC0000B2"),
    "plant-c": ("ipc-1", "c3" * 16, None),
}

HARDWARE = """\
apiVersion: outpost/v1
kind: Hardware
metadata:
  name: {site}
spec:
  # the store's one box; its identity is how it finds itself at enrollment
  nodes:
    - name: {node}
      identity: {identity}
      arch: amd64
      cpu: 4
      memory: 8Gi
      labels: {{zone: backoffice}}
"""


def hardware_text(site: str, node: str, machine_id: str, serial: str | None) -> str:
    identity = f"{{machineId: {machine_id}" + (f", serial: {serial}}}" if serial else "}")
    return HARDWARE.format(site=site, node=node, identity=identity)


@dataclass
class Box:
    """A machine: its identity files."""

    machine_id_file: Path
    serial_file: Path


def make_box(folder: Path, machine_id: str, serial: str | None) -> Box:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "machine-id").write_text(machine_id + "\n")
    serial_file = folder / "product_serial"
    if serial is not None:
        serial_file.write_text(serial + "\n")
    return Box(folder / "machine-id", serial_file)


@dataclass
class EnrollWorld:
    tmp: Path
    secrets: World
    git: Repo
    root_key: Key
    trust_root: Path

    @property
    def root(self) -> Path:
        return self.secrets.root

    def box(self, site: str, name: str = "box") -> Box:
        _, machine_id, serial = BOXES[site]
        return make_box(self.tmp / f"{name}-{site}", machine_id, serial)

    def options(self, box: Box, name: str = "node", **extra: object) -> EnrollOptions:
        base = self.tmp / name
        values: dict[str, object] = {
            "config_dir": base / "etc",
            "trust_root": self.trust_root,
            "repo": self.root,
            "machine_id_file": box.machine_id_file,
            "serial_file": box.serial_file,
            "user": "nobody",
            "state_dir": base / "state",
            "source_url": "https://git.example.com/config.git",
        }
        values.update(extra)
        return EnrollOptions(**values)  # type: ignore[arg-type]

    def commit(self, message: str) -> str:
        return self.git.commit({}, self.root_key, message)


def build(tmp: Path, sops: Sops, root_key: Key) -> EnrollWorld:
    secrets = build_world(tmp, sops)
    for site, (node, machine_id, serial) in BOXES.items():
        (secrets.root / "sites" / site / "hardware.yaml").write_text(
            hardware_text(site, node, machine_id, serial)
        )
    git = Repo(secrets.root)
    git.commit({}, root_key, "three sites, their boxes registered")
    trust_root = tmp / "allowed_signers"
    trust_root.write_text(root_line("root@example.com", root_key) + "\n")
    return EnrollWorld(tmp, secrets, git, root_key, trust_root)
