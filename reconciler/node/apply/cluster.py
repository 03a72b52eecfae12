"""The seam to the Kubernetes API server: the only code that imports ``kubernetes``, lazily.

Why raw REST over HTTP/1.1 instead of the generated typed API or ``DynamicClient``:

- objects arrive as plain dicts from the renderer and go back as plain dicts
  to the health rules; the typed models would only add a slow round trip
  through generated classes;
- ``DynamicClient`` discovers every API group of the cluster when it is
  built (dozens of requests); the agent runs once per tick, so discovery here
  is lazy and per group-version, and the resource of a CRD in the same slice
  is learned from the CRD itself (:meth:`Cluster.remember`);
- server-side apply is one PATCH with ``application/apply-patch+yaml``; JSON
  is YAML, so the body is the object serialised once with ``json.dumps``.

- ``import kubernetes`` alone costs 0.3-0.9 s of CPU and ~26 MB (it loads ~850
  generated modules), more than the rest of an agent tick; the common
  kubeconfig (k3s's client certificate, a token, a pinned CA) is read by
  :mod:`.kubeconfig` and spoken to through :mod:`.transport`, a keep-alive pool over
  ``http.client`` (urllib3's import alone was a tenth of a no-op tick).

``kubernetes`` is imported only for what it alone does: kubeconfigs with
``exec`` credential plugins, ``auth-provider`` or a proxy
(:meth:`Cluster.from_kubeconfig` falls back to its loader), and callers that
hand over an ``ApiClient`` (:meth:`Cluster.from_api_client`).

Errors are normalised here (design rule: no third-party exception escapes its
seam), split by what the agent should do next:

- :class:`~reconciler.core.errors.ClusterUnavailable` (temporary, retry next
  tick): connection refused or reset, TLS failures, timeouts, 401 (the node's
  credentials are rejected — not the commit's fault), 408, 409 (a write race),
  429 and every 5xx, including webhooks that cannot be reached;
- :class:`~reconciler.core.errors.ApplyError` (permanent for this input): every
  other 4xx — an invalid object, an admission webhook or policy that denies it,
  RBAC that forbids it, a kind the cluster does not serve, a namespace that
  does not exist — with the object and the server's own message;
- :class:`~reconciler.core.errors.ConfigError`: a kubeconfig that cannot be read.

Every request carries a timeout (connect and read); nothing waits forever.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

from reconciler.core.errors import ApplyError, ClusterUnavailable, ConfigError
from reconciler.node.apply import kubeconfig
from reconciler.node.apply.transport import (
    MAX_ANSWER_BYTES,
    Answer,
    Pool,
    Transport,
    Urllib3Transport,
)

__all__ = ["Cluster", "Resource"]

APPLY_PATCH = "application/apply-patch+yaml"
_METADATA_ONLY = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"
_TEMPORARY_CODES = frozenset({401, 408, 409, 429})
# Server-side apply answers 500 when the object does not fit the kind's schema
# (seen on v1.36 for custom resources: "failed to create typed patch object ...
# expected numeric, got string"). Nothing on the server is down: the object is bad.
_BAD_OBJECT_500 = ("failed to create typed patch object", "failed to create typed live object")
_USER_AGENT = "outpost"


@dataclass(frozen=True)
class Resource:
    """One REST resource: how to reach objects of one kind in one API version."""

    group: str
    version: str
    kind: str
    plural: str
    namespaced: bool

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(self, namespace: str = "", name: str = "") -> str:
        """The URL path of the collection (no name) or of one object."""
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{quote(namespace, safe='')}"
        base += f"/{self.plural}"
        if name:
            base += f"/{quote(name, safe='')}"
        return base


def _temporary(code: int, message: str) -> bool:
    """Whether an error answer means "try again later" rather than "this object is wrong"."""
    if code == 500 and any(marker in message for marker in _BAD_OBJECT_500):
        return False
    return code in _TEMPORARY_CODES or code >= 500 or code < 400


def _decoded(raw: bytes) -> Any:
    """An answer's body as JSON, or the bytes themselves when it is not JSON (None if empty)."""
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return raw


