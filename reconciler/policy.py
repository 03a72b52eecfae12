"""Policies as data: CEL rules over a site's rendered slice, with findings at file:line.

A ``kind: Policy`` document is shaped like a Kubernetes ValidatingAdmissionPolicy
(``match`` by API group and kind, ``validations`` with a CEL ``expression`` and a
``message``), plus what a fleet of thousands of sites needs: ``match.siteTypes``
and ``match.siteSelector``, ``severity: deny|warn``, ``exemptions`` that name sites
or apps with a reason and an expiry, and ``tests`` the policy must pass.

What is checked. For one site, every rendered object (apps' manifests, KubeVirt
VMs; SOPS secrets as redacted ``v1 Secret`` stubs annotated ``outpost/source:
sops``), and the Outpost documents of the site in API group ``outpost``: its
``Site``, its ``Hardware``, its ``VirtualMachine`` documents and the ``App``
documents it runs. CEL sees ``object``, ``site`` (the Site document plus a computed
``status`` with usage and capacity, see ``policy_facts``), ``hardware`` and ``app``
(the App document of the object's app, ``{}`` for objects of no app), and the
functions of ``policy_facts.CEL_FUNCTIONS``.

Fail closed (design: "an empty policy list is an error, never everything passes"):

- no Policy documents at all is a ``PolicyError``;
- an expression that does not compile is an error finding at its file:line, and
  the policy's other validations still run: a typo never turns into a pass;
- an expression that fails at run time (no such key, wrong type) is a finding at
  the object's origin with the policy's severity, worded so the author knows to
  guard the field with ``has()``;
- an expression that yields anything but a boolean is a finding too;
- an object claiming the reserved annotation ``outpost/source`` is an error: only
  the engine marks SOPS secrets, so a plaintext Secret cannot pass as encrypted.

An expired exemption (``expires`` is the last day it holds) stops exempting and
is itself a warning at its line: the policy applies again and the stale entry
should go. It is a warning, not an error, so a date passing does not stop a node
from taking a commit that is otherwise clean.

Speed. Most stores run the same thing: the same app, version and parameters
render the same body. Results are cached by (policy, canonical hash of the object,
and the hash of each of ``site``, ``hardware``, ``app`` the policy's expressions
reference). A policy that never names ``site`` is evaluated once per distinct
object across the fleet; one that does is keyed on the site too, so a result that
depends on a site is never reused at another (see ``PolicyCache``). Every
expression is compiled once, when the policy is loaded.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any, ClassVar, Protocol

from reconciler.core.cel_cost import BUDGET, Cost, analyse, estimate, largest
from reconciler.errors import Mark, OutpostError, PolicyError
from reconciler.findings import ERROR, WARNING, Finding, aggregate
from reconciler.loader import Document
from reconciler.policy_facts import CEL_FUNCTIONS, site_status

OUTPOST_GROUP = "outpost"
RESERVED_ANNOTATION = "outpost/source"
SITE_LABEL = "outpost/site"
SOPS_SOURCE = "sops"
SITE_VARIABLES = ("site", "hardware", "app")
RULE_ENGINE = "policy"

_SEVERITY = {"deny": ERROR, "warn": WARNING}
# Rendered bodies as policies see them, and their digests, by id of the rendered body.
Digests = dict[int, tuple[Mapping[str, Any], bytes]]
# A further check of each rendered site: (repository, site folder, rendered, the digests
# the policy check computed) → findings.
ObjectCheck = Callable[[Any, Any, Any, Digests], list[Finding]]


class ObjectLike(Protocol):
    """A rendered object as ``reconciler.render`` produces it."""

    @property
    def body(self) -> dict[str, Any]: ...
    @property
    def origin(self) -> Mark: ...
    @property
    def app(self) -> str | None: ...


class SecretRefLike(Protocol):
    """A SOPS secret file of the site, named but not decrypted."""

    @property
    def path(self) -> str: ...
    @property
    def origin(self) -> Mark: ...
    @property
    def key(self) -> Any: ...


class RenderedLike(Protocol):
    """A rendered site: its objects (and, optionally, ``secret_refs``)."""

    @property
    def objects(self) -> Sequence[ObjectLike]: ...


# --------------------------------------------------------------------------- model


@dataclass(frozen=True)
class Validation:
    """One compiled CEL check; ``program`` is None when the expression did not compile."""

    expression: str
    mark: Mark
    program: Any
    message: str
    message_program: Any = None
    cost: Cost = field(default_factory=Cost, compare=False)
    message_cost: Cost = field(default_factory=Cost, compare=False)


@dataclass(frozen=True)
class Exemption:
    sites: frozenset[str] | None
    apps: frozenset[str] | None
    reason: str
    expires: date | None
    mark: Mark

    def covers(self, site: str, app: str | None) -> bool:
        if self.sites is not None and site not in self.sites:
            return False
        return self.apps is None or (app is not None and app in self.apps)


@dataclass(frozen=True)
class Policy:
    """A loaded policy: what it matches, its compiled validations, who is exempt."""

    name: str
    doc: Document
    index: int
    severity: str
    resources: tuple[tuple[frozenset[str], frozenset[str]], ...]
    site_types: frozenset[str] | None
    site_selector: Mapping[str, Any] | None
    validations: tuple[Validation, ...]
    exemptions: tuple[Exemption, ...]
    uses: frozenset[str]

    @property
    def finding_severity(self) -> str:
        return _SEVERITY.get(self.severity, ERROR)

    def matches_kind(self, group: str, kind: str) -> bool:
        return any(
            (group in groups or "*" in groups) and (kind in kinds or "*" in kinds)
            for groups, kinds in self.resources
        )

    def matches_site(self, site_type: str, labels: Mapping[str, str]) -> bool:
        if self.site_types is not None and site_type not in self.site_types:
            return False
        if self.site_selector is not None:
            from reconciler.model import selector_matches

            return selector_matches(self.site_selector, labels)
        return True

    def exempt(self, site: str, app: str | None) -> bool:
        return any(e.covers(site, app) for e in self.exemptions)


@dataclass(frozen=True)
class PolicySet:
    """The loaded policies and the findings loading produced (compile errors, stale exemptions)."""

    policies: tuple[Policy, ...]
    findings: tuple[Finding, ...] = ()
    _by_kind: dict[tuple[str, str], tuple[Policy, ...]] = field(
        default_factory=dict, compare=False, repr=False
    )

    def for_kind(self, group: str, kind: str) -> tuple[Policy, ...]:
        key = (group, kind)
        found = self._by_kind.get(key)
        if found is None:
            found = tuple(p for p in self.policies if p.matches_kind(group, kind))
            self._by_kind[key] = found
        return found


# --------------------------------------------------------------------------- loading


def _compile(expression: str) -> tuple[Any, str | None]:
    """Compile one expression; (program, None) or (None, the compiler's words)."""
    import cel

    try:
        return cel.compile(expression), None
    except Exception as exc:  # the cel seam: nothing of the binding's escapes
        return None, str(exc).strip()


def _references(program: Any) -> frozenset[str]:
    try:
        return frozenset(str(v) for v in program.variables())
    except Exception:  # a binding without static analysis: assume everything is used
        return frozenset(SITE_VARIABLES)


def _strings(value: Any) -> frozenset[str] | None:
    if not isinstance(value, list):
        return None
    return frozenset(str(v) for v in value)


def _parse_date(value: Any) -> date | None:
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value)
        except ValueError:
            return None
    return None


