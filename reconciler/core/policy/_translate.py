"""One policy in the API server's CEL: what Outpost's expressions become at admission.

Outpost's CEL and Kubernetes' CEL are the same language; what differs is what an
expression may name. At the API server a ValidatingAdmissionPolicy sees ``object``,
``params`` (the parameter resource of its binding) and its own ``variables``; it has
none of Outpost's functions and none of Outpost's variables. So the translation is
a rewrite of names, done on CEL tokens (string literals are never touched):

``containers(object)``, ``podSpec(object)``, ``images(object)``
    become ``variables.containers``, ``variables.podSpec``, ``variables.images``,
    policy variables written in Kubernetes CEL that do what ``_facts`` does in
    Python (the pod spec of every pod-bearing kind, init + regular + ephemeral
    containers, container images and KubeVirt containerDisk images). Called on
    anything but ``object`` they cannot be expressed: the policy is not exportable.
``cpuMillis(q)``, ``memoryBytes(q)``
    have no exact equivalent (Kubernetes' ``quantity()`` is approximate as a
    number): not exportable.
``site.a.b``, ``hardware.a.b``, ``app.a.b`` (Outpost-only variables)
    become reads of a parameter ConfigMap whose ``data`` holds one entry per fact
    the site's policies read, keyed by its path (``site.spec.type``,
    ``app.<app name>.spec.allow.privileged``), the value typed by a prefix
    (``b:true``, ``i:3``, ``d:1.5``, ``s:text``, ``n:``; ``m:``/``l:`` mark a
    map or a list that exists). ``has(site.a.b)`` becomes a key test, a value
    becomes a read of the typed string. A ConfigMap's values are strings
    and Kubernetes' CEL cannot parse JSON, so only scalars cross: a policy that
    reads a list or a map of these variables (``site.status.capacity.devices``,
    ``x in hardware.spec.nodes``) or the variable as a whole is not exportable.
    ``app`` is the App of the object's app: at the API server that is the
    ``outpost/app`` label render puts on every object and pod template, believed
    only in the namespaces the site's slice puts that app's objects in
    (``variables.outpostApp``).

Anything else (``object.…``, macros, the standard library) is passed as it is. The
API server compiles the result when the policy is applied; that an expression
means the same there as here is what ``outpost policy test --cluster`` checks on
every policy's own cases.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "APP_LABEL",
    "APP_MARKER",
    "OUTPOST_VARIABLES",
    "Admission",
    "AdmissionForm",
    "FactPath",
    "NotExportable",
    "admission_of",
    "translate_expression",
]

APP_LABEL = "outpost/app"
OUTPOST_VARIABLES = ("site", "hardware", "app")
# The prefix of the parameter entry naming the namespaces of an app's objects at the site.
APP_MARKER = "outpost-app."

_POD_KINDS = (
    "['Deployment', 'StatefulSet', 'DaemonSet', 'ReplicaSet', 'Job', 'ReplicationController']"
)

# Kubernetes CEL for what ``_facts`` computes in Python; each may use the ones before it.
_POD_SPEC = (
    "object.kind == 'Pod' && has(object.spec) ? object.spec"
    " : object.kind == 'CronJob' && has(object.spec.jobTemplate.spec.template.spec)"
    " ? object.spec.jobTemplate.spec.template.spec"
    f" : object.kind in {_POD_KINDS} && has(object.spec.template)"
    " && has(object.spec.template.spec) ? object.spec.template.spec : {}"
)
_CONTAINERS = (
    "(has(variables.podSpec.initContainers) ? variables.podSpec.initContainers : [])"
    " + (has(variables.podSpec.containers) ? variables.podSpec.containers : [])"
    " + (has(variables.podSpec.ephemeralContainers) ? variables.podSpec.ephemeralContainers : [])"
)
_IMAGES = (
    "variables.containers.filter(c, has(c.image)).map(c, c.image)"
    " + (object.kind == 'VirtualMachine' && object.apiVersion.startsWith('kubevirt.io/')"
    " && has(object.spec.template) && has(object.spec.template.spec)"
    " && has(object.spec.template.spec.volumes)"
    " ? object.spec.template.spec.volumes.filter(v, has(v.containerDisk)"
    " && has(v.containerDisk.image)).map(v, v.containerDisk.image) : [])"
)
_APP = (
    f"has(object.metadata.labels) && '{APP_LABEL}' in object.metadata.labels"
    f" && ('{APP_MARKER}' + object.metadata.labels['{APP_LABEL}']) in params.data"
    " && (has(object.metadata.namespace) ? object.metadata.namespace : '')"
    f" in params.data['{APP_MARKER}' + object.metadata.labels['{APP_LABEL}']].split(',')"
    f" ? object.metadata.labels['{APP_LABEL}'] : ''"
)
# name -> (definition, the variables it needs first)
VARIABLES: dict[str, tuple[str, tuple[str, ...]]] = {
    "outpostApp": (_APP, ()),
    "podSpec": (_POD_SPEC, ()),
    "containers": (_CONTAINERS, ("podSpec",)),
    "images": (_IMAGES, ("containers",)),
}
_FUNCTIONS = ("podSpec", "containers", "images")
_INEXACT = {
    "cpuMillis": "cpuMillis() has no exact equivalent in the API server's CEL",
    "memoryBytes": "memoryBytes() has no exact equivalent in the API server's CEL",
}
_MACROS = frozenset(
    {"all", "exists", "exists_one", "map", "filter", "transformList", "transformMap"}
)

# A typed fact read: ``params.data[K]`` as the value its prefix says. (The API server's
# CEL has no cel.bind, so the read is repeated; each is a map lookup.)
_DECODE = (
    "({v}.startsWith('b:') ? dyn({v} == 'b:true')"
    " : {v}.startsWith('i:') ? dyn(int({v}.substring(2)))"
    " : {v}.startsWith('d:') ? dyn(double({v}.substring(2)))"
    " : {v}.startsWith('s:') ? dyn({v}.substring(2))"
    " : {v} == 'n:' ? dyn(null)"
    # A list or a map cannot cross a ConfigMap: an error, which the policy's
    # failurePolicy turns into a denial, never a silent pass.
    " : dyn(int({v})))"
)


class NotExportable(ValueError):
    """An expression the API server cannot evaluate the way Outpost does; the text says why."""


@dataclass(frozen=True, order=True)
class FactPath:
    """A path into an Outpost-only variable that an expression reads: ``app`` + (spec, allow)."""

    root: str
    path: tuple[str, ...]

    def __str__(self) -> str:
        return ".".join((self.root, *self.path))


@dataclass(frozen=True)
class AdmissionForm:
    """One expression in the API server's CEL, with what it needs from its policy."""

    expression: str
    variables: frozenset[str]
    facts: frozenset[FactPath]


