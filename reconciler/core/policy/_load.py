"""Load ``kind: Policy`` documents: compile every expression once, report what does not load.

A policy that does not load, an expression that does not compile and an expired
exemption are findings at their file:line; no Policy documents at all is a PolicyError.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from reconciler.core.cel_cost import Cost, analyse
from reconciler.core.errors import Mark, OutpostError, PolicyError
from reconciler.core.findings import ERROR, WARNING, Finding
from reconciler.core.loader import Document
from reconciler.core.policy._translate import Admission, NotExportable, admission_of

SITE_VARIABLES = ("site", "hardware", "app")

_SEVERITY = {"deny": ERROR, "warn": WARNING}
# Rendered bodies as policies see them, and their digests, by id of the rendered body.
Digests = dict[int, tuple[Mapping[str, Any], bytes]]
# A further check of each rendered site: (repository, site folder, rendered, the digests
# the policy check computed) → findings.
ObjectCheck = Callable[[Any, Any, Any, Digests], list[Finding]]

# Where a policy is enforced (spec.enforce): everywhere includes the site's API server.
ENFORCE_EVERYWHERE = "everywhere"
ENFORCE_CI_AND_NODE = "ci-and-node"
_ENFORCE = (ENFORCE_EVERYWHERE, ENFORCE_CI_AND_NODE)


# --------------------------------------------------------------------------- model


@dataclass(frozen=True)
class Validation:
    """One compiled CEL check; ``program`` is None when the expression did not compile."""

    expression: str
    mark: Mark
    program: Any
    message: str
    message_program: Any = None
    message_source: str | None = None
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
    enforce: str = ENFORCE_EVERYWHERE
    # No expression reads ``object``: its result is the same for every object (a policy on
    # a site's figures); every ``site`` it reads is ``site.status`` (`_site_status_only`).
    reads_object: bool = True
    site_status_only: bool = False
    # Every use of ``object`` selects one of these field paths (`_object_paths`): a result
    # depends on the values there, not on the rest of the object. None: the whole object.
    object_paths: tuple[tuple[str, ...], ...] | None = None
    # The API server's form of the policy (None when it has none; ``not_exportable`` says why).
    admission: Admission | None = None
    not_exportable: str = ""

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
            from reconciler.core.model import selector_matches

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
    from reconciler.core.policy._cel import engine

    try:
        return engine().compile(expression), None
    except Exception as exc:  # the cel seam: nothing of the binding's escapes
        return None, str(exc).strip()


def _references(program: Any) -> frozenset[str]:
    try:
        return frozenset(str(v) for v in program.variables())
    except Exception:  # a binding without static analysis: assume everything is used
        return frozenset((*SITE_VARIABLES, "object"))


# CEL string literals that are not raw (a raw one, a comment or a quoted field name makes
# `_site_status_only` give up before this is used).
_STRING_LITERAL = re.compile(
    r'[bB]?(?:"""(?:\\.|[^\\])*?"""|\'\'\'(?:\\.|[^\\])*?\'\'\''
    r'|"(?:\\.|[^"\\\n])*"|\'(?:\\.|[^\'\\\n])*\')',
    re.DOTALL,
)
# A raw string's prefix (not the end of a word: 'printer' is no r'...'), a comment, a
# quoted field name: text these readings of an expression do not try to follow.
_UNREADABLE = re.compile(r"(?<![A-Za-z0-9_])(?:[rR][bB]?|[bB][rR])['\"]|//|`")
_SITE_WORD = re.compile(r"\bsite\b")
_STATUS_AFTER = re.compile(r"\s*\.\s*status\b(?!\s*\()")


def _site_status_only(sources: Sequence[str]) -> bool:
    """Whether every use of the variable ``site`` in ``sources`` is ``site.status``.

    Such a policy's results depend on the site's computed status only, not on the rest
    of its Site document: most stores of a fleet share their status, so the result is
    cached once for all of them (``check_site``). Judged on the text with string literals
    taken out; anything this reading is not sure of (a raw string, a comment, a quoted
    field name, ``site`` alone or as a comprehension's variable) says no.
    """
    for source in sources:
        code = _code(source)
        if code is None:
            return False
        for match in _variable(_SITE_WORD, code):
            if _STATUS_AFTER.match(code, match.end()) is None:
                return False
    return True


def _code(source: str) -> str | None:
    """``source`` with its string literals blanked out, or None where a reading of it for
    variables would not be sure (a raw string, a comment, a quoted field name)."""
    if _UNREADABLE.search(source):
        return None
    code = _STRING_LITERAL.sub(" 0 ", source)
    return None if "'" in code or '"' in code else code


def _variable(word: re.Pattern[str], code: str) -> Iterator[re.Match[str]]:
    """Each use of the variable ``word`` matches in ``code``: not a field of that name
    (``object.site``, ``x.object``)."""
    for match in word.finditer(code):
        if _before(code, match.start()) != ".":
            yield match


def _before(code: str, index: int) -> str:
    """The last character before ``index`` that is not white space ("" at the start):
    looked back to, not sliced, so an expression with many uses stays linear."""
    while index > 0 and code[index - 1].isspace():
        index -= 1
    return code[index - 1] if index > 0 else ""


_COMMA = re.compile(r"\s*,")


_OBJECT_WORD = re.compile(r"\bobject\b")
_FIELD = re.compile(r"\s*\.\s*([A-Za-z_][A-Za-z0-9_]*)\b(?!\s*\()")


def _object_paths(sources: Sequence[str]) -> tuple[tuple[str, ...], ...] | None:
    """The field paths through which ``sources`` read the variable ``object``, or None.

    ``object.kind != 'Site' || !has(object.spec.devices)`` reads ``kind`` and
    ``spec.devices`` only; its result is the same for two objects that agree there, so
    ``check_site`` caches it by those values (every Site of a fleet shares them, while
    its Site document differs from every other). A path ends where the chain of
    ``.field`` selections does (before a method or macro call, an index, an optional
    ``.?``), and the value there is taken whole. Anything this reading is not sure of
    says None, and the whole object is the key: ``object`` alone or passed to a function
    (``containers(object)``), bound by a macro, or text `_site_status_only` would refuse.
    """
    paths: set[tuple[str, ...]] = set()
    for source in sources:
        code = _code(source)
        if code is None:
            return None
        for match in _variable(_OBJECT_WORD, code):
            if _before(code, match.start()) == "(" and _COMMA.match(code, match.end()):
                return None  # bound by a macro: list.all(object, ...) shadows the variable
            path: list[str] = []
            at = match.end()
            while (field := _FIELD.match(code, at)) is not None:
                path.append(field.group(1))
                at = field.end()
            if not path:
                return None
            paths.add(tuple(path))
    # A path under another is covered by it: the shorter one's value holds the longer.
    return tuple(sorted(p for p in paths if not any(q != p and p[: len(q)] == q for q in paths)))


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
    enforce = spec.get("enforce", ENFORCE_EVERYWHERE)
    if enforce not in _ENFORCE:
        add(
            doc.mark("spec", "enforce"),
            f"enforce is {enforce!r}; expected everywhere (CI, the node and the site's API "
            "server) or ci-and-node",
        )
        enforce = ENFORCE_EVERYWHERE
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
                message_source=source if isinstance(source, str) and source.strip() else None,
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
    admission: Admission | None = None
    not_exportable = ""
    if any(v.program is None for v in validations):
        # Already an error at the expression's line; the API server would refuse it too.
        not_exportable = "an expression of it does not compile"
    else:
        try:
            admission = admission_of(
                resources, [(v.expression, v.message, v.message_source) for v in validations]
            )
        except NotExportable as exc:
            not_exportable = str(exc)
    if (
        admission is None
        and not_exportable
        and enforce == ENFORCE_EVERYWHERE
        and (all(v.program is not None for v in validations))
    ):
        add(
            doc.mark("spec", "enforce") if "enforce" in spec else doc.mark("spec"),
            f"the site's API server cannot enforce this policy: {not_exportable}. Mark it "
            "`enforce: ci-and-node` (it is then enforced in CI and on the node only) or "
            "rewrite it so the API server can evaluate it (see `outpost policy export`)",
        )
    # A result cached without the object (or with the site's status only) is only right when
    # no cost bound looks at the sizes of the variables left out (nested comprehensions).
    nested = any(v.cost.nested or v.message_cost.nested for v in validations)
    sources = [v.expression for v in validations if v.program is not None]
    sources += [str(v.message_source) for v in validations if v.message_program is not None]
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
        reads_object="object" in uses or nested,
        site_status_only=not nested and "site" in uses and _site_status_only(sources),
        object_paths=None if nested or "object" not in uses else _object_paths(sources),
        enforce=str(enforce),
        admission=admission,
        not_exportable=not_exportable,
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


def policy_documents(repo: Any) -> tuple[list[Document], list[Finding]]:
    """Load ``policies/*.yaml`` (not signers.yaml) one file at a time; broken files are findings."""
    from reconciler.core.model import YAML_SUFFIXES

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
