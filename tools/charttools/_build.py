"""Build ``helm`` and ``kustomize`` from the Go module proxy into the test binaries' cache.

``outpost app vendor`` renders Helm charts and Kustomize bases with the real tools; no package
registry this project reaches ships them, but the Go module proxy serves their source. Two
wrapper modules in this directory pin what is built (their ``go.sum`` files make the proxy's
answers checkable against the checksum database):

- ``helm/go.mod``       requires ``helm.sh/helm/v4`` (``cmd/helm``);
- ``kustomize/go.mod``  requires ``sigs.k8s.io/kustomize/kustomize/v5`` (v5.8.2: the newest
  that builds with Go 1.26; v5.8.3 asks for Go 1.27).

The build reuses ``tools.testcluster``'s machinery (lock, progress lines, ``.partial``
directory renamed into place once ``manifest.json`` is written) and its cache root,
``${OUTPOST_TESTCLUSTER_CACHE:-~/.cache/outpost-testcluster}``, in a directory of its own named
by the two versions and a digest of the wrapper modules and flags.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TextIO

from tools.testcluster import _build as base

HERE = Path(__file__).resolve().parent

BUILD_COMMAND = "python -m tools.charttools build"
"""What an operator runs to fill the cache; quoted in every 'binaries missing' message."""

FRESH_BUILD = "about 8 minutes on 2 cores"
"""Measured on the 2-core machine with empty Go module and build caches (modules downloaded
from the proxy, 592 MB; 1.2 GB of build cache), at nice 10 beside other jobs (load 6-10):
7m41s wall, helm 7m29s, kustomize 12s (it shares most packages with helm). With the build
cache warm from the test control plane's build, helm took 6m51s. Printed so nobody thinks
it hung."""


@dataclass(frozen=True)
class Tool(base.Component):
    """A wrapper module and its one binary; the version is stamped where the tool reads it."""

    version_variable: str = ""

    def ldflags(self) -> str:
        return f"-s -w -X {self.version_variable}={self.version()}"


TOOLS: tuple[Tool, ...] = (
    Tool(
        "helm",
        HERE / "helm",
        "helm.sh/helm/v4",
        (("helm", "helm.sh/helm/v4/cmd/helm"),),
        version_variable="helm.sh/helm/v4/internal/version.version",
    ),
    Tool(
        "kustomize",
        HERE / "kustomize",
        "sigs.k8s.io/kustomize/kustomize/v5",
        (("kustomize", "sigs.k8s.io/kustomize/kustomize/v5"),),
        version_variable="sigs.k8s.io/kustomize/api/provenance.version",
    ),
)

BINARIES: tuple[str, ...] = tuple(name for t in TOOLS for name, _ in t.binaries)


def pinned_versions() -> dict[str, str]:
    """``{"helm": "v4.3.2", "kustomize": "v5.8.2"}``, read from the wrapper modules."""
    return {t.name: t.version() for t in TOOLS}


def cache_key() -> str:
    return f"charttools_{base.components_key(TOOLS)}"


@dataclass(frozen=True)
class Plan:
    """What :func:`build` would do, without doing it (and without running ``go``)."""

    directory: Path
    status: Literal["cached", "build"]
    missing: tuple[str, ...]

    @property
    def bin_dir(self) -> Path:
        return self.directory / "bin"


def plan(root: Path | None = None) -> Plan:
    directory = (root or base.cache_root()) / cache_key()
    missing = [] if (directory / "manifest.json").is_file() else ["manifest.json"]
    for name in BINARIES:
        binary = directory / "bin" / name
        if not (binary.is_file() and os.access(binary, os.X_OK)):
            missing.append(f"bin/{name}")
    return Plan(directory, "cached" if not missing else "build", tuple(missing))


def build(*, root: Path | None = None, force: bool = False, out: TextIO = sys.stderr) -> Plan:
    """Build both tools into the cache unless a finished build is there; safe to run twice
    at once (a lock serialises builders and the second finds the first one's result)."""
    current = plan(root)
    if current.status == "cached" and not force:
        print(f"charttools: cached, nothing to build: {current.bin_dir}", file=out)
        return current
    go = shutil.which("go")
    if go is None:
        raise base.BuildError(
            "go not found on PATH: helm and kustomize are compiled from source; install Go "
            f"(>= the 'go' line in {HERE / 'helm' / 'go.mod'}) and run `{BUILD_COMMAND}` again"
        )
    current.directory.parent.mkdir(parents=True, exist_ok=True)
    lock_path = current.directory.with_name(current.directory.name + ".lock")
    with lock_path.open("w") as lock:
        if not base._try_lock(lock):
            print(f"charttools: another build holds {lock_path}; waiting for it", file=out)
            fcntl.flock(lock, fcntl.LOCK_EX)
        current = plan(root)
        if current.status == "cached" and not force:
            return current
        return _build_locked(go, current, out)


def _build_locked(go: str, target: Plan, out: TextIO) -> Plan:
    partial = target.directory.with_name(target.directory.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    (partial / "bin").mkdir(parents=True)
    print(
        f"charttools: building {pinned_versions()} into {target.directory}; "
        f"a fresh build takes {FRESH_BUILD}",
        file=out,
    )
    started = time.monotonic()
    timings = {t.name: base._go_build(go, t, partial / "bin", partial, out) for t in TOOLS}
    total = time.monotonic() - started
    manifest = {
        "versions": pinned_versions(),
        "go": base._go_version(go),
        "ldflags": {t.name: t.ldflags() for t in TOOLS},
        "seconds": {name: round(s, 1) for name, s in timings.items()},
        "total_seconds": round(total, 1),
    }
    (partial / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    if target.directory.exists():  # only with force=True
        shutil.rmtree(target.directory)
    partial.rename(target.directory)
    print(f"charttools: built in {base._minutes(total)}: {target.bin_dir}", file=out)
    return plan(target.directory.parent)


class MissingToolsError(base.BuildError):
    """Raised by :func:`require_binaries`; the message says how to build."""


def require_binaries(root: Path | None = None) -> Plan:
    """The cached build for the current pins, or :class:`MissingToolsError`."""
    current = plan(root)
    if current.status != "cached":
        versions = ", ".join(f"{n} {v}" for n, v in pinned_versions().items())
        raise MissingToolsError(
            f"{versions} are not built in {current.directory} (missing "
            f"{', '.join(current.missing)}). Run `{BUILD_COMMAND}` from the repository root "
            f"(needs Go and the Go module proxy; {FRESH_BUILD} the first time)."
        )
    return current
