"""Repositories for render tests: the example fleet, a tiny fleet, real git commits via pygit2."""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path

import pygit2

from reconciler.core.model import Repository
from reconciler.core.source import CommitTree, WorkdirTree

ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIRS = ("sites", "fleets", "apps", "policies", "schemas")
SIGNATURE = pygit2.Signature("Test Author", "test@example.com", 1_700_000_000, 0)


def example_files() -> dict[str, bytes]:
    """Every config file of the example fleet in this checkout."""
    tree = WorkdirTree(ROOT)
    return {path: tree.read(path) for prefix in CONFIG_DIRS for path in tree.files(prefix)}


def example_repo() -> Repository:
    return Repository(WorkdirTree(ROOT))


def write_files(root: Path, files: Mapping[str, bytes | str]) -> None:
    for path, data in files.items():
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data.encode() if isinstance(data, str) else data)


def replace_files(root: Path, files: Mapping[str, bytes | str]) -> None:
    """Make the config folders under ``root`` hold exactly ``files``."""
    for prefix in CONFIG_DIRS:
        shutil.rmtree(root / prefix, ignore_errors=True)
    write_files(root, files)


def commit_all(root: Path, message: str) -> str:
    """Commit the whole working directory at ``root`` (initialised on first use)."""
    if (root / ".git").exists():
        repo = pygit2.Repository(str(root))
        parents = [] if repo.head_is_unborn else [repo.head.target]
    else:
        repo = pygit2.init_repository(str(root), initial_head="main")
        parents = []
    repo.index.add_all()
    repo.index.write()
    tree = repo.index.write_tree()
    oid = repo.create_commit("HEAD", SIGNATURE, SIGNATURE, message, tree, parents)
    return str(oid)


def commit_repo(root: Path, rev: str) -> Repository:
    return Repository(CommitTree(pygit2.Repository(str(root)), rev))


def workdir_repo(root: Path) -> Repository:
    return Repository(WorkdirTree(root))


def line_of(text: str, needle: str) -> int:
    """The 1-based line of the first line of ``text`` containing ``needle``."""
    for number, line in enumerate(text.splitlines(), start=1):
        if needle in line:
            return number
    raise AssertionError(f"{needle!r} not in text")


# -- a tiny fleet: one site, one fleet, one app -------------------------------------------------

SITE = """\
apiVersion: outpost/v1
kind: Site
metadata:
  name: s1
  labels: {region: r1}
spec:
  type: store
  timezone: Europe/Berlin
  fleets: [f1]
  connectivity: online
"""

HARDWARE = """\
apiVersion: outpost/v1
kind: Hardware
metadata:
  name: s1
spec:
  nodes:
    - name: n1
      identity: {machineId: 0123456789abcdef0123456789abcdef}
      arch: amd64
      cpu: 4
      memory: 8Gi
      labels: {zone: front}
      devices:
        - {name: scanner, type: usb, vendor: "05e0", product: "1200"}
    - name: n2
      identity: {machineId: fedcba9876543210fedcba9876543210}
      arch: arm64
      cpu: 4
      memory: 8Gi
      devices:
        - {name: gpu0, type: gpu, resource: nvidia.com/gpu, count: 2}
        - {name: plc, type: serial, path: /dev/ttyS0}
        - {name: nic, type: pci, address: "0000:03:00.0", vendor: "8086", product: "1533"}
"""

FLEET = """\
apiVersion: outpost/v1
kind: Fleet
metadata:
  name: f1
spec:
  selector: {matchLabels: {region: r1}}
  apps:
    web:
      version: "1.0.0"
      values:
        greeting: hello
"""

DIGEST_A = "a" * 64
DIGEST_B = "b" * 64

APP = f"""\
apiVersion: outpost/v1
kind: App
metadata:
  name: web
spec:
  versions:
    "1.0.0": {{images: {{server: "registry.example.com/web@sha256:{DIGEST_A}"}}}}
    "1.1.0": {{images: {{server: "registry.example.com/web@sha256:{DIGEST_B}"}}}}
  parameters:
    type: object
    properties:
      greeting: {{type: string}}
      replicas: {{type: integer, minimum: 1, maximum: 3}}
      tls: {{type: object, properties: {{port: {{type: integer}}}}}}
    required: [greeting, replicas]
    additionalProperties: false
  defaults:
    replicas: 1
    tls: {{port: 8443}}
"""

MANIFEST = """\
apiVersion: v1
kind: ConfigMap
metadata:
  name: web-config
data:
  GREETING: "${greeting}, ${site.name}!"
  PORT: "${tls.port}/tcp"
  SHELL: "echo $${HOME}"
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: ${replicas}
  selector:
    matchLabels: {app.kubernetes.io/name: web}
  template:
    metadata:
      labels: {app.kubernetes.io/name: web}
    spec:
      containers:
        - name: server
          image: ${images.server}
          env:
            - {name: TZ, value: "${site.timezone}"}
            - {name: NS, value: "${app.namespace}"}
"""


def tiny_files(changes: Mapping[str, str | None] | None = None) -> dict[str, str]:
    """The tiny fleet, with ``changes`` applied (path → new text, or None to delete)."""
    files: dict[str, str] = {
        "sites/s1/site.yaml": SITE,
        "sites/s1/hardware.yaml": HARDWARE,
        "fleets/f1.yaml": FLEET,
        "apps/web/app.yaml": APP,
        "apps/web/manifests/web.yaml": MANIFEST,
    }
    for path, text in (changes or {}).items():
        if text is None:
            files.pop(path, None)
        else:
            files[path] = text
    return files