# --------------------------------------------------------------------------- tokens

_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<string>
        (?:[bB]?[rR]) (?: '''.*?''' | \"\"\".*?\"\"\" | '[^'\n]*' | "[^"\n]*" )
      | [bB]? (?: '''(?:\\.|[^\\])*?''' | \"\"\"(?:\\.|[^\\])*?\"\"\"
               | '(?:\\.|[^'\\\n])*' | "(?:\\.|[^"\\\n])*" )
    )
  | (?P<number>0[xX][0-9a-fA-F]+[uU]? | [0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?[uU]?
               | \.[0-9]+(?:[eE][+-]?[0-9]+)?)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<punct>\|\||&&|==|!=|<=|>=|[-+*/%!<>?:.,()\[\]{}])
    """,
    re.VERBOSE | re.DOTALL,
)


@dataclass(frozen=True)
class _Token:
    kind: str
    text: str
    start: int
    end: int


def _tokens(source: str) -> list[_Token]:
    tokens: list[_Token] = []
    position = 0
    while position < len(source):
        match = _TOKEN.match(source, position)
        if match is None:
            raise NotExportable(
                f"cannot read the expression at character {position + 1} "
                f"({source[position : position + 20]!r})"
            )
        kind = match.lastgroup or ""
        if kind != "space":
            tokens.append(_Token(kind, match.group(), match.start(), match.end()))
        position = match.end()
    return tokens


def _text(tokens: Sequence[_Token], index: int) -> str:
    return tokens[index].text if 0 <= index < len(tokens) else ""


def _is_free(tokens: Sequence[_Token], index: int) -> bool:
    """An identifier that is not a field or method name (``x.site``) nor a macro's binder."""
    if _text(tokens, index - 1) == ".":
        return False
    binder = (
        _text(tokens, index - 1) == "("
        and tokens[index - 2].kind == "ident"
        and tokens[index - 2].text in _MACROS
        and _text(tokens, index - 3) == "."
        and _text(tokens, index + 1) == ","
    )
    if binder and tokens[index].text in (*OUTPOST_VARIABLES, *_FUNCTIONS):
        raise NotExportable(
            f"it binds {tokens[index].text!r} as a macro variable, which shadows Outpost's own"
        )
    return not binder


