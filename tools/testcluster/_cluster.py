"""Start and stop one control plane on loopback: etcd, kube-apiserver, kube-controller-manager,
kube-scheduler and kwok, with simulated nodes and the KubeVirt ``VirtualMachine`` CRD.

Decisions:

- Every port is a free loopback port picked at start, so several clusters (parallel CI jobs,
  an ``up`` cluster next to a test session) run side by side and nothing listens beyond
  127.0.0.1; if another process takes a port before a component binds it, start-up retries.
- Each process runs in its own session and process group; stopping signals the group, so
  anything a component forks goes with it. With ``die_with_parent=True`` (the pytest fixture)
  each process also gets ``PR_SET_PDEATHSIG=SIGKILL``: if the test runner is killed outright,
  the kernel ends the control plane too, and nothing is left behind even without our cleanup.
- ``cluster.json`` in the work directory records every pid with its binary, written before
  each process starts being waited on, so ``down`` from another process can stop a cluster
  whose ``up`` failed half way. Before signalling a recorded pid, ``down`` checks that it
  still runs the recorded binary: a pid reused by an unrelated process is never killed.
- The admin identity is a static bearer token (group ``system:masters``); the controller
  manager and scheduler use client certificates for the users the default RBAC roles name.
  Their own HTTPS ports serve only the always-allowed ``/healthz`` we poll, so they get no
  delegated authentication (which would also need a front-proxy CA to stay quiet).
- etcd runs without fsync on loopback http: its data is thrown away with the cluster.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from . import _build, _pki

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

HERE = Path(__file__).resolve().parent
CRD_MANIFEST = HERE / "kubevirt-virtualmachine-crd.yaml"
NODES_MANIFEST = HERE / "nodes.yaml"
STATE_FILE = "cluster.json"
FIELD_MANAGER = "outpost-testcluster"
KWOK_NODE_ANNOTATION = ("kwok.x-k8s.io/node", "fake")
"""kwok manages only nodes with this annotation, so a stray real node would be left alone."""

#: Order matters: components start in this order and stop in reverse.
COMPONENT_ORDER = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")


class ClusterError(Exception):
    """A component did not start, did not become ready, or would not stop."""


@dataclass(frozen=True)
class Process:
    name: str
    pid: int
    binary: str
    log: str


@dataclass
class Cluster:
    """A running control plane. Create with :func:`start`, or :func:`attach` to one ``up`` made.

    ``kubeconfig`` is an admin kubeconfig (token auth, CA pinned) for any client;
    ``server`` is the API server URL; ``token`` and ``ca_file`` are the same credentials
    for clients that do not read kubeconfig files.
    """

    workdir: Path
    kubeconfig: Path
    server: str
    token: str
    ca_file: Path
    nodes: tuple[str, ...]
    bin_dir: Path
    processes: list[Process] = field(default_factory=list)
    startup: dict[str, float] = field(default_factory=dict)
    """Seconds from the first spawn to each start-up milestone, for logs and reports."""
    _popen: dict[int, subprocess.Popen[bytes]] = field(
        default_factory=dict, repr=False, compare=False
    )

    def env(self) -> dict[str, str]:
        """Environment for subprocesses (``kubectl``, ``outpost``) to talk to this cluster."""
        return {
            "KUBECONFIG": str(self.kubeconfig),
            "OUTPOST_TESTCLUSTER_SERVER": self.server,
            "OUTPOST_TESTCLUSTER_BIN": str(self.bin_dir),
        }

    def api_client(self) -> ApiClient:
        """A new ``kubernetes.client.ApiClient`` for the admin user. Close it when done."""
        from kubernetes import client

        configuration = client.Configuration()
        configuration.host = self.server
        configuration.ssl_ca_cert = str(self.ca_file)
        configuration.api_key = {"authorization": self.token}
        configuration.api_key_prefix = {"authorization": "Bearer"}
        return client.ApiClient(configuration)

    def kubectl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run the pinned kubectl against this cluster and capture its output."""
        return subprocess.run(
            [str(self.bin_dir / "kubectl"), "--kubeconfig", str(self.kubeconfig), *args],
            capture_output=True,
            text=True,
            check=check,
            timeout=120,
        )

    def pids(self) -> list[int]:
        return [p.pid for p in self.processes]

    def alive(self) -> list[Process]:
        """Recorded processes that still run their recorded binary."""
        return [p for p in self.processes if _runs(p)]

    def stop(self, timeout: float = 15.0) -> None:
        """Stop every component, reap it, and delete etcd's data; idempotent.

        Components stop one at a time, newest first: SIGTERM to the process group, SIGKILL
        after ``timeout`` seconds. The order matters — an API server whose etcd is already
        gone spends its whole shutdown retrying storage. Raises :class:`ClusterError` if a
        process survives SIGKILL.
        """
        for process in reversed(self.processes):
            for sig, grace in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10.0)):
                if not self._still_there(process):
                    break
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(process.pid, sig)
                deadline = time.monotonic() + grace
                while time.monotonic() < deadline and self._still_there(process):
                    time.sleep(0.05)
        survivors = [p for p in self.processes if self._still_there(p)]
        if survivors:
            raise ClusterError(
                "test control plane processes survived SIGKILL: "
                + ", ".join(f"{p.name} (pid {p.pid})" for p in survivors)
            )
        shutil.rmtree(self.workdir / "etcd-data", ignore_errors=True)
        _write_state(self, stopped=True)

    def _still_there(self, process: Process) -> bool:
        """Reap ``process`` if it is our child and has exited; is it (or its group) alive?"""
        popen = self._popen.get(process.pid)
        if popen is not None and popen.poll() is not None:
            del self._popen[process.pid]
        return _runs(process) or _group_alive(process.pid)

    def log_tail(self, name: str, lines: int = 30) -> str:
        for process in self.processes:
            if process.name == name:
                text = Path(process.log).read_text(encoding="utf-8", errors="replace")
                return "\n".join(text.splitlines()[-lines:])
        return ""