def load_policy(doc: Document, index: int, *, today: date) -> tuple[Policy | None, list[Finding]]:
    """One Policy document → (Policy, findings). A policy too broken to run is (None, errors)."""
    name = doc.name or doc.path
    findings: list[Finding] = []

    def add(mark: Mark, message: str, severity: str = ERROR) -> None:
        findings.append(Finding.at(mark, message, severity=severity, rule=name))

    spec = doc.spec
    severity = spec.get("severity", "deny")
    if severity not in _SEVERITY:
        add(doc.mark("spec", "severity"), f"severity is {severity!r}; expected deny or warn")
        severity = "deny"
    match = spec.get("match") if isinstance(spec.get("match"), dict) else {}
    assert isinstance(match, dict)
    resources: list[tuple[frozenset[str], frozenset[str]]] = []
    for entry in match.get("resources") or []:
        if isinstance(entry, dict):
            groups = _strings(entry.get("apiGroups")) or frozenset()
            kinds = _strings(entry.get("kinds")) or frozenset()
            resources.append((groups, kinds))
    if not resources:
        add(
            doc.mark("spec", "match"),
            "match.resources is empty, so the policy would check nothing; list the API groups "
            'and kinds it applies to (group "outpost" for Site, Hardware, App, VirtualMachine)',
        )
    selector = match.get("siteSelector")
    validations: list[Validation] = []
    uses: set[str] = set()
    raw = spec.get("validations")
    if not isinstance(raw, list) or not raw:
        add(
            doc.mark("spec", "validations"), "the policy has no validations; it would pass anything"
        )
        raw = []
    for i, entry in enumerate(raw):
        entry = entry if isinstance(entry, dict) else {}
        expression = entry.get("expression")
        mark = doc.mark("spec", "validations", i, "expression")
        if not isinstance(expression, str) or not expression.strip():
            add(mark, f"validations[{i}] has no expression")
            continue
        program, error = _compile(expression)
        if program is None:
            add(
                mark,
                f"validations[{i}].expression does not compile, so this check cannot pass: {error}",
            )
        else:
            uses |= _references(program)
        message = entry.get("message")
        message_program = None
        source = entry.get("messageExpression")
        if isinstance(source, str) and source.strip():
            message_program, error = _compile(source)
            if message_program is None:
                add(
                    doc.mark("spec", "validations", i, "messageExpression"),
                    f"validations[{i}].messageExpression does not compile: {error}",
                )
            else:
                uses |= _references(message_program)
        validations.append(
            Validation(
                expression=expression,
                mark=mark,
                program=program,
                message=message
                if isinstance(message, str) and message
                else f"failed: {expression.strip()}",
                message_program=message_program,
                cost=analyse(expression),
                message_cost=analyse(str(source)) if message_program is not None else Cost(),
            )
        )
    exemptions: list[Exemption] = []
    for i, entry in enumerate(spec.get("exemptions") or []):
        if not isinstance(entry, dict):
            continue
        mark = doc.mark("spec", "exemptions", i)
        expires = _parse_date(entry.get("expires"))
        sites, apps = _strings(entry.get("sites")), _strings(entry.get("apps"))
        if sites is None and apps is None:
            add(mark, f"exemptions[{i}] names neither sites nor apps; it would exempt nothing")
            continue
        if expires is not None and expires < today:
            who = ", ".join(sorted((sites or frozenset()) | (apps or frozenset())))
            add(
                doc.mark("spec", "exemptions", i, "expires"),
                f"exemption for {who} expired on {expires.isoformat()} "
                f"({entry.get('reason', 'no reason given')}); the policy applies to them again — "
                "fix the objects and remove the exemption, or renew it with a new date",
                severity=WARNING,
            )
            continue
        exemptions.append(Exemption(sites, apps, str(entry.get("reason", "")), expires, mark))
    if not resources or not validations:
        return None, findings
    site_types = _strings(match.get("siteTypes"))
    policy = Policy(
        name=name,
        doc=doc,
        index=index,
        severity=str(severity),
        resources=tuple(resources),
        site_types=site_types,
        site_selector=selector if isinstance(selector, dict) else None,
        validations=tuple(validations),
        exemptions=tuple(exemptions),
        uses=frozenset(uses) & frozenset(SITE_VARIABLES),
    )
    return policy, findings