# --------------------------------------------------------------------------- rewrite


def fact_key(fact: FactPath) -> str:
    """The CEL expression of the parameter key of ``fact`` for the object under admission."""
    tail = ".".join(fact.path)
    if fact.root == "app":
        return f"('app.' + variables.outpostApp + '.{tail}')"
    return f"'{fact.root}.{tail}'"


def translate_expression(source: str) -> AdmissionForm:
    """``source`` (Outpost's CEL) in the API server's CEL; raises NotExportable with the reason."""
    tokens = _tokens(source)
    out: list[str] = []
    variables: set[str] = set()
    facts: set[FactPath] = set()
    copied = 0  # the source is copied up to here
    index = 0
    while index < len(tokens):
        token = tokens[index]
        if token.kind != "ident" or not _is_free(tokens, index):
            index += 1
            continue
        name = token.text
        if name in _INEXACT and _text(tokens, index + 1) == "(":
            raise NotExportable(_INEXACT[name])
        if name in _FUNCTIONS and _text(tokens, index + 1) == "(":
            if _text(tokens, index + 2) != "object" or _text(tokens, index + 3) != ")":
                raise NotExportable(
                    f"{name}() is called on something other than object; the API server's "
                    f"variables.{name} is defined for the object under admission only"
                )
            out.append(source[copied : token.start])
            out.append(f"variables.{name}")
            variables.add(name)
            copied = tokens[index + 3].end
            index += 4
            continue
        if name not in OUTPOST_VARIABLES:
            index += 1
            continue
        path: list[str] = []
        end = index + 1
        while (
            _text(tokens, end) == "."
            and end + 1 < len(tokens)
            and tokens[end + 1].kind == "ident"
            and _text(tokens, end + 2) != "("
        ):
            path.append(tokens[end + 1].text)
            end += 2
        after = _text(tokens, end)
        if not path:
            raise NotExportable(
                f"it uses {name} as a whole; only scalar fields of it (and has()) can be "
                "passed to the API server"
            )
        fact = FactPath(name, tuple(path))
        if after in ("[", ".") or _text(tokens, index - 1) == "in":
            raise NotExportable(
                f"it reads {fact} as a list or map, or calls a method on it; only scalar "
                "facts (strings, numbers, booleans), compared or tested with has(), can be "
                "passed to the API server through a ConfigMap"
            )
        facts.add(fact)
        if name == "app":
            variables.add("outpostApp")
        in_has = (
            _text(tokens, index - 1) == "("
            and _text(tokens, index - 2) == "has"
            and _text(tokens, index - 3) != "."
            and after == ")"
        )
        if in_has:
            out.append(source[copied : tokens[index - 2].start])
            out.append(f"({fact_key(fact)} in params.data)")
            copied = tokens[end].end
        else:
            out.append(source[copied : token.start])
            out.append(_DECODE.format(v=f"params.data[{fact_key(fact)}]"))
            copied = tokens[end - 1].end
        index = end + (1 if in_has else 0)
    out.append(source[copied:])
    return AdmissionForm("".join(out).strip(), frozenset(variables), frozenset(facts))


