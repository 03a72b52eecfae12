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

TEST_CHART = Path(__file__).resolve().parents[1] / "tests" / "vendor" / "chart"
"""``shop-broker``: a small real chart (ConfigMap, Service, Deployment) the tests publish."""
TEST_IMAGE = (
    "registry.example.com/plant/mosquitto@sha256:"
    "166cd4a92b4598584d10cefb214c24307677b6b38351095e26ff1d7e958fb4dc"
)


def shop_broker_app(repository: str, versions: dict[str, str], namespace: str = "broker") -> str:
    """``apps/shop-broker/app.yaml`` from ``repository``: app version → chart version; the
    values carry site placeholders (``${maxConnections}``, ``${site.name}``)."""
    releases = "".join(
        f'    "{app}":\n      images: {{broker: "{TEST_IMAGE}"}}\n'
        f"      source: {{version: {chart}}}\n"
        for app, chart in versions.items()
    )
    return (
        "apiVersion: outpost/v1\nkind: App\nmetadata: {name: shop-broker}\nspec:\n"
        f"  namespace: {namespace}\n"
        "  source:\n    helm:\n      chart: shop-broker\n"
        f"      repository: {repository}\n"
        "      values:\n"
        "        image: ${images.broker}\n"
        "        maxConnections: ${maxConnections}\n"
        "        siteName: ${site.name}\n"
        f"  versions:\n{releases}"
        "  parameters:\n    type: object\n"
        "    properties:\n      maxConnections: {type: integer, minimum: 1}\n"
        "    required: [maxConnections]\n    additionalProperties: false\n"
        "  defaults: {maxConnections: 100}\n"
    )


def add_to_fleet(fleet_file: Path, app: str, version: str) -> None:
    """Set ``app: {version: V}`` in a fleet file's ``spec.apps`` (added or replaced)."""
    lines = [
        line
        for line in fleet_file.read_text().splitlines(keepends=True)
        if f"    {app}:" not in line
    ]
    at = lines.index("  apps:\n") + 1
    lines.insert(at, f"    {app}: {{version: {version}}}\n")
    fleet_file.write_text("".join(lines))


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


@dataclass
class OciRegistry:
    """Serves packaged charts as OCI artifacts under ``/v2/<namespace>/<chart>``; ``url`` is
    the ``oci://`` reference without the chart name, ``ca_file`` the certificate to trust."""

    url: str
    ca_file: Path
    artifacts: dict[str, bytes]

    def publish(self, archive: Path, namespace: str = "charts") -> str:
        """Store a ``helm package`` archive as ``<namespace>/<name>:<version>``."""
        import json
        import tarfile

        import yaml

        with tarfile.open(archive) as tar:
            chart_yaml = next(m for m in tar.getmembers() if m.name.endswith("/Chart.yaml"))
            handle = tar.extractfile(chart_yaml)
            assert handle is not None
            meta = yaml.safe_load(handle.read())
        config = json.dumps(meta).encode()
        layer = archive.read_bytes()
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": _OCI_MANIFEST,
                "config": _descriptor("application/vnd.cncf.helm.config.v1+json", config),
                "layers": [
                    _descriptor("application/vnd.cncf.helm.chart.content.v1.tar+gzip", layer)
                ],
            }
        ).encode()
        repository = f"{namespace}/{meta['name']}"
        for blob in (config, layer, manifest):
            self.artifacts[f"{repository}/blobs/{sha256_bytes(blob)}"] = blob
        self.artifacts[f"{repository}/manifests/{meta['version']}"] = manifest
        self.artifacts[f"{repository}/manifests/{sha256_bytes(manifest)}"] = manifest
        tags = sorted(
            key.rsplit("/", 1)[1]
            for key in self.artifacts
            if key.startswith(f"{repository}/manifests/") and ":" not in key.rsplit("/", 1)[1]
        )
        self.artifacts[f"{repository}/tags/list"] = json.dumps(
            {"name": repository, "tags": tags}
        ).encode()
        return f"{self.url}/{meta['name']}"


_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def _descriptor(media_type: str, data: bytes) -> dict[str, object]:
    return {
        "mediaType": media_type,
        "digest": "sha256:" + hashlib.sha256(data).hexdigest(),
        "size": len(data),
    }


def sha256_bytes(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@contextmanager
def serve_oci(workdir: Path) -> Iterator[OciRegistry]:
    """A read-only OCI distribution endpoint over TLS on 127.0.0.1 (a certificate made here).

    Stands in for a registry: none ships in a package registry this project reaches, and
    ``helm pull oci://`` only needs the distribution API's GET/HEAD of manifests, blobs and
    tags, which this serves byte for byte as ``publish`` stored them."""
    import ssl

    from tools.testcluster._pki import loopback_server

    ca, cert, key = loopback_server(workdir / "pki", "registry")
    artifacts: dict[str, bytes] = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def _answer(self, body: bool) -> None:
            path = self.path.split("?", 1)[0]
            if path in ("/v2", "/v2/"):
                data: bytes | None = b"{}"
            else:
                data = artifacts.get(path.removeprefix("/v2/"))
            if data is None:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(200)
            kind = "application/json"
            if "/manifests/" in path:
                kind = _OCI_MANIFEST
                self.send_header("Docker-Content-Digest", sha256_bytes(data))
            elif "/blobs/" in path:
                kind = "application/octet-stream"
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if body:
                self.wfile.write(data)

        def do_GET(self) -> None:
            self._answer(True)

        def do_HEAD(self) -> None:
            self._answer(False)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(cert), str(key))
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        yield OciRegistry(f"oci://127.0.0.1:{port}/charts", ca, artifacts)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
