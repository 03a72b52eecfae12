"""promtool, built from the Go module proxy, to test the shipped alerting rules.

``deploy/alerts.yaml`` is tested with the real ``promtool test rules`` (Prometheus's own
rule evaluator over synthetic series), as the test control plane is tested with the real
kube-apiserver. No package registry here ships promtool, but the Go module proxy serves
Prometheus's source: ``module/go.mod`` pins ``github.com/prometheus/prometheus`` (its
``go.sum`` makes the proxy's answers checkable against the checksum database), and
:func:`build` compiles ``cmd/promtool`` into
``${OUTPOST_TESTCLUSTER_CACHE:-~/.cache/outpost-testcluster}/promtool-<version>_<digest>/bin``
with the same flags, locking and "manifest written last" rule as ``tools.testcluster``.

``python -m tools.promtool build`` (run by ``make test`` and so by ``.ci/run``) builds it:
about 10 minutes on 2 cores the first time, a 0.1 s check afterwards.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from tools.testcluster._build import (
    GO_ENV,
    GO_FLAGS,
    BuildError,
    Component,
    _go_build,
    _go_version,
    _minutes,
    cache_root,
)

HERE = Path(__file__).resolve().parent
COMPONENT = Component(
    "promtool",
    HERE / "module",
    "github.com/prometheus/prometheus",
    (("promtool", "github.com/prometheus/prometheus/cmd/promtool"),),
)
BUILD_COMMAND = "python -m tools.promtool build"

__all__ = ["BUILD_COMMAND", "BuildError", "MissingPromtool", "build", "require_promtool"]


class MissingPromtool(BuildError):
    """promtool is not built for the current pin; the message says how to build it."""


@dataclass(frozen=True)
class Plan:
    directory: Path

    @property
    def binary(self) -> Path:
        return self.directory / "bin" / "promtool"

    @property
    def cached(self) -> bool:
        return (self.directory / "manifest.json").is_file() and self.binary.is_file()


def plan(root: Path | None = None) -> Plan:
    digest = hashlib.sha256()
    for name in ("go.mod", "go.sum"):
        digest.update((COMPONENT.module_dir / name).read_bytes())
    digest.update(json.dumps([GO_FLAGS, sorted(GO_ENV.items()), COMPONENT.ldflags()]).encode())
    key = f"promtool-{COMPONENT.version()}_{digest.hexdigest()[:12]}"
    return Plan((root or cache_root()) / key)


def require_promtool(root: Path | None = None) -> Path:
    current = plan(root)
    if not current.cached:
        raise MissingPromtool(
            f"promtool ({COMPONENT.module} {COMPONENT.version()}) is not built in "
            f"{current.directory}. Run `{BUILD_COMMAND}` from the repository root (needs Go and "
            "the Go module proxy; about 10 minutes on 2 cores the first time)."
        )
    return current.binary


def build(*, root: Path | None = None, out: TextIO = sys.stderr) -> Path:
    """Build promtool unless the current pin is cached; safe to run concurrently."""
    current = plan(root)
    if current.cached:
        print(f"promtool: cached, nothing to build: {current.binary}", file=out)
        return current.binary
    go = shutil.which("go")
    if go is None:
        raise BuildError(
            f"go not found on PATH: promtool is compiled from source ({BUILD_COMMAND})"
        )
    current.directory.parent.mkdir(parents=True, exist_ok=True)
    with current.directory.with_name(current.directory.name + ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if plan(root).cached:
            return current.binary
        partial = current.directory.with_name(current.directory.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        (partial / "bin").mkdir(parents=True)
        started = time.monotonic()
        seconds = _go_build(go, COMPONENT, partial / "bin", partial, out)
        manifest = {
            "module": COMPONENT.module,
            "version": COMPONENT.version(),
            "go": _go_version(go),
            "flags": list(GO_FLAGS),
            "seconds": round(seconds, 1),
        }
        (partial / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        partial.rename(current.directory)
        print(
            f"promtool: built in {_minutes(time.monotonic() - started)}: {current.binary}", file=out
        )
    return current.binary