def load_policies(documents: Sequence[Document], *, today: date) -> PolicySet:
    """Compile every Policy document once. Raises PolicyError when there are none (fail closed)."""
    if not documents:
        raise PolicyError(
            "no policies found (policies/*.yaml with kind: Policy); without policies nothing "
            "would be checked, so validation refuses to pass — restore the policies folder",
            mark=Mark("policies"),
        )
    policies: list[Policy] = []
    findings: list[Finding] = []
    seen: dict[str, Mark] = {}
    for doc in documents:
        if doc.kind != "Policy":
            findings.append(
                Finding.at(
                    doc.mark("kind"), f"expected kind Policy, found {doc.kind!r}", rule="file"
                )
            )
            continue
        if doc.name in seen:
            findings.append(
                Finding.at(
                    doc.mark("metadata", "name"),
                    f"policy name {doc.name!r} is already used at {seen[doc.name]}; "
                    "findings name the policy, so names must be unique",
                    rule=doc.name,
                )
            )
            continue
        seen[doc.name] = doc.mark("metadata", "name")
        policy, problems = load_policy(doc, len(policies), today=today)
        findings.extend(problems)
        if policy is not None:
            policies.append(policy)
    return PolicySet(tuple(policies), tuple(findings))


# --------------------------------------------------------------------------- evaluation


_VIOLATION = "violation"
_FAILURE = "error"
Outcome = tuple[tuple[str, str], ...]


def _functions() -> dict[str, Callable[..., Any]]:
    """cel's extended library (join, split, sets.*, math.* as in Kubernetes CEL) plus ours."""
    try:
        from cel.stdlib import STDLIB_FUNCTIONS

        functions: dict[str, Callable[..., Any]] = dict(STDLIB_FUNCTIONS)
    except ImportError:  # an older binding without it: our library still works
        functions = {}
    functions.update(CEL_FUNCTIONS)
    return functions


def new_context(variables: Mapping[str, Any]) -> Any:
    """A CEL context with ``variables`` and the function library."""
    import cel

    return cel.Context(variables=dict(variables), functions=_functions())


class _Bindings:
    """One CEL context reused across evaluations; a variable is converted only when it changes.

    Building a context and converting a body into CEL values costs more than most
    evaluations, so the context lives as long as the cache. Every evaluation binds
    all four variables; a value is re-added when it is not the very object bound
    last time. The bound objects are kept referenced, so an identity cannot be
    recycled by a new dict and a stale value can never be read for a new one.
    """

    def __init__(self) -> None:
        self.context: Any = None
        self.bound: dict[str, Any] = {}

    def bind(self, variables: Mapping[str, Any]) -> Any:
        if self.context is None:
            self.context = new_context({})
        for name, value in variables.items():
            if self.bound.get(name, _UNBOUND) is not value:
                self.context.add_variable(name, value)
                self.bound[name] = value
        return self.context


