"""Read a kubeconfig for the common case without importing the ``kubernetes`` package.

Why: ``import kubernetes`` loads ~850 generated model modules — 0.3 to 0.9 s and
~26 MB on a store's small node, paid on every tick, more than the rest of a
no-op tick together. A site node's kubeconfig is k3s's ``/etc/rancher/k3s/k3s.yaml``
(a client certificate and key, a pinned CA) or a service-account token; both are
a few lines of TLS set-up that :mod:`ssl` and urllib3 do directly.

What is read here: ``server``, ``certificate-authority(-data)``,
``insecure-skip-tls-verify``, ``tls-server-name``; ``client-certificate(-data)``,
``client-key(-data)``, ``token``, ``tokenFile``, ``username``/``password``.
Relative file paths are relative to the kubeconfig's directory, as kubectl does.

What is not: ``exec`` credential plugins, ``auth-provider`` and ``proxy-url``.
For those :func:`read` returns None and the caller falls back to the
``kubernetes`` library's loader (imported only then).
"""

from __future__ import annotations

import base64
import binascii
import os
import ssl
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from reconciler.core.errors import ConfigError, DocumentError
from reconciler.core.source import CONFIGURED, read_file

__all__ = ["Endpoint", "read"]

MAX_KUBECONFIG_BYTES = 1024 * 1024
"""Certificates inline as base64 included, a kubeconfig is a few kilobytes."""
MAX_TOKEN_BYTES = 64 * 1024
"""A bearer token (a service-account JWT is about a kilobyte)."""


@dataclass(frozen=True)
class Endpoint:
    """Where the API server is and how to prove who we are, from one kubeconfig context."""

    source: str
    server: str
    ca_file: str | None = None
    ca_data: bytes | None = None
    insecure: bool = False
    tls_server_name: str | None = None
    cert_file: str | None = None
    cert_data: bytes | None = None
    key_file: str | None = None
    key_data: bytes | None = None
    token: str | None = None
    token_file: str | None = None
    username: str | None = None
    password: str | None = None

    def ssl_context(self) -> ssl.SSLContext:
        """A client TLS context: the pinned CA (or the system's), and our certificate if any."""
        try:
            if self.insecure:
                context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            else:
                cadata = self.ca_data.decode() if self.ca_data is not None else None
                context = ssl.create_default_context(cafile=self.ca_file, cadata=cadata)
            if self.cert_file or self.cert_data:
                _load_chain(context, self)
        except (OSError, ssl.SSLError, ValueError) as exc:
            raise ConfigError(
                f"{self.source}: cannot set up TLS from this kubeconfig: {exc}"
            ) from exc
        return context

    def auth_headers(self) -> dict[str, str]:
        """The Authorization header, if the kubeconfig gives a token or a password.

        A ``tokenFile`` is read on every call: projected service-account tokens
        are rotated on disk while the agent runs.
        """
        token = self.token
        if self.token_file:
            try:
                raw = read_file(
                    Path(self.token_file),
                    self.token_file,
                    MAX_TOKEN_BYTES,
                    holder=CONFIGURED,
                    follow_links=True,  # a projected service-account token is a link
                )
            except DocumentError as exc:
                raise ConfigError(f"{self.source}: cannot read tokenFile: {exc}") from None
            token = raw.decode("utf-8", "replace").strip()
        if token:
            return {"Authorization": f"Bearer {token}"}
        if self.username is not None and self.password is not None:
            pair = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
            return {"Authorization": f"Basic {pair}"}
        return {}


