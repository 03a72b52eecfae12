"""Every policy's own cases through both engines: Outpost's CEL and a real API server.

A policy enforced ``everywhere`` runs in two engines: Outpost's (cel-rust, with
``_facts``' functions) in CI and on the node, and the site's API server (cel-go, with
the translation of ``core/policy/_translate``). They must agree, or a store refuses
what CI accepted (and the node rolls back), or admits what CI refuses. So for each
pass and fail case of each such policy this module:

1. installs the policy in the cluster as the node would (``admission_objects``),
   under a name of its own (``outpost-test-<run>-<n>``), bound only to objects
   carrying the label ``outpost.io/policy-test: <run>-<n>``, with a parameter
   ConfigMap built from the case's ``site``, ``hardware`` and ``app`` exactly as a
   site's facts are built (the case's object gets ``outpost/app`` when it names an
   app, as render labels a site's objects);
2. waits until the API server has taken the policies into admission (a sentinel
   policy, created last, starts denying its probe);
3. sends the case's object as a dry-run *create* (nothing is stored) and reads the
   verdict: admitted, denied by this policy (with the server's message), or
   refused for another reason (a kind the cluster does not serve, another
   policy) — reported, never counted as agreement;
4. evaluates the same labelled object in Outpost's engine;
5. deletes everything it created, whatever happened.

The verdict must not depend on what the cluster already holds. A dry-run *apply*
of a case's ``pos/pos-server`` merges it into a live Deployment of that name (left
by an earlier install, another selector) and the API server refuses the merge
(``spec.selector`` is immutable) or judges the merged object instead of the
case's. So every namespaced case object goes into the run's own namespace
(``outpost-policy-test-<run>``, created at the start and deleted at the end,
empty of anything else) and is sent as a *create*: admission judges exactly the
case's object, as a CREATE, the way a site's first apply of it is judged. Names
stay the case's own (the case reads as written); the namespace changes in the
object both engines see, and the app's namespace facts are built from it, so the
verdict is the case's. Only a policy whose own expressions read a namespace would
judge the moved object differently: its cases keep their namespace (created when
missing and deleted afterwards), and being a create, their dry run is still not
merged with a live object; should one of that name exist, the API server answers
AlreadyExists only after admission admitted the object (it checks names when
storing), and that counts as admitted. One object is left behind
on purpose: ``outpost-test-keepalive``, a policy and binding with a ConfigMap
``paramKind`` that match nothing but ConfigMaps of that name. Kubernetes (up to at
least v1.36.3) stops resolving ConfigMap parameters until the API server restarts
once the last such binding is gone (kubernetes/kubernetes#130887); without the
keepalive, deleting this run's bindings would break every later ConfigMap-parameter
policy of the cluster. Use a test cluster all the same: the run creates and
deletes objects there.

The cluster comes in through a small protocol (``node.apply.Cluster`` fits it), and
the sleep between readiness probes is passed in.
"""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from reconciler.core.errors import ApplyError, ClusterUnavailable, Mark
from reconciler.core.policy import (
    ADMISSION_API,
    ENFORCE_CI_AND_NODE,
    Policy,
    PolicySet,
    admission_objects,
    evaluate,
    facts_data,
    new_context,
)

__all__ = ["CaseVerdict", "ClusterLike", "ClusterReport", "compare_on_cluster"]

FIELD_MANAGER = "outpost-policy-test"
TEST_LABEL = "outpost.io/policy-test"  # on a case's object: the binding selects by it
RUN_LABEL = "outpost.io/policy-test-run"  # on everything else a run creates
KEEPALIVE = "outpost-test-keepalive"
_APP_LABEL = "outpost/app"
ADMITTED = "admitted"
DENIED = "denied"
REFUSED = "refused"