_UNBOUND = object()


def _explain(exc: Exception) -> str:
    """The binding's exception in words an operator can act on."""
    text = str(exc).strip().split("\n")[0]
    if isinstance(exc, KeyError):
        return (
            f"no such key {text}; the field is missing from this object — guard optional "
            "fields with has(), e.g. has(object.spec.x) && ..."
        )
    if isinstance(exc, IndexError):
        return f"{text}; check the list's size() before indexing"
    if len(text) > 300:
        text = text[:300] + "…"
    return f"{type(exc).__name__}: {text}"


class _Sizes:
    """The largest collection (and longest string) in an evaluation's variables, on demand."""

    _memo: ClassVar[dict[int, tuple[Any, int, int]]] = {}

    def __init__(self, variables: Mapping[str, Any] | None) -> None:
        self.variables = variables
        self.found: tuple[int, int] | None = None

    def get(self) -> tuple[int, int]:
        if self.found is None:
            items = longest = 0
            for value in (self.variables or {}).values():
                entry = self._memo.get(id(value))
                if entry is None or entry[0] is not value:
                    if len(self._memo) >= 256:
                        self._memo.clear()
                    entry = (value, largest(value), largest(value, strings=True))
                    self._memo[id(value)] = entry
                items, longest = max(items, entry[1]), max(longest, entry[2])
            self.found = (items, longest)
        return self.found


def _over_budget(cost: Cost, sizes: _Sizes, mark: Mark, what: str) -> str | None:
    """Why ``cost`` may not run on these variables, or None (only nested loops can explode)."""
    if not cost.nested:
        return None
    items, longest = sizes.get()
    steps = estimate(cost, items, longest)
    if steps <= BUDGET:
        return None
    return (
        f"{what} at {mark} was not evaluated: on this object its nested comprehensions "
        f"could take about {steps:,} steps (collections of up to {max(items, 1):,} items), "
        f"over the budget of {BUDGET:,} per evaluation; restructure the expression or "
        "bound the lists it walks"
    )


def evaluate(
    policy: Policy,
    context: Any,
    *,
    strict_messages: bool = False,
    variables: Mapping[str, Any] | None = None,
) -> Outcome:
    """Run every compiled validation of ``policy``; return its violations and failures.

    Validations that did not compile are skipped here: loading already reported them
    as error findings at their line, once rather than once per object. A
    ``messageExpression`` that fails falls back to ``message`` (as in Kubernetes);
    with ``strict_messages`` (policy tests) its failure is reported instead.

    Each expression runs only if its cost bound (``core.cel_cost``) on ``variables``, the
    values bound in ``context``, is within the budget; otherwise it is a failure.
    """
    results: list[tuple[str, str]] = []
    sizes = _Sizes(variables)
    for validation in policy.validations:
        if validation.program is None:
            continue
        refused = _over_budget(validation.cost, sizes, validation.mark, "the expression")
        if refused is not None:
            results.append((_FAILURE, refused))
            continue
        try:
            value = validation.program.execute(context)
        except Exception as exc:  # the cel seam
            results.append(
                (
                    _FAILURE,
                    f"could not evaluate the expression at {validation.mark}: {_explain(exc)}",
                )
            )
            continue
        if value is True:
            continue
        if value is not False:
            results.append(
                (
                    _FAILURE,
                    f"the expression at {validation.mark} returned {type(value).__name__} "
                    f"{value!r}; a validation must return true or false",
                )
            )
            continue
        message = validation.message
        refused = _over_budget(
            validation.message_cost, sizes, validation.mark, "the messageExpression"
        )
        if refused is not None and strict_messages:
            results.append((_FAILURE, refused))
            continue
        if validation.message_program is not None and refused is None:
            try:
                custom = validation.message_program.execute(context)
            except Exception as exc:  # fall back to the static message, as Kubernetes does
                if strict_messages:
                    results.append(
                        (_FAILURE, f"the messageExpression of {validation.mark}: {_explain(exc)}")
                    )
                    continue
                custom = None
            if isinstance(custom, str) and custom.strip():
                message = custom.strip()
            elif strict_messages:
                results.append(
                    (
                        _FAILURE,
                        f"the messageExpression of {validation.mark} returned {custom!r}, "
                        "not a non-empty string",
                    )
                )
                continue
        results.append((_VIOLATION, message))
    return tuple(results)


def _digest(value: Any) -> bytes:
    """A 128-bit digest of a JSON-like value, for cache keys.

    ``repr`` is unambiguous for dicts, lists, strings, numbers, booleans and None
    (equal reprs mean equal values: strings are quoted and escaped, ``1``, ``1.0``
    and ``True`` differ), and several times faster than canonical JSON. It is not
    canonical for key order, so two equal maps written in different orders only
    miss the cache; they never share a wrong result.
    """
    return hashlib.blake2b(repr(value).encode(), digest_size=16).digest()