def variable_definitions(names: frozenset[str]) -> list[tuple[str, str]]:
    """The policy ``variables`` (name, expression) for ``names`` and what they need, in order."""
    wanted: set[str] = set()

    def need(name: str) -> None:
        if name in wanted:
            return
        wanted.add(name)
        for dependency in VARIABLES[name][1]:
            need(dependency)

    for name in names:
        need(name)
    return [(name, VARIABLES[name][0]) for name in VARIABLES if name in wanted]


# --------------------------------------------------------------------------- a policy

# Kinds whose REST resource is not the lower-case kind plus "s".
_PLURALS = {
    "Endpoints": "endpoints",
    "Ingress": "ingresses",
    "IngressClass": "ingressclasses",
    "NetworkPolicy": "networkpolicies",
    "PodSecurityPolicy": "podsecuritypolicies",
    "PriorityClass": "priorityclasses",
    "StorageClass": "storageclasses",
    "RuntimeClass": "runtimeclasses",
    "ResourceQuota": "resourcequotas",
    "VirtualMachineInstanceReplicaSet": "virtualmachineinstancereplicasets",
}


def resource_of(kind: str) -> str:
    """The REST resource (plural) of a kind by Kubernetes' rule (``Ingress`` → ingresses)."""
    if kind == "*":
        return "*"
    if kind in _PLURALS:
        return _PLURALS[kind]
    lower = kind.lower()
    if lower.endswith("y") and lower[-2:-1] not in ("a", "e", "i", "o", "u"):
        return lower[:-1] + "ies"
    if lower.endswith(("s", "x", "ch", "sh")):
        return lower + "es"
    return lower + "s"


@dataclass(frozen=True)
class AdmissionValidation:
    expression: str
    message: str
    message_expression: str | None


@dataclass(frozen=True)
class Admission:
    """A policy in the API server's terms, before any site's facts: rules, variables, checks."""

    resource_rules: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...]  # (apiGroups, resources)
    variables: tuple[tuple[str, str], ...]
    validations: tuple[AdmissionValidation, ...]
    facts: frozenset[FactPath]

    @property
    def needs_params(self) -> bool:
        """Whether the policy reads the parameter ConfigMap (Outpost-only variables)."""
        return bool(self.facts)


def admission_of(
    resources: Sequence[tuple[frozenset[str], frozenset[str]]],
    validations: Sequence[tuple[str, str, str | None]],
) -> Admission:
    """The API server's form of a policy's ``match.resources`` and (expression, message,
    messageExpression) validations; raises NotExportable with the reason it cannot be.

    A ``messageExpression`` that cannot be translated is left out (the static message
    is used, as the API server does when one fails); an expression that cannot be
    makes the whole policy not exportable.
    """
    rules: list[tuple[tuple[str, ...], tuple[str, ...]]] = []
    for groups, kinds in resources:
        if "outpost" in groups or "*" in groups:
            raise NotExportable(
                "it matches Outpost documents (API group outpost: Site, Hardware, App, "
                "VirtualMachine), which live in the repository and never reach the API server"
            )
        rules.append((tuple(sorted(groups)), tuple(sorted({resource_of(k) for k in kinds}))))
    names: set[str] = set()
    facts: set[FactPath] = set()
    checks: list[AdmissionValidation] = []
    for index, (expression, message, message_expression) in enumerate(validations):
        try:
            form = translate_expression(expression)
        except NotExportable as exc:
            raise NotExportable(f"validations[{index}].expression: {exc}") from None
        names |= form.variables
        facts |= form.facts
        translated_message = None
        if message_expression:
            try:
                message_form = translate_expression(message_expression)
            except NotExportable:
                message_form = None
            if message_form is not None:
                names |= message_form.variables
                facts |= message_form.facts
                translated_message = message_form.expression
        checks.append(AdmissionValidation(form.expression, message, translated_message))
    return Admission(
        resource_rules=tuple(rules),
        variables=tuple(variable_definitions(frozenset(names))),
        validations=tuple(checks),
        facts=frozenset(facts),
    )