class ClusterLike(Protocol):
    """What the comparison needs from an API server (``node.apply.Cluster`` has it)."""

    def resource(self, api_version: str, kind: str) -> Any: ...

    def apply(
        self,
        resource: Any,
        body: Mapping[str, Any],
        *,
        field_manager: str,
        obj: str,
        dry_run: bool = False,
        force: bool = True,
    ) -> tuple[dict[str, Any], bool]: ...

    def create(
        self, resource: Any, body: Mapping[str, Any], *, obj: str, dry_run: bool = False
    ) -> dict[str, Any] | None: ...

    def get(
        self, resource: Any, namespace: str, name: str, *, obj: str
    ) -> dict[str, Any] | None: ...

    def delete(
        self,
        resource: Any,
        namespace: str,
        name: str,
        *,
        obj: str,
        uid: str | None = None,
        propagation: str = "Background",
    ) -> bool: ...


@dataclass(frozen=True)
class CaseVerdict:
    """One case in both engines."""

    policy: str
    expect: str
    index: int
    name: str
    mark: Mark
    outpost: str  # admitted | denied
    server: str  # admitted | denied | refused
    detail: str = ""

    @property
    def agree(self) -> bool:
        return self.outpost == self.server

    def __str__(self) -> str:
        title = f" {self.name!r}" if self.name else ""
        where = f"{self.mark}: {self.policy} {self.expect}[{self.index}]{title}"
        if self.server == REFUSED:
            return f"FAIL {where}: the API server could not judge it: {self.detail}"
        if self.agree:
            return f"ok   {where}: {self.outpost} by both engines"
        return (
            f"DISAGREE {where}: Outpost's engine says {self.outpost}, the API server says "
            f"{self.server}" + (f" ({self.detail})" if self.detail else "")
        )


@dataclass(frozen=True)
class ClusterReport:
    verdicts: tuple[CaseVerdict, ...]
    kept: tuple[tuple[str, str], ...] = ()
    left: tuple[str, ...] = field(default=())

    @property
    def failed(self) -> int:
        return sum(not v.agree for v in self.verdicts)

    def lines(self, *, verbose: bool = False) -> Iterator[str]:
        for name, why in self.kept:
            if verbose:
                yield f"skip {name}: not enforced by the API server ({why})"
        for verdict in self.verdicts:
            if verbose or not verdict.agree:
                yield str(verdict)
        for what in self.left:
            yield f"warn could not delete {what}; delete it by hand"

    def summary(self) -> str:
        agreed = sum(v.agree for v in self.verdicts)
        return (
            f"both engines: {agreed} cases agree, {self.failed} do not "
            f"({len(self.kept)} policies not enforced by the API server)"
        )


@dataclass
class _Case:
    policy: Policy
    expect: str
    index: int
    name: str
    ident: str
    body: dict[str, Any]
    variables: dict[str, Any]
    objects: list[dict[str, Any]]


def _cases(policy: Policy) -> Iterator[tuple[str, int, dict[str, Any]]]:
    tests = policy.doc.spec.get("tests")
    tests = tests if isinstance(tests, dict) else {}
    for expect in ("pass", "fail"):
        cases = tests.get(expect)
        for index, case in enumerate(cases if isinstance(cases, list) else []):
            if isinstance(case, dict) and isinstance(case.get("object"), dict):
                yield expect, index, case


def _app_name(app: Any) -> str | None:
    """The name a case's App goes by at the API server; None for no app (``{}``)."""
    if not isinstance(app, dict) or not app:
        return None
    metadata = app.get("metadata")
    name = metadata.get("name") if isinstance(metadata, dict) else None
    return str(name) if isinstance(name, str) and name else "case-app"