class PolicyCache:
    """Evaluation results shared across sites, keyed so site-dependent results stay apart.

    The key is (policy index, object digest, site digest or None, hardware digest
    or None, app digest or None): a digest is part of the key exactly when the
    policy's expressions (and message expressions) reference that variable. One
    cache belongs to one ``PolicySet``; use a new one for other policies.
    """

    def __init__(self) -> None:
        self.results: dict[tuple[Any, ...], Outcome] = {}
        self.hits = 0
        self.misses = 0
        self._app_digests: dict[int, tuple[Any, bytes]] = {}
        self.bindings = _Bindings()

    def app_digest(self, body: Any) -> bytes:
        """Digest of an App body; memoised per object (the body is kept alive with it)."""
        entry = self._app_digests.get(id(body))
        if entry is None or entry[0] is not body:
            entry = (body, _digest(body))
            self._app_digests[id(body)] = entry
        return entry[1]


@dataclass
class _Subject:
    """One thing a policy looks at: its body, where it came from, which app it belongs to."""

    body: Mapping[str, Any]
    origin: Mark
    app: str | None
    label: str
    digest: bytes | None = None


def _group_of(body: Mapping[str, Any]) -> str:
    return str(body.get("apiVersion", "")).rpartition("/")[0]


def _label(body: Mapping[str, Any]) -> str:
    metadata = body.get("metadata")
    metadata = metadata if isinstance(metadata, Mapping) else {}
    name = str(metadata.get("name", "?"))
    namespace = metadata.get("namespace")
    return (
        f"{body.get('kind', '?')} {namespace}/{name}"
        if namespace
        else f"{body.get('kind', '?')} {name}"
    )


def _body_and_mark(doc: Any, fallback: str) -> tuple[dict[str, Any], Mark]:
    """Accept a loader Document, a model wrapper with ``.doc``, or a plain dict."""
    inner = getattr(doc, "doc", doc)
    if isinstance(inner, Document):
        return inner.body, inner.mark("metadata", "name")
    if isinstance(inner, Mapping):
        return dict(inner), Mark(fallback)
    return {}, Mark(fallback)


def _secret_stub(ref: SecretRefLike) -> dict[str, Any]:
    key = ref.key
    metadata: dict[str, Any] = {
        "name": str(getattr(key, "name", "")),
        "annotations": {RESERVED_ANNOTATION: SOPS_SOURCE, "outpost/file": ref.path},
    }
    namespace = getattr(key, "namespace", "")
    if namespace:
        metadata["namespace"] = str(namespace)
    return {"apiVersion": "v1", "kind": "Secret", "metadata": metadata, "type": "Opaque"}


_LABELLED = (
    ("metadata",),
    ("spec", "template", "metadata"),
    ("spec", "jobTemplate", "metadata"),
    ("spec", "jobTemplate", "spec", "template", "metadata"),
)


def _without_site_label(body: dict[str, Any], site_id: str) -> dict[str, Any]:
    """The object as policies see it: without the ``outpost/site: <site id>`` label render stamps.

    The label is the only thing that makes the same app, version and values render
    differently at two sites, and it is not the author's: hiding it makes identical
    objects identical, so one evaluation serves every site (and a policy that wants
    the site reads ``site``, which keys the cache on the site). Copies only the
    maps on the way to a label it removes; the rendered body is not changed.
    """
    result = body
    for path in _LABELLED:
        node: Any = result
        for key in path:
            node = node.get(key) if isinstance(node, dict) else None
        labels = node.get("labels") if isinstance(node, dict) else None
        if not isinstance(labels, dict) or labels.get(SITE_LABEL) != site_id:
            continue
        if result is body:
            result = dict(body)
        parent: dict[str, Any] = result
        for key in path:
            child = dict(parent[key])
            parent[key] = child
            parent = child
        parent["labels"] = {k: v for k, v in labels.items() if k != SITE_LABEL}
    return result


def _claims_source(body: Mapping[str, Any]) -> bool:
    metadata = body.get("metadata")
    annotations = metadata.get("annotations") if isinstance(metadata, Mapping) else None
    return isinstance(annotations, Mapping) and RESERVED_ANNOTATION in annotations