def start(
    workdir: Path,
    *,
    cache: Path | None = None,
    die_with_parent: bool = False,
    timeout: float = 180.0,
) -> Cluster:
    """Start a control plane in ``workdir`` and return it once it is usable.

    Usable means: ``/readyz`` answers ok, the VirtualMachine CRD is Established, every
    node in nodes.yaml is Ready, the controller manager and scheduler report healthy, and
    the ``default`` service account exists (Pods cannot be created before it does).
    On any failure everything started so far is stopped and :class:`ClusterError` names the
    component and quotes its log. Ports are picked free but can be taken by another process
    before a component binds them; that start is retried with new ports, twice at most.
    """
    for attempt in range(3):
        try:
            return _start_once(workdir, cache, die_with_parent, timeout)
        except _PortTakenError:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


class _PortTakenError(ClusterError):
    """A component exited because its port was taken between picking and binding it."""


def _start_once(
    workdir: Path, cache: Path | None, die_with_parent: bool, timeout: float
) -> Cluster:
    plan = _build.require_binaries(cache)
    bin_dir = plan.bin_dir
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    logs = workdir / "logs"
    logs.mkdir(exist_ok=True)
    pki = _pki.generate(
        workdir / "pki",
        {
            "kube-controller-manager": ("system:kube-controller-manager", ()),
            "kube-scheduler": ("system:kube-scheduler", ()),
        },
    )
    token = secrets.token_urlsafe(32)
    tokens = workdir / "tokens.csv"
    tokens.write_text(f"{token},outpost-admin,outpost-admin,system:masters\n", encoding="utf-8")
    tokens.chmod(0o600)
    ports = _free_ports(5)
    etcd_client, etcd_peer, api_port, kcm_port, sched_port = ports
    server = f"https://127.0.0.1:{api_port}"
    kubeconfig = _write_kubeconfig(workdir / "kubeconfig", server, pki.ca_cert, {"token": token})
    component_kubeconfigs = {
        name: _write_kubeconfig(
            workdir / f"{name}.kubeconfig",
            server,
            pki.ca_cert,
            {"client-certificate": str(cert), "client-key": str(key)},
        )
        for name, (cert, key) in pki.clients.items()
    }
    nodes = _load_nodes()
    cluster = Cluster(
        workdir=workdir,
        kubeconfig=kubeconfig,
        server=server,
        token=token,
        ca_file=pki.ca_cert,
        nodes=tuple(n["metadata"]["name"] for n in nodes),
        bin_dir=bin_dir,
    )
    argv = _argv(
        bin_dir,
        workdir,
        pki,
        plan,
        tokens,
        component_kubeconfigs,
        kubeconfig,
        etcd_client=etcd_client,
        etcd_peer=etcd_peer,
        api_port=api_port,
        kcm_port=kcm_port,
        sched_port=sched_port,
    )
    api = _Api(server, token, pki.ca_cert)
    began = time.monotonic()
    deadline = began + timeout

    def mark(milestone: str) -> None:
        cluster.startup[milestone] = round(time.monotonic() - began, 2)

    try:
        _spawn(cluster, "etcd", argv["etcd"], logs, die_with_parent)
        _wait(cluster, "etcd", deadline, lambda: _http_ok(f"http://127.0.0.1:{etcd_client}/health"))
        mark("etcd healthy")
        _spawn(cluster, "kube-apiserver", argv["kube-apiserver"], logs, die_with_parent)
        _wait(cluster, "kube-apiserver", deadline, lambda: api.get_text("/readyz") == "ok")
        mark("apiserver ready")
        # Only now: the controller manager and scheduler exit (as on a real node, where the
        # kubelet would restart them) if their RBAC roles, created by the API server's
        # bootstrap hook that /readyz waits for, are not there yet.
        for name in COMPONENT_ORDER[2:]:
            _spawn(cluster, name, argv[name], logs, die_with_parent)
        api.apply(
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
            yaml.safe_load(CRD_MANIFEST.read_text(encoding="utf-8")),
        )
        for node in nodes:
            api.create("/api/v1/nodes", node)
        crd = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/virtualmachines.kubevirt.io"
        _wait(cluster, "kube-apiserver", deadline, lambda: _condition(api.get(crd), "Established"))
        node_paths = [f"/api/v1/nodes/{name}" for name in cluster.nodes]
        _wait(
            cluster,
            "kwok",
            deadline,
            lambda: all(_condition(api.get(path), "Ready") for path in node_paths),
        )
        mark("nodes ready")
        _wait(cluster, "kube-controller-manager", deadline, lambda: _healthz(kcm_port))
        mark("kcm healthy")
        _wait(cluster, "kube-scheduler", deadline, lambda: _healthz(sched_port))
        mark("scheduler healthy")
        _wait(
            cluster,
            "kube-controller-manager",
            deadline,
            lambda: api.get("/api/v1/namespaces/default/serviceaccounts/default") is not None,
        )
        mark("usable")
        _write_state(cluster)
    except BaseException:
        cluster.stop()
        raise
    return cluster


