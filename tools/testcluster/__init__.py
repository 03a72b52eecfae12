"""A real Kubernetes control plane for Outpost's integration tests, built from source.

Outpost applies, prunes, health-checks and rolls back objects on a site's k3s. Server-side
apply, field managers, dry-run, CRDs, admission and garbage collection only behave like the
real thing in the real thing, and these machines run neither Docker nor kind. So, like
controller-runtime's envtest, the tests run the real binaries: etcd, kube-apiserver,
kube-controller-manager and kube-scheduler, plus kwok to simulate nodes (so Pods get
scheduled and become Ready, and Deployments Available) — all compiled from the Go module
proxy at the versions pinned in ``tools/testcluster/{k8s,etcd,kwok}/go.mod`` (Kubernetes
v1.36.3, a line k3s ships; etcd v3.6.8, the one it depends on; kwok v0.8.0).

Commands (run from the repository root)::

    python -m tools.testcluster build        # compile into the cache; seconds when cached
    python -m tools.testcluster build --plan # say 'cached' or what is missing, build nothing
    python -m tools.testcluster up           # start a cluster, print shell exports
    eval "$(python -m tools.testcluster env)"; kubectl get nodes
    python -m tools.testcluster down         # stop it; no process is left behind

The binaries live in ``${OUTPOST_TESTCLUSTER_CACHE:-~/.cache/outpost-testcluster}/<key>/bin``;
``up``/``down``/``env`` use ``--dir`` (default ``$OUTPOST_TESTCLUSTER_DIR`` or
``/tmp/outpost-testcluster-<uid>``) for certificates, kubeconfig, logs and pids.

The pytest fixture (``tests/cluster/conftest.py``)
--------------------------------------------------
Tests that need the API server are marked ``pytest.mark.cluster`` (select with
``-m cluster``) and take the session-scoped ``cluster`` fixture, a :class:`Cluster`:

``cluster.kubeconfig``  path of an admin kubeconfig (bearer token, CA pinned)
``cluster.server``      ``https://127.0.0.1:<port>``
``cluster.token`` / ``cluster.ca_file``  the same credentials, for code without kubeconfig
``cluster.env()``       ``{"KUBECONFIG": ..., ...}`` for subprocesses (``outpost``, kubectl)
``cluster.api_client()`` a new ``kubernetes.client.ApiClient`` (close it, or use ``with``)
``cluster.kubectl(*args)`` run the pinned kubectl, output captured
``cluster.nodes``       ``("store-edge-1", "gpu-edge-1", "plant-edge-1")``

The fixture also provides ``api_client`` (function scope, closed afterwards) and
``namespace`` (a fresh namespace per test, deleted afterwards) so tests do not see each
other's objects. The session cluster is shared by every test in the run: cluster-scoped
objects (nodes, CRDs, ClusterRoles, an agent's enrolment or inventory namespace) outlive the
test that made them. A test that changes such state and must not leak it takes
``fresh_cluster`` instead: the same control plane, its own, started for that test (~10 s).
What a cluster has when a fixture hands it over:

- nodes from ``nodes.yaml``, all Ready, untainted: ``store-edge-1`` (``outpost/site-type:
  store``), ``gpu-edge-1`` (capacity ``nvidia.com/gpu: 1``) and ``plant-edge-1``
  (``outpost/site-type: plant``); kwok marks their Pods Running and Ready, no image is pulled;
- the ``kubevirt.io/v1`` ``VirtualMachine`` CRD (``kubevirt-virtualmachine-crd.yaml``),
  Established, with a status subresource; nothing acts on VMs, so a test sets their status;
- RBAC on, admission plugins at their defaults, the garbage collector and every default
  controller running (a deleted Deployment's ReplicaSets and Pods go away).

If the binaries are missing the fixture FAILS — it never skips and never builds silently —
with a message naming ``python -m tools.testcluster build``; CI runs that command first.
The cluster is stopped at the end of the session, on failure, on Ctrl-C and on SIGTERM;
if the test runner is killed with SIGKILL the kernel kills the control plane
(``PR_SET_PDEATHSIG``).

Python API: :func:`running` (a context manager; what the fixture uses), :func:`start` and
:meth:`Cluster.stop`, :func:`attach` (a cluster ``up`` started), :func:`build`, :func:`plan`,
:func:`require_binaries`, :func:`pinned_versions`.
"""

from ._build import (
    BINARIES,
    BUILD_COMMAND,
    BuildError,
    MissingBinariesError,
    Plan,
    build,
    cache_root,
    pinned_versions,
    plan,
    require_binaries,
)
from ._cluster import (
    Cluster,
    ClusterError,
    Process,
    attach,
    group_members,
    running,
    start,
)

__all__ = [
    "BINARIES",
    "BUILD_COMMAND",
    "BuildError",
    "Cluster",
    "ClusterError",
    "MissingBinariesError",
    "Plan",
    "Process",
    "attach",
    "build",
    "cache_root",
    "group_members",
    "pinned_versions",
    "plan",
    "require_binaries",
    "running",
    "start",
]
