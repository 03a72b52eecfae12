"""Build etcd, the Kubernetes control plane, kubectl and kwok from the Go module proxy.

No package registry ships Kubernetes binaries and these machines cannot run containers, but
the Go module proxy serves the source. Three wrapper modules in this directory pin what is
built; their ``go.sum`` files make the proxy's answers checkable against the checksum database:

- ``k8s/go.mod``  requires ``k8s.io/kubernetes`` and maps every ``k8s.io/*`` staging module to
  its published ``v0.X.Y`` tag (the published ``k8s.io/kubernetes`` module points them at
  ``./staging`` paths that only exist in a git checkout);
- ``etcd/go.mod`` requires ``go.etcd.io/etcd/server/v3`` at the version Kubernetes depends on;
- ``kwok/go.mod`` requires ``sigs.k8s.io/kwok`` (simulated nodes, so Pods get Ready).

The pins live in those files only; :func:`pinned_versions` reads them back. Binaries go to
``${OUTPOST_TESTCLUSTER_CACHE:-~/.cache/outpost-testcluster}/<key>/bin`` — outside the source
tree, so ``git clean`` and fresh checkouts keep them. ``<key>`` names the three versions and a
digest of the wrapper modules and build flags, so changing a pin or a flag builds into a new
directory and never reuses a stale binary. A finished build is marked by ``manifest.json``,
written last; a directory without it is not trusted (an interrupted build leaves only a
``.partial`` directory, removed by the next build). Go's own module and build caches stay at
their defaults, so a rebuild after a pin change recompiles only what changed.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import select
import shutil
import subprocess
import sys
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TextIO

HERE = Path(__file__).resolve().parent

BUILD_COMMAND = "python -m tools.testcluster build"
"""What an operator runs to fill the cache; quoted in every 'binaries missing' message."""

GO_FLAGS: tuple[str, ...] = ("-trimpath", "-buildvcs=false")
GO_TAGS = "providerless"
"""Drops in-tree cloud-provider code where Kubernetes still guards it with this tag."""
GO_ENV = {"CGO_ENABLED": "0"}
"""Static binaries, as Kubernetes releases its control plane; no C toolchain needed."""

FRESH_BUILD = "10 to 20 minutes on 2 cores"
"""Measured with empty Go caches on a 2-core machine: 20m23s wall while other jobs kept the
load at 5-10, 14 CPU-minutes, 1.1 GB of modules downloaded. Printed so nobody thinks it hung."""

#: Seconds between progress lines while ``go build`` runs.
PROGRESS_EVERY = 30.0

KWOK_STAGES = (
    "kustomize/stage/node/fast/node-initialize.yaml",
    "kustomize/stage/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
    "kustomize/stage/pod/fast/pod-ready.yaml",
    "kustomize/stage/pod/fast/pod-complete.yaml",
    "kustomize/stage/pod/fast/pod-delete.yaml",
)
"""The stages ``kwokctl`` installs by default. The ``kwok`` binary embeds none and refuses to
start without stages, so the build copies these from the pinned kwok module's source."""


class BuildError(Exception):
    """The toolchain is missing or ``go build`` failed; the message says which and how."""


@dataclass(frozen=True)
class Component:
    """One wrapper module and the binaries built from it."""

    name: str
    module_dir: Path
    module: str
    binaries: tuple[tuple[str, str], ...]
    """(binary name, Go package) pairs; built by one ``go build`` so packages compile in
    parallel and shared dependencies once."""

    def version(self) -> str:
        return require_version(self.module_dir / "go.mod", self.module)

    def ldflags(self) -> str:
        flags = ["-s", "-w"]
        if self.name == "kubernetes":
            # Without these the binaries report v0.0.0-master, which kubectl and kwok print
            # as a version skew warning and which makes /version useless in test logs.
            version = self.version()
            major, minor = version.lstrip("v").split(".")[:2]
            base = "k8s.io/component-base/version"
            flags += [
                f"-X {base}.gitVersion={version}",
                f"-X {base}.gitMajor={major}",
                f"-X {base}.gitMinor={minor}",
                f"-X {base}.gitTreeState=clean",
            ]
        return " ".join(flags)