def _describe(code: int, payload: Any) -> tuple[str, str]:
    """(Status reason, message) from an error response body, as close to kubectl's as we can."""
    if isinstance(payload, Mapping) and payload.get("kind") == "Status":
        reason = str(payload.get("reason") or "")
        message = str(payload.get("message") or "").strip()
        details = payload.get("details")
        causes = details.get("causes") if isinstance(details, Mapping) else None
        if isinstance(causes, list) and causes and not message:
            message = "; ".join(
                f"{c.get('field', '')}: {c.get('message', '')}"
                for c in causes
                if isinstance(c, Mapping)
            )
        return reason, message or f"HTTP {code}"
    if isinstance(payload, (bytes, str)):
        text = payload.decode(errors="replace") if isinstance(payload, bytes) else payload
        return "", text.strip()[:500] or f"HTTP {code}"
    return "", f"HTTP {code}"


class Cluster:
    """A connection to one Kubernetes API server, with lazy discovery and normalised errors.

    Thread-safe: the manager sends the objects of one stage from a small pool
    of threads over one connection pool (sized by ``pool_size``).

    Build it with :meth:`from_kubeconfig` (the agent) or :meth:`from_api_client`
    (code that already holds a ``kubernetes.client.ApiClient``).
    """

    def __init__(
        self,
        server: str,
        transport: Transport,
        auth: Callable[[], Mapping[str, str]],
        *,
        timeout_seconds: float = 30.0,
        connect_timeout_seconds: float = 5.0,
    ) -> None:
        self._host = server.rstrip("/")
        self._transport = transport
        self._auth = auth
        self._timeout = (connect_timeout_seconds, timeout_seconds)
        self._lock = threading.Lock()
        # "group/version" -> kind -> Resource
        self._served: dict[str, dict[str, Resource]] = {}
        self._preferred: dict[str, str] = {}

    @classmethod
    def from_kubeconfig(
        cls,
        path: str | os.PathLike[str],
        *,
        context: str | None = None,
        timeout_seconds: float = 30.0,
        connect_timeout_seconds: float = 5.0,
        pool_size: int = 8,
    ) -> Cluster:
        """Read a kubeconfig file (the agent config names it); connect on first use.

        Certificates, tokens and a pinned CA are read by :mod:`.kubeconfig`
        without importing ``kubernetes``; a kubeconfig with an ``exec`` plugin,
        an ``auth-provider`` or a proxy goes through the ``kubernetes`` loader.
        Connection errors surface on the first request, as ClusterUnavailable.
        Connecting is tried three times, at once (`transport.CONNECT_ATTEMPTS`);
        anything longer is the next tick's business.
        """
        endpoint = kubeconfig.read(path, context=context)
        if endpoint is None:
            return cls._via_library(
                path, context, timeout_seconds, connect_timeout_seconds, pool_size
            )
        try:
            pool = Pool(
                endpoint.server,
                context=endpoint.ssl_context() if endpoint.server.startswith("https") else None,
                server_name=endpoint.tls_server_name,
                maxsize=pool_size,
            )
        except ValueError as exc:
            raise ConfigError(f"{endpoint.source}: cannot use this server: {exc}") from exc
        return cls(
            endpoint.server,
            pool,
            endpoint.auth_headers,
            timeout_seconds=timeout_seconds,
            connect_timeout_seconds=connect_timeout_seconds,
        )

    @classmethod
    def _via_library(
        cls,
        path: str | os.PathLike[str],
        context: str | None,
        timeout_seconds: float,
        connect_timeout_seconds: float,
        pool_size: int,
    ) -> Cluster:
        import kubernetes.client
        import kubernetes.config
        import urllib3
        from kubernetes.config.config_exception import ConfigException

        configuration = kubernetes.client.Configuration()
        try:
            kubernetes.config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=os.fspath(path),
                context=context,
                client_configuration=configuration,
                persist_config=False,
            )
        except (ConfigException, OSError, ValueError, TypeError, KeyError) as exc:
            raise ConfigError(f"{os.fspath(path)}: cannot use this kubeconfig: {exc}") from exc
        configuration.connection_pool_maxsize = pool_size
        configuration.retries = urllib3.Retry(total=2, connect=2, read=0, status=0, redirect=0)
        return cls.from_api_client(
            kubernetes.client.ApiClient(configuration),
            timeout_seconds=timeout_seconds,
            connect_timeout_seconds=connect_timeout_seconds,
        )

    @classmethod
    def from_api_client(
        cls,
        api_client: Any,
        *,
        timeout_seconds: float = 30.0,
        connect_timeout_seconds: float = 5.0,
    ) -> Cluster:
        """Use a ``kubernetes.client.ApiClient``'s connection pool and credentials.

        Its ``update_params_for_auth`` runs before every request, so exec
        plugins and token refresh hooks keep working. Closing the Cluster
        closes the client.
        """

        def auth() -> Mapping[str, str]:
            headers: dict[str, str] = {}
            try:
                api_client.update_params_for_auth(headers, [], ["BearerToken"], "", "GET", None)
            except Exception as exc:  # an exec plugin or refresh hook failed: its errors vary
                raise ClusterUnavailable(
                    f"cannot get credentials for {api_client.configuration.host}: {exc}"
                ) from exc
            return headers

        return cls(
            api_client.configuration.host,
            Urllib3Transport(api_client.rest_client.pool_manager, on_close=api_client.close),
            auth,
            timeout_seconds=timeout_seconds,
            connect_timeout_seconds=connect_timeout_seconds,
        )

    @property
    def server(self) -> str:
        return self._host

    def close(self) -> None:
        self._transport.close()

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- transport ---------------------------------------------------------

    def _answer(self, response: Answer, what: str) -> bytes:
        """The whole body of ``response``, its connection given back; a connection that
        breaks meanwhile is ClusterUnavailable naming ``what``."""
        try:
            return response.read()
        except OSError as exc:
            raise ClusterUnavailable(
                f"{what}: reading the answer of the API server at {self._host} failed: {exc}"
            ) from exc

    def _send(
        self,
        method: str,
        path: str,
        *,
        what: str,
        query: Mapping[str, str] | None = None,
        body: bytes | None = None,
        content_type: str | None = None,
        accept: str = "application/json",
        timeout: tuple[float, float] | None = None,
    ) -> Answer:
        """One HTTP request: the response with its body unread, or ClusterUnavailable."""
        url = self._host + path + (f"?{urlencode(query)}" if query else "")
        headers: dict[str, str] = {"Accept": accept, "User-Agent": _USER_AGENT}
        if content_type:
            headers["Content-Type"] = content_type
        headers.update(self._auth())
        connect, read = timeout or self._timeout
        try:
            return self._transport.request(
                method, url, body=body, headers=headers, timeout=(connect, read)
            )
        except OSError as exc:
            reason = getattr(exc, "reason", None) or exc
            raise ClusterUnavailable(
                f"{what}: the Kubernetes API server at {self._host} did not answer: {reason}"
            ) from exc

    def _call(
        self,
        method: str,
        path: str,
        *,
        what: str,
        obj: str = "",
        missing_ok: bool = False,
        exists_ok: bool = False,
        **kwargs: Any,
    ) -> tuple[int, Any]:
        """A request whose answer is JSON: (status code, decoded body); errors normalised.

        With ``missing_ok`` a 404 comes back as ``(404, None)`` instead of an ApplyError,
        with ``exists_ok`` a 409 AlreadyExists as ``(409, None)``.
        """
        response = self._send(method, path, what=what, **kwargs)
        raw = self._answer(response, what)
        code = int(response.status)
        payload = _decoded(raw)
        if 200 <= code < 300:
            if payload is not None and not isinstance(payload, dict):
                raise ClusterUnavailable(
                    f"{what}: {self._host} answered {code} with a body that is not a JSON object"
                )
            return code, payload
        if code == 404 and missing_ok:
            return code, None
        reason, message = _describe(code, payload)
        if code == 409 and exists_ok and reason == "AlreadyExists":
            return code, None
        label = f"{code} {reason}".strip()
        if _temporary(code, message):
            hint = " (the node's credentials were rejected)" if code == 401 else ""
            raise ClusterUnavailable(f"{what}: the API server answered {label}{hint}: {message}")
        raise ApplyError(
            f"{what}: the API server refused it ({label}): {message}",
            obj=obj,
            code=code,
            reason=reason,
        )

    # -- discovery ---------------------------------------------------------

    def remember(self, resource: Resource) -> None:
        """Teach discovery a resource (from a CRD of the slice) before the server lists it."""
        with self._lock:
            self._served.setdefault(f"{resource.group}/{resource.version}", {})[resource.kind] = (
                resource
            )

    def _discover(self, api_version: str) -> dict[str, Resource] | None:
        group, _, version = api_version.rpartition("/")
        path = f"/apis/{group}/{version}" if group else f"/api/{version}"
        code, payload = self._call("GET", path, what=f"discover {api_version}", missing_ok=True)
        if code == 404 or payload is None:
            return None
        found: dict[str, Resource] = {}
        for entry in payload.get("resources") or []:
            name = entry.get("name", "")
            if not name or "/" in name:  # subresources such as deployments/status
                continue
            found[entry["kind"]] = Resource(
                group, version, entry["kind"], name, bool(entry.get("namespaced"))
            )
        with self._lock:
            self._served[f"{group}/{version}"] = found
        return found

    def resource(self, api_version: str, kind: str) -> Resource:
        """The resource serving ``kind`` in ``api_version``; refreshes discovery once on a miss."""
        group, _, version = api_version.rpartition("/")
        with self._lock:
            cached = self._served.get(f"{group}/{version}", {}).get(kind)
        if cached is not None:
            return cached
        served = self._discover(api_version)
        if served is None:
            raise ApplyError(
                f"the cluster does not serve API version {api_version}"
                " (is its CustomResourceDefinition installed?)",
                obj=kind,
                code=404,
                reason="NotFound",
            )
        if kind not in served:
            raise ApplyError(
                f"the cluster serves {api_version} but no kind {kind}"
                f" (it serves {', '.join(sorted(served)) or 'nothing'})",
                obj=kind,
                code=404,
                reason="NotFound",
            )
        return served[kind]

    def preferred_resource(self, group: str, kind: str) -> Resource | None:
        """The resource for a version-less (group, kind), at the group's preferred version.

        None when the cluster no longer serves the group or the kind — for
        pruning that means there is nothing left to delete.
        """
        with self._lock:
            version = self._preferred.get(group)
        if version is None:
            if not group:
                version = "v1"
            else:
                code, payload = self._call(
                    "GET", f"/apis/{group}", what=f"discover API group {group}", missing_ok=True
                )
                if code == 404 or payload is None:
                    return None
                version = (payload.get("preferredVersion") or {}).get("version")
                if not isinstance(version, str):
                    return None
            with self._lock:
                self._preferred[group] = version
        try:
            return self.resource(f"{group}/{version}" if group else version, kind)
        except ApplyError:
            return None

    # -- verbs -------------------------------------------------------------

    def apply(
        self,
        resource: Resource,
        body: Mapping[str, Any],
        *,
        field_manager: str,
        obj: str,
        dry_run: bool = False,
        force: bool = True,
    ) -> tuple[dict[str, Any], bool]:
        """Server-side apply one object; returns (the object as stored, whether it was created)."""
        metadata = body.get("metadata") or {}
        query = {"fieldManager": field_manager, "force": "true" if force else "false"}
        if dry_run:
            query["dryRun"] = "All"
        code, payload = self._call(
            "PATCH",
            resource.path(metadata.get("namespace", ""), metadata["name"]),
            what=f"{'dry-run apply' if dry_run else 'apply'} {obj}",
            obj=obj,
            query=query,
            body=json.dumps(body, separators=(",", ":")).encode(),
            content_type=APPLY_PATCH,
        )
        return payload or {}, code == 201

    def create(
        self, resource: Resource, body: Mapping[str, Any], *, obj: str, dry_run: bool = False
    ) -> dict[str, Any] | None:
        """Create one object (POST); returns it as stored, or None when one of that name
        already exists (409 AlreadyExists). Admission judges the object before the name
        is checked against what is stored, so a dry run answered AlreadyExists passed it."""
        metadata = body.get("metadata") or {}
        code, payload = self._call(
            "POST",
            resource.path(metadata.get("namespace", "")),
            what=f"{'dry-run create' if dry_run else 'create'} {obj}",
            obj=obj,
            exists_ok=True,
            query={"dryRun": "All"} if dry_run else None,
            body=json.dumps(body, separators=(",", ":")).encode(),
            content_type="application/json",
        )
        return None if code == 409 else (payload or {})

    def get(
        self, resource: Resource, namespace: str, name: str, *, obj: str
    ) -> dict[str, Any] | None:
        """The live object, or None when it does not exist."""
        code, payload = self._call(
            "GET", resource.path(namespace, name), what=f"read {obj}", obj=obj, missing_ok=True
        )
        return None if code == 404 else payload

    def list(
        self,
        resource: Resource,
        namespace: str = "",
        *,
        metadata_only: bool = False,
        label_selector: str = "",
    ) -> list[dict[str, Any]]:
        """Every object of a resource in a namespace (or the cluster), paged by the server.

        Items come back with the resource's ``apiVersion`` and ``kind`` (a list
        response leaves them out, a metadata list says PartialObjectMetadata).
        ``metadata_only`` asks for names and resourceVersions without the bodies.
        """
        items: list[dict[str, Any]] = []
        query: dict[str, str] = {"limit": "500"}
        if label_selector:
            query["labelSelector"] = label_selector
        where = f" in {namespace}" if namespace else ""
        while True:
            _, payload = self._call(
                "GET",
                resource.path(namespace),
                what=f"list {resource.plural}{where}",
                query=query,
                accept=_METADATA_ONLY if metadata_only else "application/json",
                missing_ok=True,
            )
            if payload is None:
                return items
            for item in payload.get("items") or []:
                item["apiVersion"] = resource.api_version
                item["kind"] = resource.kind
                items.append(item)
            token = (payload.get("metadata") or {}).get("continue")
            if not token:
                return items
            query["continue"] = token

    def delete(
        self,
        resource: Resource,
        namespace: str,
        name: str,
        *,
        obj: str,
        uid: str | None = None,
        propagation: str = "Background",
    ) -> bool:
        """Delete one object; False when it was already gone or replaced (a new uid)."""
        options: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "DeleteOptions",
            "propagationPolicy": propagation,
        }
        if uid:
            options["preconditions"] = {"uid": uid}
        response = self._send(
            "DELETE",
            resource.path(namespace, name),
            what=f"delete {obj}",
            body=json.dumps(options).encode(),
            content_type="application/json",
        )
        raw = self._answer(response, f"delete {obj}")
        code = int(response.status)
        if 200 <= code < 300:
            return True
        if code == 404 or (code == 409 and uid):
            return False
        reason, message = _describe(code, _decoded(raw))
        label = f"{code} {reason}".strip()
        if _temporary(code, message):
            raise ClusterUnavailable(f"delete {obj}: the API server answered {label}: {message}")
        raise ApplyError(
            f"delete {obj}: the API server refused it ({label}): {message}",
            obj=obj,
            code=code,
            reason=reason,
        )

    def wait_for(
        self,
        resource: Resource,
        namespace: str,
        name: str,
        condition: Callable[[Mapping[str, Any]], bool],
        *,
        timeout_seconds: int,
        obj: str,
    ) -> dict[str, Any] | None:
        """Watch one object until ``condition`` holds; None if the server's timeout passes first.

        A watch instead of a poll: the API server tells us the moment a CRD
        becomes Established, and the server enforces the deadline, so this
        module never reads the clock or sleeps.
        """
        query = {
            "watch": "true",
            "fieldSelector": f"metadata.name={name}",
            "timeoutSeconds": str(max(1, timeout_seconds)),
        }
        response = self._send(
            "GET",
            resource.path(namespace),
            what=f"watch {obj}",
            query=query,
            timeout=(self._timeout[0], float(timeout_seconds) + self._timeout[0] + 5.0),
        )
        code = int(response.status)
        if code != 200:
            reason, message = _describe(code, _decoded(self._answer(response, f"watch {obj}")))
            raise ClusterUnavailable(
                f"watch {obj}: the API server answered {code} {reason}: {message}"
            )
        try:
            for event in _events(response):
                kind, value = event.get("type"), event.get("object")
                if kind == "ERROR":
                    reason, message = _describe(0, value)
                    raise ClusterUnavailable(
                        f"watch {obj}: the watch ended with {reason}: {message}"
                    )
                if kind in ("ADDED", "MODIFIED") and isinstance(value, dict) and condition(value):
                    return value
        except (OSError, ValueError) as exc:
            raise ClusterUnavailable(
                f"watch {obj}: the watch on {self._host} broke: {exc}"
            ) from exc
        finally:
            response.release()
        return None

    def version(self) -> dict[str, Any]:
        """``GET /version``: the cheapest question that proves the server answers."""
        _, payload = self._call("GET", "/version", what="read the server version")
        return payload or {}


def _events(raw: Answer, longest: int = MAX_ANSWER_BYTES) -> Iterator[dict[str, Any]]:
    """Decode a watch stream: one JSON object per line, none longer than ``longest``."""
    pending = bytearray()
    for chunk in raw.stream(65536):
        start = len(pending)  # only the new bytes are searched for the end of a line
        pending += chunk
        while (end := pending.find(b"\n", start)) >= 0:
            line = bytes(pending[:end])
            del pending[: end + 1]
            start = 0
            if line.strip():
                yield json.loads(line)
        if len(pending) > longest:
            raise ValueError(f"an event of the watch is longer than {longest:,} bytes")
    if pending.strip():
        yield json.loads(pending)