def check_site(
    policies: PolicySet,
    rendered_site: RenderedLike,
    site_doc: Any,
    hardware_doc: Any,
    apps: Mapping[str, Any],
    *,
    vms: Iterable[Any] = (),
    cache: PolicyCache | None = None,
    digests: Digests | None = None,
) -> list[Finding]:
    """Every policy finding for one site.

    ``digests``, when given, receives each rendered object's body as policies see it
    (without the site label) and its digest, by ``id`` of the rendered body: a further
    check of the same objects (``ObjectCheck``) keys its own cache on them for free.

    ``site_doc``, ``hardware_doc``, ``vms`` and the values of ``apps`` (app name →
    App) may be loader Documents, model wrappers (``Site``, ``Hardware``, ``App``)
    or plain dicts; Documents give findings their file:line. ``rendered_site`` needs
    ``objects`` (each with ``body``, ``origin``, ``app``) and may have
    ``secret_refs``. Pass one ``cache`` for all sites of a run to check identical
    objects once. Findings carry the object's origin, ``rule`` = policy name and
    ``site`` = the site id; load-time findings are not repeated here.
    """
    cache = cache if cache is not None else PolicyCache()
    site_body, site_mark = _body_and_mark(site_doc, "site.yaml")
    site_id = str((site_body.get("metadata") or {}).get("name", ""))
    if hardware_doc is None:
        hardware_body: dict[str, Any] = {
            "apiVersion": "outpost/v1",
            "kind": "Hardware",
            "metadata": {"name": site_id},
            "spec": {"nodes": []},
        }
        hardware_mark = Mark(f"sites/{site_id}/hardware.yaml")
    else:
        hardware_body, hardware_mark = _body_and_mark(
            hardware_doc, f"sites/{site_id}/hardware.yaml"
        )
    spec = site_body.get("spec") if isinstance(site_body.get("spec"), Mapping) else {}
    assert isinstance(spec, Mapping)
    metadata = site_body.get("metadata") if isinstance(site_body.get("metadata"), Mapping) else {}
    assert isinstance(metadata, Mapping)
    labels = metadata.get("labels") if isinstance(metadata.get("labels"), Mapping) else {}
    assert isinstance(labels, Mapping)
    site_type = str(spec.get("type", ""))

    active = [p for p in policies.policies if p.matches_site(site_type, labels)]
    findings: list[Finding] = []
    if not active:
        return findings
    active_ids = {p.index for p in active}

    app_bodies: dict[str, tuple[dict[str, Any], Mark]] = {
        name: _body_and_mark(app, f"apps/{name}/app.yaml") for name, app in apps.items()
    }
    vm_items = [_body_and_mark(vm, f"sites/{site_id}/vms") for vm in vms]

    subjects: list[_Subject] = []
    bodies: list[Mapping[str, Any]] = []
    for obj in rendered_site.objects:
        body = obj.body
        bodies.append(body)
        subjects.append(
            _Subject(_without_site_label(body, site_id), obj.origin, obj.app, _label(body))
        )
        if _claims_source(body):
            findings.append(
                Finding.at(
                    obj.origin,
                    f"{_label(body)}: the annotation {RESERVED_ANNOTATION!r} is reserved; Outpost "
                    "sets it on secrets it decrypts from sites/<id>/secrets/*.sops.yaml. Remove it "
                    "(and encrypt the Secret with `outpost secrets` if it holds secrets)",
                    rule=RULE_ENGINE,
                    site=site_id,
                )
            )
    for ref in getattr(rendered_site, "secret_refs", ()) or ():
        stub = _secret_stub(ref)
        subjects.append(_Subject(stub, ref.origin, None, _label(stub)))

    status, problems = site_status(
        bodies, hardware_body, (b for b, _ in vm_items), (b for b, _ in app_bodies.values())
    )
    for problem in problems:
        subject = subjects[problem.index]
        findings.append(
            Finding.at(
                subject.origin,
                f"{subject.label}: {problem.message}",
                rule=RULE_ENGINE,
                site=site_id,
            )
        )
    site_var = {**site_body, "status": status}
    subjects.append(_Subject(site_body, site_mark, None, f"Site {site_id}"))
    subjects.append(_Subject(hardware_body, hardware_mark, None, f"Hardware {site_id}"))
    for body, mark in vm_items:
        subjects.append(_Subject(body, mark, None, _label(body)))
    for name, (body, mark) in sorted(app_bodies.items()):
        subjects.append(_Subject(body, mark, name, f"App {name}"))

    # Digests of the site-level variables, computed only if some policy needs them.
    lazy: dict[str, bytes] = {}

    def digest_of(variable: str) -> bytes:
        if variable not in lazy:
            lazy[variable] = _digest(site_var if variable == "site" else hardware_body)
        return lazy[variable]

    for subject in subjects:
        matching = [
            p
            for p in policies.for_kind(_group_of(subject.body), str(subject.body.get("kind", "")))
            if p.index in active_ids and not p.exempt(site_id, subject.app)
        ]
        if not matching:
            continue
        app_entry = app_bodies.get(subject.app) if subject.app else None
        app_body: dict[str, Any] = app_entry[0] if app_entry else {}
        variables = {
            "object": subject.body,
            "site": site_var,
            "hardware": hardware_body,
            "app": app_body,
        }
        for policy in matching:
            if subject.digest is None:
                subject.digest = _digest(subject.body)
            key = (
                policy.index,
                subject.digest,
                digest_of("site") if "site" in policy.uses else None,
                digest_of("hardware") if "hardware" in policy.uses else None,
                cache.app_digest(app_body) if "app" in policy.uses else None,
            )
            outcome = cache.results.get(key)
            if outcome is None:
                cache.misses += 1
                # Only what the policy reads is converted into CEL values: the key above
                # already trusts ``uses``, and converting a site's hardware for policies
                # that never read it was most of the binding cost.
                needed = {name: variables[name] for name in ("object", *sorted(policy.uses))}
                outcome = evaluate(policy, cache.bindings.bind(needed), variables=needed)
                cache.results[key] = outcome
            else:
                cache.hits += 1
            for kind, message in outcome:
                text = f"{subject.label}: {message}"
                if kind == _FAILURE:
                    text += (
                        f" (policy {policy.name} cannot decide, so it counts as a violation; "
                        f"{policy.doc.path})"
                    )
                findings.append(
                    Finding.at(
                        subject.origin,
                        text,
                        severity=policy.finding_severity,
                        rule=policy.name,
                        site=site_id,
                    )
                )
    if digests is not None:
        for obj, subject in zip(rendered_site.objects, subjects, strict=False):
            if subject.digest is None:
                subject.digest = _digest(subject.body)
            digests[id(obj.body)] = (subject.body, subject.digest)
    return findings