COMPONENTS: tuple[Component, ...] = (
    Component(
        "kubernetes",
        HERE / "k8s",
        "k8s.io/kubernetes",
        tuple(
            (name, f"k8s.io/kubernetes/cmd/{name}")
            for name in ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl")
        ),
    ),
    Component(
        "etcd", HERE / "etcd", "go.etcd.io/etcd/server/v3", (("etcd", "go.etcd.io/etcd/server/v3"),)
    ),
    Component("kwok", HERE / "kwok", "sigs.k8s.io/kwok", (("kwok", "sigs.k8s.io/kwok/cmd/kwok"),)),
)

BINARIES: tuple[str, ...] = tuple(name for c in COMPONENTS for name, _ in c.binaries)


def require_version(go_mod: Path, module: str) -> str:
    """The version ``go_mod`` requires for ``module``; fails loudly rather than guess."""
    text = go_mod.read_text(encoding="utf-8")
    pattern = rf"^\s*(?:require\s+)?{re.escape(module)}\s+(v\S+)\s*(?://.*)?$"
    match = re.search(pattern, text, re.MULTILINE)
    if match is None:
        raise BuildError(f"{go_mod}: expected a 'require {module} vX.Y.Z' line, found none")
    return match.group(1)


def pinned_versions() -> dict[str, str]:
    """``{"kubernetes": "v1.36.3", "etcd": "v3.6.8", "kwok": "v0.8.0"}``, read from go.mod."""
    return {c.name: c.version() for c in COMPONENTS}