def _prepare(
    policy: Policy, expect: str, index: int, case: dict[str, Any], ident: str, namespace: str
) -> _Case:
    assert policy.admission is not None
    body = copy.deepcopy(case["object"])
    metadata = body.setdefault("metadata", {})
    labels = metadata.setdefault("labels", {})
    labels[TEST_LABEL] = ident
    app = case.get("app")
    app_name = _app_name(app)
    if app_name is not None:
        labels[_APP_LABEL] = app_name
    metadata.setdefault("name", f"case-{ident}")
    variables: dict[str, Any] = {k: case[k] for k in ("site", "hardware", "app") if k in case}
    name = f"outpost-test-{ident}"
    params = None
    objects: list[dict[str, Any]] = []
    if policy.admission.needs_params:
        params = (namespace, name)
        data = facts_data(
            policy.admission.facts,
            site=case.get("site") or {},
            hardware=case.get("hardware") or {},
            apps={app_name: app} if app_name is not None and isinstance(app, dict) else {},
            app_namespaces=(
                {app_name: [str(metadata.get("namespace") or "")]} if app_name is not None else {}
            ),
        )
        objects.append(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": name, "namespace": namespace, "labels": {RUN_LABEL: ident}},
                "data": data,
            }
        )
    objects += admission_objects(
        policy,
        policy.admission,
        name=name,
        labels={RUN_LABEL: ident},
        params=params,
        match_resources={"objectSelector": {"matchLabels": {TEST_LABEL: ident}}},
        validation_actions=["Deny"],
    )
    return _Case(policy, expect, index, str(case.get("name", "")), ident, body, variables, objects)


def _sentinel(run: str, namespace: str) -> list[dict[str, Any]]:
    """A policy that denies its probe once the API server has caught up with this run."""
    name = f"outpost-test-{run}-ready"
    labels = {RUN_LABEL: run}
    return [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": namespace, "labels": labels},
            "data": {"ready": "s:yes"},
        },
        {
            "apiVersion": ADMISSION_API,
            "kind": "ValidatingAdmissionPolicy",
            "metadata": {"name": name, "labels": labels},
            "spec": {
                "failurePolicy": "Fail",
                "paramKind": {"apiVersion": "v1", "kind": "ConfigMap"},
                "matchConstraints": {
                    "resourceRules": [
                        {
                            "apiGroups": [""],
                            "apiVersions": ["*"],
                            "operations": ["CREATE", "UPDATE"],
                            "resources": ["configmaps"],
                        }
                    ]
                },
                "validations": [{"expression": "params.data.ready != 's:yes'", "message": "ready"}],
            },
        },
        {
            "apiVersion": ADMISSION_API,
            "kind": "ValidatingAdmissionPolicyBinding",
            "metadata": {"name": name, "labels": labels},
            "spec": {
                "policyName": name,
                "validationActions": ["Deny"],
                "paramRef": {
                    "name": name,
                    "namespace": namespace,
                    "parameterNotFoundAction": "Deny",
                },
                "matchResources": {"objectSelector": {"matchLabels": {TEST_LABEL: f"{run}-ready"}}},
            },
        },
    ]


def _keepalive() -> list[dict[str, Any]]:
    """See the module docstring: keeps ConfigMap parameters working after this run."""
    labels = {RUN_LABEL: "keepalive"}
    return [
        {
            "apiVersion": ADMISSION_API,
            "kind": "ValidatingAdmissionPolicy",
            "metadata": {"name": KEEPALIVE, "labels": labels},
            "spec": {
                "failurePolicy": "Ignore",
                "paramKind": {"apiVersion": "v1", "kind": "ConfigMap"},
                "matchConstraints": {
                    "resourceRules": [
                        {
                            "apiGroups": [""],
                            "apiVersions": ["*"],
                            "operations": ["CREATE", "UPDATE"],
                            "resources": ["configmaps"],
                            "resourceNames": [KEEPALIVE],
                        }
                    ]
                },
                "validations": [{"expression": "true"}],
            },
        },
        {
            "apiVersion": ADMISSION_API,
            "kind": "ValidatingAdmissionPolicyBinding",
            "metadata": {"name": KEEPALIVE, "labels": labels},
            "spec": {
                "policyName": KEEPALIVE,
                "validationActions": ["Deny"],
                "paramRef": {
                    "name": KEEPALIVE,
                    "namespace": "default",
                    "parameterNotFoundAction": "Allow",
                },
            },
        },
    ]