# --------------------------------------------------------------------------- repository


def policy_documents(repo: Any) -> tuple[list[Document], list[Finding]]:
    """Load ``policies/*.yaml`` (not signers.yaml) one file at a time; broken files are findings."""
    from reconciler.model import YAML_SUFFIXES

    documents: list[Document] = []
    findings: list[Finding] = []
    try:
        paths = repo.tree.files("policies")
    except OutpostError as exc:
        return [], [Finding.from_error(exc, rule="file")]
    for path in paths:
        if path.count("/") != 1 or not path.endswith(YAML_SUFFIXES):
            continue
        if path.rsplit("/", 1)[1].rsplit(".", 1)[0] == "signers":
            continue
        try:
            documents.append(repo.document(path, "Policy"))
        except OutpostError as exc:
            findings.append(Finding.from_error(exc, rule="file"))
    return documents, findings


def check_unrendered_secrets(
    policies: PolicySet, repo: Any, *, cache: PolicyCache | None = None
) -> list[Finding]:
    """Policies on ``kind: Secret`` over every app manifest of the tree, rendered or not.

    A plaintext Secret is a leak the moment it is committed (every clone, every USB
    bundle holds it), whether or not a site renders that app version yet. So the
    Secret documents of every app's manifests are checked as written, placeholders
    and all, with no site: ``site`` and ``hardware`` are empty, ``app`` is the App.
    """
    cache = cache if cache is not None else PolicyCache()
    matching = policies.for_kind("", "Secret")
    findings: list[Finding] = []
    if not matching:
        return findings
    for name in repo.app_names:
        try:
            app = repo.app(name)
        except OutpostError:
            continue  # the file layer reports a broken app
        if app is None:
            continue
        for manifest in app.manifests:
            body = manifest.body
            if not isinstance(body, dict) or body.get("kind") != "Secret":
                continue
            if _group_of(body) != "":
                continue
            variables = {"object": body, "site": {}, "hardware": {}, "app": app.doc.body}
            label = _label(body)
            for policy in matching:
                if policy.exempt("", str(name)):
                    continue
                outcome = evaluate(policy, cache.bindings.bind(variables), variables=variables)
                for kind, message in outcome:
                    text = f"{label}: {message}"
                    if kind == _FAILURE:
                        text += f" (policy {policy.name} cannot decide; {policy.doc.path})"
                    findings.append(
                        Finding.at(
                            manifest.mark(),
                            text,
                            severity=policy.finding_severity,
                            rule=policy.name,
                        )
                    )
    return findings