@contextlib.contextmanager
def running(workdir: Path, *, cache: Path | None = None) -> Iterator[Cluster]:
    """:func:`start` a cluster for the life of a ``with`` block, and stop it however it ends.

    Normal exit, an exception and Ctrl-C unwind the block. SIGTERM (CI cancelling a job)
    would end Python without unwinding, so from before start-up until the block ends SIGTERM
    raises KeyboardInterrupt instead, which pytest handles by finishing the session and
    tearing fixtures down. ``atexit`` covers an interpreter exit that skips the block's end,
    and ``die_with_parent`` covers SIGKILL, which no Python code survives. The kernel ties
    that last guard to the calling thread, so call this from the main thread (pytest does).
    """
    previous: Any = None
    if threading.current_thread() is threading.main_thread():
        current = signal.getsignal(signal.SIGTERM)
        if current in (signal.SIG_DFL, None):
            previous = signal.SIG_DFL
            signal.signal(signal.SIGTERM, _interrupt)
    try:
        cluster = start(workdir, cache=cache, die_with_parent=True)
        atexit.register(cluster.stop)
        try:
            yield cluster
        finally:
            try:
                cluster.stop()
            finally:
                atexit.unregister(cluster.stop)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def attach(workdir: Path) -> Cluster:
    """The cluster ``python -m tools.testcluster up`` recorded in ``workdir``."""
    path = workdir / STATE_FILE
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ClusterError(f"{path}: no cluster recorded here (run `up` first)") from None
    return Cluster(
        workdir=Path(state["workdir"]),
        kubeconfig=Path(state["kubeconfig"]),
        server=state["server"],
        token=state["token"],
        ca_file=Path(state["ca_file"]),
        nodes=tuple(state["nodes"]),
        bin_dir=Path(state["bin_dir"]),
        processes=[Process(**p) for p in state["processes"]],
        startup=state.get("startup", {}),
    )