def _reads_namespace(policy: Policy) -> bool:
    """Whether the policy's own expressions (not its tests) mention a namespace."""
    rules = {k: v for k, v in policy.doc.spec.items() if k not in ("tests", "description")}
    return "namespace" in json.dumps(rules, default=str).lower()


def _placed(
    cluster: ClusterLike, body: dict[str, Any], namespace: str, *, keep: bool
) -> dict[str, Any]:
    """The case's object in the run's namespace when its kind is namespaced; with
    ``keep``, an object naming its own namespace stays there (module docstring)."""
    metadata = body.get("metadata")
    if keep and isinstance(metadata, dict) and metadata.get("namespace"):
        return body
    try:
        resource = cluster.resource(str(body.get("apiVersion", "")), str(body.get("kind", "")))
    except ApplyError:
        return body  # the dry run reports the kind the cluster does not serve
    if not getattr(resource, "namespaced", False):
        return body
    return {**body, "metadata": {**(metadata or {}), "namespace": namespace}}


def _outpost_verdict(case: _Case) -> tuple[str, str]:
    variables = {"object": case.body, **case.variables}
    outcome = evaluate(case.policy, new_context(variables))
    return (DENIED, outcome[0][1]) if outcome else (ADMITTED, "")


class _Session:
    """The objects one run created, so that all of them go again."""

    def __init__(self, cluster: ClusterLike) -> None:
        self.cluster = cluster
        self.created: list[tuple[Any, str, str, str]] = []

    def _resource(self, body: Mapping[str, Any]) -> Any:
        return self.cluster.resource(str(body["apiVersion"]), str(body["kind"]))

    def put(self, body: Mapping[str, Any], *, keep: bool = False) -> None:
        metadata = body["metadata"]
        what = f"{body['kind']}/{metadata['name']}"
        resource = self._resource(body)
        _, created = self.cluster.apply(resource, body, field_manager=FIELD_MANAGER, obj=what)
        if created and not keep:
            self.created.append(
                (resource, str(metadata.get("namespace", "")), metadata["name"], what)
            )

    def ensure(self, body: Mapping[str, Any]) -> None:
        """Create ``body`` if it does not exist; never delete it (the keepalive)."""
        metadata = body["metadata"]
        resource = self._resource(body)
        what = f"{body['kind']}/{metadata['name']}"
        if self.cluster.get(resource, "", metadata["name"], obj=what) is None:
            self.cluster.apply(resource, body, field_manager=FIELD_MANAGER, obj=what)

    def dry_run(self, body: Mapping[str, Any], what: str) -> tuple[str, str]:
        """A dry-run create of ``body``: never merged with a live object (module docstring)."""
        try:
            resource = self._resource(body)
            self.cluster.create(resource, body, obj=what, dry_run=True)
        except ApplyError as exc:
            return REFUSED, exc.message
        return ADMITTED, ""

    def clean(self) -> list[str]:
        """Delete what was created, newest first; return what could not be deleted."""
        left: list[str] = []
        for resource, namespace, name, what in reversed(self.created):
            try:
                self.cluster.delete(resource, namespace, name, obj=what)
            except (ApplyError, ClusterUnavailable) as exc:
                left.append(f"{what}: {exc}")
        return left


