"""Delegation: ``policies/signers.yaml`` (``kind: Signers``) says which key may change which paths.

Root signers (the node's ``allowed_signers``) may change everything. Everyone
else is a *delegated* signer listed here with its keys and path patterns: the
POS team ``apps/pos/**``, a region's operators ``sites/de-*/**``.

Rules enforced here (the threat each one answers):

- A commit is judged by the ``signers.yaml`` of its *parent* tree, never its
  own: a commit that adds its own key, or widens its own paths, gains nothing
  (a delegated signer escalating itself).
- ``policies/**`` (policies and this file) may be changed by root signers only,
  whatever a pattern says — ``**`` included: delegation must not be able to
  rewrite delegation.
- Patterns: ``*`` and ``?`` stay within one path segment, ``**`` as a whole
  segment spans any number of segments, ``[abc]`` and ``{a,b}`` as in shells.
  Matching is on the full path; ``apps/pos/**`` does not match ``apps/posx/``.
- A key listed under two signers, an unsupported key type, an unknown field or
  a malformed pattern makes the whole file invalid: delegated signatures are
  then refused until a root signer fixes it (fail closed; roots are unaffected).
- ``spec.thresholds`` asks for k distinct principals on a change to some paths
  (``policies/**`` most of all: one stolen root key must not rewrite the rules),
  ``spec.emergencyApprovals`` for an ``Outpost-Emergency`` commit; like the
  delegations, they are read from the *parent*, so a commit that lowers a
  threshold needs the threshold it lowers.
- ``spec.heartbeat.keys`` may sign the heartbeat tag (``outpost heartbeat``) and
  nothing else: a commit signed only by a heartbeat key is an unknown key.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from reconciler.core.errors import DocumentError, Mark, OutpostError, VerificationError
from reconciler.core.trust.sshsig import PublicKey, check_supported, parse_public_key_line

__all__ = [
    "EMPTY_RULES",
    "MAX_APPROVALS",
    "POLICY_PATTERN",
    "ROOT_SIGNERS_PATH",
    "SIGNERS_PATH",
    "Signer",
    "SignerRules",
    "Threshold",
    "compile_pattern",
    "is_policy_path",
    "parse_signers",
]

SIGNERS_PATH = "policies/signers.yaml"
ROOT_SIGNERS_PATH = "policies/root-signers"
"""The next trust root, in allowed_signers format: it takes effect on a node once the
change is approved by the threshold of the root the node holds (`verify`)."""
POLICY_PATTERN = "policies/**"
MAX_APPROVALS = 16
_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_PATTERN = re.compile(r"^[A-Za-z0-9_.*?\[\]{},-]+(/[A-Za-z0-9_.*?\[\]{},-]+)*$")
_SIGNER_FIELDS = frozenset({"name", "keys", "paths"})


def is_policy_path(path: str) -> bool:
    """True for ``policies`` and everything under it: root signers only."""
    return path == "policies" or path.startswith("policies/")


def _segment(segment: str, pattern: str) -> str:
    out: list[str] = []
    pos = 0
    while pos < len(segment):
        char = segment[pos]
        if char == "*":
            while pos < len(segment) and segment[pos] == "*":
                pos += 1
            out.append("[^/]*")
            continue
        if char == "?":
            out.append("[^/]")
        elif char == "[":
            end = segment.find("]", pos + 2)
            if end < 0:
                raise ValueError(f"pattern {pattern!r}: '[' without ']'")
            body = segment[pos + 1 : end].replace("[", "\\[")
            if body[0] in "!^":  # a negated class still never matches '/'
                body = "^/" + body[1:]
            out.append("[" + body + "]")
            pos = end + 1
            continue
        elif char == "{":
            end = segment.find("}", pos)
            if end < 0:
                raise ValueError(f"pattern {pattern!r}: '{{' without '}}'")
            choices = segment[pos + 1 : end].split(",")
            if "{" in segment[pos + 1 : end]:
                raise ValueError(f"pattern {pattern!r}: nested '{{' is not supported")
            out.append("(?:" + "|".join(_segment(c, pattern) for c in choices) + ")")
            pos = end + 1
            continue
        elif char in "]}":
            raise ValueError(f"pattern {pattern!r}: unmatched {char!r}")
        else:
            out.append(re.escape(char))
        pos += 1
    return "".join(out)


@lru_cache(maxsize=4096)
def compile_pattern(pattern: str) -> re.Pattern[str]:
    """Translate a path pattern into a regex over whole paths; ValueError if malformed."""
    if not _PATTERN.match(pattern):
        raise ValueError(
            f"pattern {pattern!r} is not a relative path pattern (letters, digits, '_.-', "
            "wildcards '*?[]{},', segments separated by '/', no leading '/')"
        )
    segments = pattern.split("/")
    if any(s in (".", "..") for s in segments):
        raise ValueError(f"pattern {pattern!r} has a '.' or '..' segment")
    parts: list[str] = []
    for index, segment in enumerate(segments):
        last = index == len(segments) - 1
        if segment == "**":
            parts.append(".+" if last else "(?:[^/]+/)*")
        else:
            parts.append(_segment(segment, pattern) + ("" if last else "/"))
    try:
        return re.compile("".join(parts), re.DOTALL)
    except re.error as exc:
        raise ValueError(f"pattern {pattern!r} is malformed: {exc}") from None


@dataclass(frozen=True)
class Signer:
    """A delegated signer: a name, its keys and the path patterns it may change."""

    name: str
    keys: tuple[PublicKey, ...]
    paths: tuple[str, ...]
    mark: Mark = field(default_factory=lambda: Mark(SIGNERS_PATH), compare=False)

    def allows(self, path: str) -> bool:
        """May this signer change ``path``? Never for ``policies/**``."""
        if is_policy_path(path):
            return False
        return any(compile_pattern(p).fullmatch(path) for p in self.paths)

    def scope_problem(self, paths: Iterable[str]) -> str | None:
        """The first path outside this signer's scope, explained, or None."""
        for path in paths:
            if self.allows(path):
                continue
            if is_policy_path(path):
                return (
                    f"signed by {self.name}, a delegated signer, but it changes {path}; only "
                    f"root signers may change {POLICY_PATTERN}"
                )
            return (
                f"signed by {self.name}, which may change {', '.join(self.paths)}, "
                f"but it changes {path}"
            )
        return None


@dataclass(frozen=True)
class Threshold:
    """``approvals`` distinct principals must sign a change to a path the patterns match."""

    paths: tuple[str, ...]
    approvals: int
    mark: Mark = field(default_factory=lambda: Mark(SIGNERS_PATH), compare=False)

    def matched(self, paths: Iterable[str]) -> tuple[str, ...]:
        """The paths of ``paths`` this threshold governs."""
        return tuple(p for p in paths if any(compile_pattern(q).fullmatch(p) for q in self.paths))


@dataclass(frozen=True)
class SignerRules:
    """The delegations of one tree, indexed by key blob, with its approval thresholds."""

    signers: tuple[Signer, ...] = ()
    thresholds: tuple[Threshold, ...] = ()
    emergency_approvals: int = 1
    heartbeat: tuple[PublicKey, ...] = ()
    _by_key: Mapping[bytes, Signer] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        index: dict[bytes, Signer] = {}
        names: set[str] = set()
        for signer in self.signers:
            if signer.name in names:
                raise VerificationError(
                    f"signer {signer.name!r} is listed twice; signer names are unique",
                    mark=signer.mark,
                )
            names.add(signer.name)
            for key in signer.keys:
                other = index.get(key.blob)
                if other is not None and other.name != signer.name:
                    raise VerificationError(
                        f"key {key.fingerprint} is listed for both {other.name} and "
                        f"{signer.name}; list each key under one signer",
                        mark=signer.mark,
                    )
                index[key.blob] = signer
        object.__setattr__(self, "_by_key", index)

    def find(self, key: PublicKey) -> Signer | None:
        return self._by_key.get(key.blob)

    def required(self, paths: Iterable[str]) -> tuple[int, tuple[str, ...], Threshold | None]:
        """The approvals a change to ``paths`` needs: (count, the paths that ask for it, rule)."""
        listed = tuple(paths)
        best: tuple[int, tuple[str, ...], Threshold | None] = (1, (), None)
        for threshold in self.thresholds:
            matched = threshold.matched(listed)
            if matched and threshold.approvals > best[0]:
                best = (threshold.approvals, matched, threshold)
        return best

    def heartbeat_key(self, key: PublicKey) -> bool:
        return any(k.blob == key.blob for k in self.heartbeat)


EMPTY_RULES = SignerRules()


def _load(data: bytes, path: str) -> Any:
    """The one place signers.yaml is read as YAML: the shared loader (marks, caps, no aliases)."""
    from reconciler.core.loader import load_documents

    return load_documents(data, path)[0]


def _fail(message: str, doc: Any, *keys: str | int) -> VerificationError:
    return VerificationError(message, mark=doc.mark(*keys))


def _parse_signer(doc: Any, index: int, entry: Any) -> Signer:
    where: tuple[str | int, ...] = ("spec", "signers", index)
    if not isinstance(entry, dict):
        raise _fail("each signer must be a mapping with name, keys and paths", doc, *where)
    unknown = sorted(set(entry) - _SIGNER_FIELDS)
    if unknown:
        raise _fail(
            f"unknown field {unknown[0]!r} in a signer (allowed: name, keys, paths)", doc, *where
        )
    name = entry.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise _fail(
            f"signer name {name!r} is not a DNS label (lowercase letters, digits, '-')",
            doc,
            *where,
            "name",
        )
    keys_raw = entry.get("keys")
    if not isinstance(keys_raw, list) or not keys_raw:
        raise _fail(
            f"signer {name}: keys must be a non-empty list of SSH public keys", doc, *where, "keys"
        )
    keys: list[PublicKey] = []
    for number, line in enumerate(keys_raw):
        if not isinstance(line, str):
            raise _fail(f"signer {name}: each key must be a string", doc, *where, "keys", number)
        try:
            key = parse_public_key_line(line, what=f"signer {name}: key")
            check_supported(key)
        except VerificationError as exc:
            raise _fail(exc.message, doc, *where, "keys", number) from None
        keys.append(key)
    paths_raw = entry.get("paths")
    if not isinstance(paths_raw, list) or not paths_raw:
        raise _fail(
            f"signer {name}: paths must be a non-empty list of path patterns", doc, *where, "paths"
        )
    paths: list[str] = []
    for number, pattern in enumerate(paths_raw):
        if not isinstance(pattern, str):
            raise _fail(
                f"signer {name}: each path pattern must be a string", doc, *where, "paths", number
            )
        try:
            compile_pattern(pattern)
        except ValueError as exc:
            raise _fail(f"signer {name}: {exc}", doc, *where, "paths", number) from None
        if is_policy_path(pattern):
            raise _fail(
                f"signer {name}: pattern {pattern!r} reaches into policies/; only root signers "
                f"may change {POLICY_PATTERN}",
                doc,
                *where,
                "paths",
                number,
            )
        paths.append(pattern)
    return Signer(name, tuple(keys), tuple(paths), doc.mark(*where))


@lru_cache(maxsize=64)
def parse_signers(data: bytes, path: str = SIGNERS_PATH) -> SignerRules:
    """Parse a ``kind: Signers`` document; `VerificationError` with file:line when invalid.

    Cached by content: thousands of commits share a handful of versions.
    """
    try:
        doc = _load(data, path)
    except DocumentError as exc:
        raise VerificationError(exc.message, mark=exc.mark) from None
    except OutpostError as exc:  # pragma: no cover - the loader raises DocumentError only
        raise VerificationError(exc.message, mark=exc.mark) from None
    if doc.kind != "Signers":
        raise _fail(f"expected kind Signers, found kind {doc.kind}", doc, "kind")
    spec = doc.body.get("spec")
    if not isinstance(spec, dict):
        raise _fail("spec must be a mapping with a signers list", doc, "spec")
    unknown = sorted(set(spec) - _SPEC_FIELDS)
    if unknown:
        raise _fail(
            f"unknown field {unknown[0]!r} in spec (allowed: {', '.join(sorted(_SPEC_FIELDS))})",
            doc,
            "spec",
        )
    entries = spec.get("signers")
    if not isinstance(entries, list):
        raise _fail("spec.signers must be a list", doc, "spec", "signers")
    thresholds_raw = spec.get("thresholds", [])
    if not isinstance(thresholds_raw, list):
        raise _fail("spec.thresholds must be a list", doc, "spec", "thresholds")
    emergency = spec.get("emergencyApprovals", 1)
    if not _approval_count(emergency):
        raise _fail(
            f"spec.emergencyApprovals must be a whole number from 1 to {MAX_APPROVALS}, "
            f"found {emergency!r}",
            doc,
            "spec",
            "emergencyApprovals",
        )
    return SignerRules(
        tuple(_parse_signer(doc, i, e) for i, e in enumerate(entries)),
        tuple(_parse_threshold(doc, i, e) for i, e in enumerate(thresholds_raw)),
        emergency,
        _parse_heartbeat(doc, spec.get("heartbeat")),
    )


_SPEC_FIELDS = frozenset({"signers", "thresholds", "emergencyApprovals", "heartbeat"})


def _approval_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_APPROVALS


def _parse_threshold(doc: Any, index: int, entry: Any) -> Threshold:
    where: tuple[str | int, ...] = ("spec", "thresholds", index)
    if not isinstance(entry, dict) or set(entry) != {"paths", "approvals"}:
        raise _fail(
            "each threshold must be a mapping with exactly paths (a list of patterns) and "
            "approvals (how many distinct principals must sign)",
            doc,
            *where,
        )
    approvals = entry["approvals"]
    if not _approval_count(approvals):
        raise _fail(
            f"approvals must be a whole number from 1 to {MAX_APPROVALS}, found {approvals!r}",
            doc,
            *where,
            "approvals",
        )
    paths_raw = entry["paths"]
    if not isinstance(paths_raw, list) or not paths_raw:
        raise _fail("paths must be a non-empty list of path patterns", doc, *where, "paths")
    for number, pattern in enumerate(paths_raw):
        if not isinstance(pattern, str):
            raise _fail("each path pattern must be a string", doc, *where, "paths", number)
        try:
            compile_pattern(pattern)
        except ValueError as exc:
            raise _fail(str(exc), doc, *where, "paths", number) from None
    return Threshold(tuple(paths_raw), approvals, doc.mark(*where))


def _parse_heartbeat(doc: Any, entry: Any) -> tuple[PublicKey, ...]:
    if entry is None:
        return ()
    if not isinstance(entry, dict) or set(entry) != {"keys"} or not isinstance(entry["keys"], list):
        raise _fail(
            "spec.heartbeat must be a mapping with keys: a list of SSH public keys that may "
            "sign the heartbeat tag",
            doc,
            "spec",
            "heartbeat",
        )
    keys: list[PublicKey] = []
    for number, line in enumerate(entry["keys"]):
        if not isinstance(line, str):
            raise _fail("each heartbeat key must be a string", doc, "spec", "heartbeat", "keys")
        try:
            key = parse_public_key_line(line, what="heartbeat key")
            check_supported(key)
        except VerificationError as exc:
            raise _fail(exc.message, doc, "spec", "heartbeat", "keys", number) from None
        keys.append(key)
    return tuple(keys)