def validate_policies(
    repo: Any,
    site_ids: Sequence[str] | None = None,
    *,
    today: date,
    render: Callable[[Any, str], Any] | None = None,
    cache: PolicyCache | None = None,
    workers: int | None = None,
    objects: ObjectCheck | None = None,
) -> list[Finding]:
    """Render each site and check it against ``policies/``; the CI entry point.

    ``site_ids`` None means every site of ``repo`` (a ``model.Repository``). Render
    errors become findings (rule ``render``) and that site is skipped. Secrets in app
    manifests are checked whether or not a site renders them (``check_unrendered_secrets``).
    Findings that differ only by site are collapsed (``aggregate``). ``today`` decides which
    exemptions have expired; the caller reads the clock.

    Sites are independent once the repository is loaded, so a large run is split into
    contiguous shards rendered and checked in forked processes (``workers`` None: one
    per core from ``PARALLEL_MIN_SITES`` sites on; 1: in this process). Shards come back
    in site order, so the findings are the same either way; ``cache`` counts the hits and
    evaluations of every shard. ``objects`` checks each rendered site further (CI's
    Kubernetes API schemas, ``ci.kube_schema``); its findings join the policies'.
    """
    documents, findings = policy_documents(repo)
    try:
        policies = load_policies(documents, today=today)
    except PolicyError as exc:
        return [*findings, Finding.from_error(exc, rule=RULE_ENGINE)]
    findings.extend(policies.findings)
    if render is None:
        from reconciler.render import render_site

        render = render_site
    cache = cache if cache is not None else PolicyCache()
    sites = list(site_ids if site_ids is not None else repo.site_ids)

    from reconciler._fork import fork_map, workers_for

    if workers is None:
        workers = workers_for(len(sites), PARALLEL_MIN_SITES)
    shards = _shards(sites, workers)
    checker = render

    def shard(index: int) -> tuple[list[Finding], list[Finding], int, int]:
        hits, misses = cache.hits, cache.misses
        errors, per_site = _check_sites(policies, repo, shards[index], checker, cache, objects)
        return errors, per_site, cache.hits - hits, cache.misses - misses

    per_site: list[Finding] = []
    results = fork_map(shard, len(shards), workers)
    if workers > 1:  # the shards counted in the workers' copies of the cache
        cache.hits += sum(r[2] for r in results)
        cache.misses += sum(r[3] for r in results)
    for errors, found, _, _ in results:
        findings += errors
        per_site += found
    rendered_at = {(f.path, f.line, f.rule) for f in per_site}
    for finding in check_unrendered_secrets(policies, repo, cache=cache):
        if (finding.path, finding.line, finding.rule) not in rendered_at:
            findings.append(finding)
    return findings + aggregate(per_site)


# Below this many sites a run stays in one process: forking and shipping findings back
# cost more than rendering a few hundred sites.
PARALLEL_MIN_SITES = 500
_SHARDS_PER_WORKER = 4


def _shards(sites: Sequence[str], workers: int) -> list[list[str]]:
    """Contiguous runs of ``sites``, a few per worker so a slow shard does not hold the rest."""
    from reconciler._fork import contiguous

    return contiguous(sites, 1 if workers <= 1 else workers * _SHARDS_PER_WORKER)


def _check_sites(
    policies: PolicySet,
    repo: Any,
    site_ids: Sequence[str],
    render: Callable[[Any, str], Any],
    cache: PolicyCache,
    objects: ObjectCheck | None = None,
) -> tuple[list[Finding], list[Finding]]:
    """Render and check ``site_ids`` in order: (render error findings, policy findings)."""
    errors: list[Finding] = []
    per_site: list[Finding] = []
    for site_id in site_ids:
        try:
            rendered = render(repo, site_id)
            folder = repo.site(site_id)
        except OutpostError as exc:
            errors.append(Finding.from_error(exc, rule="render", site=site_id))
            continue
        apps = {instance.name: instance.app for instance in getattr(rendered, "apps", ())}
        digests: Digests | None = {} if objects is not None else None
        per_site += check_site(
            policies,
            rendered,
            folder.site.doc,
            folder.hardware.doc if folder.hardware is not None else None,
            apps,
            vms=folder.vms,
            cache=cache,
            digests=digests,
        )
        if objects is not None and digests is not None:
            per_site += objects(repo, folder, rendered, digests)
    return errors, per_site


def check_rendered_site(
    repo: Any, site_id: str, rendered: RenderedLike, *, today: date
) -> list[Finding]:
    """The node's re-check of its own slice: load policies from ``repo``, check ``rendered``.

    Returns load findings (a policy file that does not load, an expression that does
    not compile, a stale exemption) plus the site's findings. Raises ``PolicyError``
    when the tree has no policies at all: the node must not apply an unchecked slice.
    A finding with severity error means: do not apply this commit.
    """
    documents, findings = policy_documents(repo)
    policies = load_policies(documents, today=today)
    findings.extend(policies.findings)
    folder = repo.site(site_id)
    apps = {instance.name: instance.app for instance in getattr(rendered, "apps", ())}
    findings += check_site(
        policies,
        rendered,
        folder.site.doc,
        folder.hardware.doc if folder.hardware is not None else None,
        apps,
        vms=folder.vms,
    )
    return findings


def policy_check(
    *, today: date, objects: ObjectCheck | None = None
) -> Callable[[Any, Sequence[str]], list[Finding]]:
    """``validate_policies`` as a ``validate.Check`` (repository, site ids) → findings."""

    def check(repo: Any, site_ids: Sequence[str]) -> list[Finding]:
        return validate_policies(repo, site_ids, today=today, objects=objects)

    return check