def compare_on_cluster(
    policies: PolicySet | Sequence[Policy],
    cluster: ClusterLike,
    *,
    sleep: Callable[[float], None],
    wait_seconds: float = 60.0,
    run: str | None = None,
) -> ClusterReport:
    """Run every case of every policy enforced at sites in both engines (module docstring).

    A policy the API server refuses (an expression its type checker rejects) makes
    each of its cases a failure that says so; the other policies still run. Raises
    ClusterUnavailable when the cluster cannot be reached or does not take the test
    policies into admission within ``wait_seconds``.
    """
    items = policies.policies if isinstance(policies, PolicySet) else tuple(policies)
    run = run or uuid.uuid4().hex[:8]
    namespace = f"outpost-policy-test-{run}"
    kept = tuple(
        (
            p.name,
            "marked enforce: ci-and-node" if p.enforce == ENFORCE_CI_AND_NODE else p.not_exportable,
        )
        for p in items
        if p.enforce == ENFORCE_CI_AND_NODE or p.admission is None
    )
    exported = [p for p in items if p.enforce != ENFORCE_CI_AND_NODE and p.admission is not None]
    session = _Session(cluster)
    for body in _keepalive():
        session.ensure(body)
    cases: list[_Case] = []
    counter = 0
    for policy in exported:
        for expect, index, raw in _cases(policy):
            counter += 1
            keep = _reads_namespace(policy)
            raw = {**raw, "object": _placed(cluster, raw["object"], namespace, keep=keep)}
            cases.append(_prepare(policy, expect, index, raw, f"{run}-{counter}", namespace))
    verdicts: list[CaseVerdict] = []
    try:
        namespaces = {namespace} | {
            str(c.body["metadata"]["namespace"])
            for c in cases
            if c.body["metadata"].get("namespace")
        }
        ns_resource = cluster.resource("v1", "Namespace")
        for name in sorted(namespaces):
            if cluster.get(ns_resource, "", name, obj=f"Namespace/{name}") is None:
                session.put(
                    {
                        "apiVersion": "v1",
                        "kind": "Namespace",
                        "metadata": {"name": name, "labels": {RUN_LABEL: run}},
                    }
                )
        # Parameters first, then policies, then bindings: a binding never waits for its policy.
        ordered = sorted(
            (obj for case in cases for obj in case.objects),
            key=lambda o: (
                ("ConfigMap", "ValidatingAdmissionPolicy").index(o["kind"])
                if o["kind"] in ("ConfigMap", "ValidatingAdmissionPolicy")
                else 2
            ),
        )
        refused: dict[str, str] = {}  # case ident -> why its policy could not be installed
        for body in ordered:
            owner = next(c for c in cases if any(body is o for o in c.objects))
            if owner.ident in refused:
                continue
            try:
                session.put(body)
            except ApplyError as exc:
                refused[owner.ident] = (
                    f"the API server refused the exported policy ({owner.policy.doc.path}): "
                    f"{exc.message}"
                )
        for body in _sentinel(run, namespace):
            session.put(body)
        _await_admission(session, run, namespace, sleep=sleep, wait_seconds=wait_seconds)
        for case in cases:
            what = f"{case.body.get('kind')}/{case.body['metadata'].get('name')}"
            if case.ident in refused:
                server, detail = REFUSED, refused[case.ident]
            else:
                server, detail = session.dry_run(case.body, what)
            name = f"outpost-test-{case.ident}"
            if server == REFUSED and f"'{name}'" in detail:
                server, detail = DENIED, detail.split("denied request: ", 1)[-1]
            outpost, message = _outpost_verdict(case)
            verdicts.append(
                CaseVerdict(
                    case.policy.name,
                    case.expect,
                    case.index,
                    case.name,
                    case.policy.doc.mark("spec", "tests", case.expect, case.index),
                    outpost,
                    server,
                    detail or message,
                )
            )
    finally:
        left = session.clean()
    return ClusterReport(tuple(verdicts), kept, tuple(left))


def _await_admission(
    session: _Session,
    run: str,
    namespace: str,
    *,
    sleep: Callable[[float], None],
    wait_seconds: float,
    interval: float = 0.5,
) -> None:
    """Probe until the sentinel denies: the API server has every policy of this run."""
    probe = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": f"outpost-test-{run}-probe",
            "namespace": namespace,
            "labels": {TEST_LABEL: f"{run}-ready"},
        },
    }
    waited = 0.0
    last = ""
    while True:
        verdict, detail = session.dry_run(probe, "ConfigMap/probe")
        if verdict == REFUSED and detail.endswith("denied request: ready"):
            return
        last = detail or "the probe was admitted"
        if waited >= wait_seconds:
            raise ClusterUnavailable(
                f"the API server did not take the test policies into admission within "
                f"{wait_seconds:.0f}s (last probe: {last})"
            )
        sleep(interval)
        waited += interval
