"""A Helm chart repository on loopback, made with the real ``helm package`` / ``helm repo index``.

For the tests of ``outpost app vendor``: :class:`ChartRepository` packages a chart folder at
a version into a directory, indexes it, and serves it with ``http.server`` from a thread on
``127.0.0.1`` (a free port), so ``helm pull --repo`` fetches it like any chart repository.
Nothing leaves the machine; the server stops when the context manager exits.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import os
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


@dataclass
class ChartRepository:
    """``directory`` holds the packaged charts and ``index.yaml``; ``url`` serves them."""

    directory: Path
    url: str
    helm: Path

    def publish(
        self, chart: Path, version: str, *, edit: Callable[[Path], None] | None = None
    ) -> Path:
        """Package ``chart`` (a copy, changed by ``edit``) as ``version``, re-index; the .tgz."""
        work = self.directory.parent / f"src-{version}-{os.urandom(4).hex()}"
        shutil.copytree(chart, work / chart.name)
        if edit is not None:
            edit(work / chart.name)
        for old in self.directory.glob(f"*-{version}.tgz"):
            old.unlink()  # republishing the same version: the case vendoring must refuse
        self._helm(
            "package", str(work / chart.name), "--version", version, "-d", str(self.directory)
        )
        self._helm("repo", "index", str(self.directory), "--url", self.url)
        [archive] = self.directory.glob(f"*-{version}.tgz")
        return archive

    def _helm(self, *args: str) -> None:
        home = self.directory.parent / "helm-home"
        env = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": str(home),
            "HELM_CACHE_HOME": str(home / "cache"),
            "HELM_CONFIG_HOME": str(home / "config"),
            "HELM_DATA_HOME": str(home / "data"),
        }
        subprocess.run(
            [str(self.helm), *args], check=True, capture_output=True, env=env, timeout=120
        )


def sha256(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def serve(workdir: Path, helm: Path) -> Iterator[ChartRepository]:
    """An empty chart repository in ``workdir/charts`` served on 127.0.0.1 until exit."""
    directory = workdir / "charts"
    directory.mkdir(parents=True)
    handler = functools.partial(_Quiet, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield ChartRepository(directory, f"http://127.0.0.1:{server.server_address[1]}", helm)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