def cache_root() -> Path:
    env = os.environ.get("OUTPOST_TESTCLUSTER_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "outpost-testcluster"


def components_key(components: Sequence[Component], *inputs: object) -> str:
    """The versions of ``components`` plus a digest of their go.mod, go.sum and flags, the
    build flags and ``inputs``: a cache directory's name, new whenever any of them changes."""
    digest = hashlib.sha256()
    for c in components:
        for name in ("go.mod", "go.sum"):
            digest.update(f"{c.name}/{name}\0".encode())
            digest.update((c.module_dir / name).read_bytes())
        digest.update(c.ldflags().encode())
    digest.update(json.dumps([GO_FLAGS, GO_TAGS, sorted(GO_ENV.items()), *inputs]).encode())
    versions = "_".join(f"{c.name}-{c.version()}" for c in components)
    return f"{versions}_{digest.hexdigest()[:12]}"


def cache_key() -> str:
    """Directory name for this exact build: the versions plus a digest of inputs and flags."""
    return components_key(COMPONENTS, KWOK_STAGES)


@dataclass(frozen=True)
class Plan:
    """What :func:`build` would do, without doing it (and without running ``go``)."""

    directory: Path
    status: Literal["cached", "build"]
    missing: tuple[str, ...]
    versions: dict[str, str] = field(hash=False)

    @property
    def bin_dir(self) -> Path:
        return self.directory / "bin"

    @property
    def kwok_stages(self) -> Path:
        return self.directory / "share" / "kwok-stages.yaml"

    @property
    def manifest(self) -> Path:
        return self.directory / "manifest.json"


def plan(root: Path | None = None) -> Plan:
    """Report ``cached`` when a finished build for the current pins is present."""
    directory = (root or cache_root()) / cache_key()
    wanted = [directory / "manifest.json", directory / "share" / "kwok-stages.yaml"]
    wanted += [directory / "bin" / name for name in BINARIES]
    missing = tuple(
        str(p.relative_to(directory)) for p in wanted if not (p.is_file() and os.access(p, os.R_OK))
    )
    for name in BINARIES:
        binary = directory / "bin" / name
        if binary.is_file() and not os.access(binary, os.X_OK):
            missing += (f"bin/{name} (not executable)",)
    return Plan(directory, "cached" if not missing else "build", missing, pinned_versions())


def build(*, root: Path | None = None, force: bool = False, out: TextIO = sys.stderr) -> Plan:
    """Build every binary into the cache unless a finished build is already there.

    Safe to run concurrently: a lock file serialises builders and the second one finds the
    first one's result. Returns the plan of the finished directory (status ``cached``).
    """
    current = plan(root)
    if current.status == "cached" and not force:
        print(f"testcluster: cached, nothing to build: {current.bin_dir}", file=out)
        return current
    go = shutil.which("go")
    if go is None:
        raise BuildError(
            "go not found on PATH: the test control plane is compiled from source; install Go "
            f"(>= the 'go' line in {HERE / 'k8s' / 'go.mod'}) and run `{BUILD_COMMAND}` again"
        )
    current.directory.parent.mkdir(parents=True, exist_ok=True)
    lock_path = current.directory.with_name(current.directory.name + ".lock")
    with lock_path.open("w") as lock:
        if not _try_lock(lock):
            print(f"testcluster: another build holds {lock_path}; waiting for it", file=out)
            fcntl.flock(lock, fcntl.LOCK_EX)
        current = plan(root)
        if current.status == "cached" and not force:
            print(f"testcluster: built meanwhile by another process: {current.bin_dir}", file=out)
            return current
        return _build_locked(go, current, out)


def _try_lock(lock: TextIO) -> bool:
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _build_locked(go: str, target: Plan, out: TextIO) -> Plan:
    partial = target.directory.with_name(target.directory.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    (partial / "bin").mkdir(parents=True)
    (partial / "share").mkdir()
    go_version = _go_version(go)
    print(
        f"testcluster: building into {target.directory} with {go_version}\n"
        f"testcluster: versions {target.versions}; a fresh build takes {FRESH_BUILD}, "
        "a rebuild with a warm Go build cache a few minutes",
        file=out,
    )
    started = time.monotonic()
    timings: dict[str, float] = {}
    for component in COMPONENTS:
        timings[component.name] = _go_build(go, component, partial / "bin", partial, out)
    _copy_kwok_stages(go, partial / "share" / "kwok-stages.yaml")
    sizes = {name: (partial / "bin" / name).stat().st_size for name in BINARIES}
    total_seconds = time.monotonic() - started
    manifest = {
        "versions": target.versions,
        "go": go_version,
        "flags": {"go": list(GO_FLAGS), "tags": GO_TAGS, "env": GO_ENV},
        "ldflags": {c.name: c.ldflags() for c in COMPONENTS},
        "seconds": {name: round(s, 1) for name, s in timings.items()},
        "total_seconds": round(total_seconds, 1),
        "bytes": sizes,
    }
    (partial / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    if target.directory.exists():  # only with force=True
        shutil.rmtree(target.directory)
    partial.rename(target.directory)
    total_mib = sum(sizes.values()) / 2**20
    print(
        f"testcluster: built in {_minutes(total_seconds)}, "
        f"{len(sizes)} binaries, {total_mib:.0f} MiB: {target.bin_dir}",
        file=out,
    )
    return plan(target.directory.parent)


def _go_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(GO_ENV)
    return env


def _go_version(go: str) -> str:
    result = subprocess.run(
        [go, "version"], capture_output=True, text=True, check=False, env=_go_env()
    )
    if result.returncode != 0:
        raise BuildError(f"`go version` failed: {result.stderr.strip()}")
    return result.stdout.strip()


def _go_build(go: str, component: Component, bin_dir: Path, workdir: Path, out: TextIO) -> float:
    """Run one ``go build``, printing a progress line every :data:`PROGRESS_EVERY` seconds."""
    names = [name for name, _ in component.binaries]
    packages = [pkg for _, pkg in component.binaries]
    # Several packages go to a directory, named by Go; a single one gets an explicit name
    # (Go would call go.etcd.io/etcd/server/v3 "server").
    output = f"{bin_dir}/" if len(packages) > 1 else str(bin_dir / names[0])
    argv = [
        go,
        "build",
        "-v",
        *GO_FLAGS,
        "-tags",
        GO_TAGS,
        "-ldflags",
        component.ldflags(),
        "-o",
        output,
        *packages,
    ]
    label = f"{component.name} {component.version()}"
    print(f"testcluster: [{label}] go build {' '.join(names)}", file=out, flush=True)
    log_path = workdir / f"build-{component.name}.log"
    started = time.monotonic()
    tail: deque[str] = deque(maxlen=40)
    compiled = 0
    with log_path.open("w", encoding="utf-8") as log:
        proc = subprocess.Popen(
            argv,
            cwd=component.module_dir,
            env=_go_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        pending = b""
        last_report = started
        try:
            while True:
                ready, _, _ = select.select([fd], [], [], 5.0)
                if ready:
                    chunk = os.read(fd, 65536)
                    if not chunk:
                        break
                    *lines, pending = (pending + chunk).split(b"\n")
                    for raw in lines:
                        line = raw.decode("utf-8", "replace")
                        log.write(line + "\n")
                        tail.append(line)
                        # `go build -v` prints each package as it is compiled.
                        if line and " " not in line:
                            compiled += 1
                now = time.monotonic()
                if now - last_report >= PROGRESS_EVERY:
                    last_report = now
                    print(
                        f"testcluster: [{component.name}] {compiled} packages compiled, "
                        f"{_minutes(now - started)} elapsed",
                        file=out,
                        flush=True,
                    )
            returncode = proc.wait()
        except BaseException:
            proc.kill()
            proc.wait()
            raise
    elapsed = time.monotonic() - started
    if returncode != 0:
        details = "\n".join(line for line in tail if " " in line) or "\n".join(tail)
        raise BuildError(
            f"go build of {component.name} {component.version()} failed (exit {returncode}) "
            f"in {component.module_dir}; full log: {log_path}\n{details}"
        )
    print(f"testcluster: [{component.name}] done in {_minutes(elapsed)}", file=out, flush=True)
    return elapsed


def _copy_kwok_stages(go: str, target: Path) -> None:
    kwok = next(c for c in COMPONENTS if c.name == "kwok")
    result = subprocess.run(
        [go, "list", "-m", "-f", "{{.Dir}}", kwok.module],
        cwd=kwok.module_dir,
        capture_output=True,
        text=True,
        check=False,
        env=_go_env(),
    )
    source = Path(result.stdout.strip())
    if result.returncode != 0 or not source.is_dir():
        raise BuildError(f"cannot locate the source of {kwok.module}: {result.stderr.strip()}")
    documents = []
    for relative in KWOK_STAGES:
        path = source / relative
        if not path.is_file():
            raise BuildError(f"{kwok.module}@{kwok.version()} has no {relative}; fix KWOK_STAGES")
        documents.append(f"# from {kwok.module}@{kwok.version()}/{relative}\n{path.read_text()}")
    target.write_text("---\n".join(documents), encoding="utf-8")


def _minutes(seconds: float) -> str:
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes}m{rest:02d}s" if minutes else f"{rest}s"


def require_binaries(root: Path | None = None) -> Plan:
    """The cached build for the current pins, or :class:`MissingBinariesError`."""
    current = plan(root)
    if current.status != "cached":
        raise MissingBinariesError(current)
    return current


class MissingBinariesError(BuildError):
    """Raised by :func:`require_binaries`; the message tells the operator how to build."""

    def __init__(self, current: Plan) -> None:
        self.plan = current
        versions = ", ".join(f"{name} {version}" for name, version in current.versions.items())
        if "manifest.json" in current.missing:
            found = f"no finished build in {current.directory}"
        else:
            found = f"{current.directory} lacks {', '.join(current.missing)}"
        super().__init__(
            f"the test control plane ({versions}) is not built: {found}. "
            f"Run `{BUILD_COMMAND}` from the repository root (needs Go and the Go module "
            f"proxy; {FRESH_BUILD} the first time, seconds when cached)."
        )