def _argv(
    bin_dir: Path,
    workdir: Path,
    pki: _pki.Pki,
    plan: _build.Plan,
    tokens: Path,
    component_kubeconfigs: dict[str, Path],
    admin_kubeconfig: Path,
    *,
    etcd_client: int,
    etcd_peer: int,
    api_port: int,
    kcm_port: int,
    sched_port: int,
) -> dict[str, list[str]]:
    peer = f"http://127.0.0.1:{etcd_peer}"
    client = f"http://127.0.0.1:{etcd_client}"
    return {
        "etcd": [
            str(bin_dir / "etcd"),
            "--name=outpost",
            f"--data-dir={workdir / 'etcd-data'}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=outpost={peer}",
            "--unsafe-no-fsync=true",
            "--log-level=warn",
        ],
        "kube-apiserver": [
            str(bin_dir / "kube-apiserver"),
            f"--etcd-servers={client}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={api_port}",
            f"--cert-dir={workdir / 'apiserver-certs'}",
            f"--tls-cert-file={pki.serving_cert}",
            f"--tls-private-key-file={pki.serving_key}",
            f"--client-ca-file={pki.ca_cert}",
            f"--token-auth-file={tokens}",
            "--authorization-mode=RBAC",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={pki.sa_pub}",
            f"--service-account-signing-key-file={pki.sa_key}",
            f"--service-cluster-ip-range={_pki.SERVICE_CIDR}",
            "--allow-privileged=true",
            # The `kubernetes` Service cannot point at a loopback address (validation refuses
            # it every 10 s); nothing in this cluster runs in a Pod that would use it.
            "--endpoint-reconciler-type=none",
            "--profiling=false",
        ],
        "kube-controller-manager": [
            str(bin_dir / "kube-controller-manager"),
            f"--kubeconfig={component_kubeconfigs['kube-controller-manager']}",
            "--bind-address=127.0.0.1",
            f"--secure-port={kcm_port}",
            f"--cert-dir={workdir / 'kcm-certs'}",
            "--leader-elect=false",
            "--use-service-account-credentials=true",
            f"--service-account-private-key-file={pki.sa_key}",
            f"--root-ca-file={pki.ca_cert}",
            f"--cluster-signing-cert-file={pki.ca_cert}",
            f"--cluster-signing-key-file={pki.ca_key}",
            "--profiling=false",
        ],
        "kube-scheduler": [
            str(bin_dir / "kube-scheduler"),
            f"--kubeconfig={component_kubeconfigs['kube-scheduler']}",
            "--bind-address=127.0.0.1",
            f"--secure-port={sched_port}",
            f"--cert-dir={workdir / 'scheduler-certs'}",
            "--leader-elect=false",
            "--profiling=false",
        ],
        "kwok": [
            str(bin_dir / "kwok"),
            f"--kubeconfig={admin_kubeconfig}",
            f"--config={plan.kwok_stages}",
            "--manage-all-nodes=false",
            "--manage-nodes-with-annotation-selector=" + "=".join(KWOK_NODE_ANNOTATION),
            "--node-lease-duration-seconds=40",
        ],
    }


def _load_nodes() -> list[dict[str, Any]]:
    nodes = [d for d in yaml.safe_load_all(NODES_MANIFEST.read_text(encoding="utf-8")) if d]
    for node in nodes:
        annotations = node.setdefault("metadata", {}).setdefault("annotations", {})
        annotations[KWOK_NODE_ANNOTATION[0]] = KWOK_NODE_ANNOTATION[1]
    return nodes


def _spawn(cluster: Cluster, name: str, argv: list[str], logs: Path, die_with_parent: bool) -> None:
    log_path = logs / f"{name}.log"
    with log_path.open("ab") as log:
        popen = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=cluster.workdir,
            start_new_session=True,
            preexec_fn=_die_with(os.getpid()) if die_with_parent else None,
        )
    cluster._popen[popen.pid] = popen
    cluster.processes.append(Process(name, popen.pid, argv[0], str(log_path)))
    _write_state(cluster)


def _die_with(parent: int) -> Callable[[], None]:
    """A ``preexec_fn`` asking the kernel to SIGKILL the child when ``parent`` dies."""
    libc = ctypes.CDLL(None, use_errno=True)

    def arm() -> None:
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return arm


def _write_state(cluster: Cluster, *, stopped: bool = False) -> None:
    if not cluster.workdir.is_dir():  # `down` removed it; nothing left to record
        return
    state = {
        "workdir": str(cluster.workdir),
        "kubeconfig": str(cluster.kubeconfig),
        "server": cluster.server,
        "token": cluster.token,
        "ca_file": str(cluster.ca_file),
        "nodes": list(cluster.nodes),
        "bin_dir": str(cluster.bin_dir),
        "processes": [vars(p) for p in cluster.processes],
        "startup": cluster.startup,
        "stopped": stopped,
    }
    path = cluster.workdir / STATE_FILE
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # it holds the token
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(state, handle, indent=2)
    tmp.replace(path)


def _runs(process: Process) -> bool:
    """Is ``process.pid`` alive (not a zombie) and still running ``process.binary``?"""
    try:
        exe = os.readlink(f"/proc/{process.pid}/exe")
        stat = Path(f"/proc/{process.pid}/stat").read_text(encoding="utf-8")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return False
    state = stat.rsplit(")", 1)[1].split()[0]
    return state != "Z" and exe.removesuffix(" (deleted)") == process.binary