def _load_chain(context: ssl.SSLContext, endpoint: Endpoint) -> None:
    """Load the client certificate; inline data goes through a private temporary directory.

    :mod:`ssl` loads certificate chains only from files. The files live in a
    0700 directory for the duration of the call and are removed at once.
    """
    if endpoint.cert_data is None and endpoint.key_data is None:
        context.load_cert_chain(str(endpoint.cert_file), endpoint.key_file)
        return
    with tempfile.TemporaryDirectory(prefix="outpost-tls-") as private:
        cert = endpoint.cert_file
        key = endpoint.key_file
        if endpoint.cert_data is not None:
            cert = _private_file(Path(private) / "client.crt", endpoint.cert_data)
        if endpoint.key_data is not None:
            key = _private_file(Path(private) / "client.key", endpoint.key_data)
        context.load_cert_chain(str(cert), key)


def _private_file(path: Path, data: bytes) -> str:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    return str(path)


def _named(entries: Any, name: str, what: str, source: str) -> Mapping[str, Any]:
    if isinstance(entries, list):
        for entry in entries:
            if isinstance(entry, Mapping) and entry.get("name") == name:
                body = entry.get(what)
                return body if isinstance(body, Mapping) else {}
    raise ConfigError(f"{source}: no {what} named {name!r}")


def _data(value: Any, field: str, source: str) -> bytes | None:
    if value is None:
        return None
    try:
        return base64.b64decode(str(value), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ConfigError(f"{source}: {field} is not base64: {exc}") from exc


_SAFE_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
"""libyaml's safe loader when PyYAML has it: a k3s kubeconfig carries its certificates inline,
a few kilobytes the pure-Python loader takes milliseconds over at every tick."""


def read(path: str | os.PathLike[str], *, context: str | None = None) -> Endpoint | None:
    """The endpoint of ``context`` (default: current-context), or None if it needs the library."""
    source = os.fspath(path)
    text = ""
    try:
        raw = read_file(
            Path(source), source, MAX_KUBECONFIG_BYTES, holder=CONFIGURED, follow_links=True
        )
        text = raw.decode("utf-8")
        document = yaml.load(text, Loader=_SAFE_LOADER)  # noqa: S506 - CSafeLoader or SafeLoader
    except DocumentError as exc:
        raise ConfigError(f"{source}: cannot read the kubeconfig: {exc.message}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{source}: cannot read the kubeconfig: {exc}") from exc
    except yaml.YAMLError as exc:
        from reconciler.core.loader import yaml_error

        error = yaml_error(exc, text, source)
        raise ConfigError(f"{error.mark}: the kubeconfig is not YAML: {error.message}") from None
    if not isinstance(document, Mapping):
        raise ConfigError(f"{source}: the kubeconfig is not a mapping")
    name = context or document.get("current-context")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{source}: no context given and no current-context set")
    ctx = _named(document.get("contexts"), name, "context", source)
    cluster = _named(document.get("clusters"), str(ctx.get("cluster", "")), "cluster", source)
    user_name = ctx.get("user")
    user = _named(document.get("users"), str(user_name), "user", source) if user_name else {}
    if "exec" in user or "auth-provider" in user or "proxy-url" in cluster:
        return None
    server = cluster.get("server")
    if not isinstance(server, str) or not server.startswith(("https://", "http://")):
        raise ConfigError(f"{source}: cluster {ctx.get('cluster')!r} has no https:// server")
    base = Path(source).resolve().parent

    def file(field: str, entry: Mapping[str, Any]) -> str | None:
        value = entry.get(field)
        return str(base / str(value)) if value else None

    return Endpoint(
        source=source,
        server=server.rstrip("/"),
        ca_file=file("certificate-authority", cluster),
        ca_data=_data(
            cluster.get("certificate-authority-data"), "certificate-authority-data", source
        ),
        insecure=bool(cluster.get("insecure-skip-tls-verify", False)),
        tls_server_name=cluster.get("tls-server-name") or None,
        cert_file=file("client-certificate", user),
        cert_data=_data(user.get("client-certificate-data"), "client-certificate-data", source),
        key_file=file("client-key", user),
        key_data=_data(user.get("client-key-data"), "client-key-data", source),
        token=user.get("token") or None,
        token_file=file("tokenFile", user),
        username=user.get("username"),
        password=user.get("password"),
    )