def _group_alive(pgid: int) -> bool:
    """Any live process in process group ``pgid`` (a component's forked children)?"""
    return any(True for _ in group_members(pgid))


def group_members(pgid: int) -> Iterator[int]:
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text(encoding="utf-8")
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] != "Z" and int(fields[2]) == pgid:
            yield int(entry.name)


def _free_ports(count: int) -> list[int]:
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _write_kubeconfig(path: Path, server: str, ca: Path, user: dict[str, str]) -> Path:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "outpost-test",
                "cluster": {"server": server, "certificate-authority": str(ca)},
            }
        ],
        "users": [{"name": "outpost-test", "user": user}],
        "contexts": [
            {"name": "outpost-test", "context": {"cluster": "outpost-test", "user": "outpost-test"}}
        ],
        "current-context": "outpost-test",
    }
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        yaml.safe_dump(config, handle, sort_keys=False)
    return path


def _wait(cluster: Cluster, component: str, deadline: float, ready: Callable[[], bool]) -> None:
    """Poll ``ready`` until it is true; fail early if a component process has exited."""
    while True:
        for process in cluster.processes:
            popen = cluster._popen.get(process.pid)
            if popen is not None and popen.poll() is not None:
                tail = cluster.log_tail(process.name)
                error = _PortTakenError if "address already in use" in tail else ClusterError
                raise error(
                    f"{process.name} exited with status {popen.returncode} during start-up; "
                    f"log {process.log}:\n{tail}"
                )
        try:
            if ready():
                return
        except (OSError, ValueError):
            pass
        if time.monotonic() > deadline:
            raise ClusterError(
                f"timed out waiting for {component} to become ready; log "
                f"{cluster.workdir / 'logs' / (component + '.log')}:\n{cluster.log_tail(component)}"
            )
        time.sleep(0.2)


def _http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as response:  # loopback http etcd
        return bool(response.status == 200)


def _healthz(port: int) -> bool:
    """kube-controller-manager and kube-scheduler serve /healthz with a self-signed cert."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # loopback, self-signed, no secrets exchanged
    url = f"https://127.0.0.1:{port}/healthz"
    with urllib.request.urlopen(url, timeout=2, context=context) as response:
        return bool(response.read() == b"ok")


def _condition(obj: dict[str, Any] | None, kind: str) -> bool:
    conditions: Iterable[dict[str, Any]] = (obj or {}).get("status", {}).get("conditions") or ()
    return any(c.get("type") == kind and c.get("status") == "True" for c in conditions)


class _Api:
    """Just enough of the Kubernetes REST API for start-up, with no client library import."""

    def __init__(self, server: str, token: str, ca_file: Path) -> None:
        self.server = server
        self.headers = {"Authorization": f"Bearer {token}"}
        self.context = ssl.create_default_context(cafile=str(ca_file))

    def _request(
        self, method: str, path: str, body: bytes | None = None, content_type: str = ""
    ) -> bytes:
        headers = dict(self.headers)
        if content_type:
            headers["Content-Type"] = content_type
        request = urllib.request.Request(
            self.server + path, data=body, method=method, headers=headers
        )
        with urllib.request.urlopen(request, timeout=10, context=self.context) as response:
            data: bytes = response.read()
            return data

    def get_text(self, path: str) -> str:
        return self._request("GET", path).decode()

    def get(self, path: str) -> dict[str, Any] | None:
        try:
            result: dict[str, Any] = json.loads(self._request("GET", path))
        except urllib.error.HTTPError as error:
            if error.code == 404:
                return None
            raise
        return result

    def create(self, collection: str, obj: dict[str, Any]) -> None:
        """POST ``obj``. Nodes are created this way because create keeps ``status`` (their
        capacity, e.g. the fake GPU), while apply would drop it as a reset field."""
        try:
            self._request("POST", collection, json.dumps(obj).encode(), "application/json")
        except urllib.error.HTTPError as error:
            detail = error.read().decode(errors="replace")
            raise ClusterError(
                f"creating in {collection} failed: HTTP {error.code}: {detail}"
            ) from None

    def apply(self, collection: str, obj: dict[str, Any]) -> None:
        """Server-side apply ``obj`` (create or update); nodes keep their initial status."""
        path = f"{collection}/{obj['metadata']['name']}?fieldManager={FIELD_MANAGER}&force=true"
        try:
            self._request("PATCH", path, json.dumps(obj).encode(), "application/apply-patch+yaml")
        except urllib.error.HTTPError as error:
            detail = error.read().decode(errors="replace")
            raise ClusterError(f"applying {path} failed: HTTP {error.code}: {detail}") from None
