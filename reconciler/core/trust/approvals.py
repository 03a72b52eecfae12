"""Thresholds and root rotation: which verified commits still wait for approvals.

Pure, like `verify`, and run by it on the final verdicts of a range. A commit
that a threshold of its parent's ``policies/signers.yaml`` governs (or an
emergency under ``spec.emergencyApprovals``) needs k *distinct* principals: its
own signer and the signers of accepted commits on top of it in the range (an
approval is an ordinary signed commit, e.g. an empty "Approve <sha>"). A
principal counts once however many commits or keys it signs with, a key once
however many principals list it, and only keys valid at the node's clock count
(a retired key vouched for by others approves nothing). A change to
``policies/**`` and an emergency count root signers only; another path counts
root signers and delegated signers whose scope covers the paths the threshold
governs.

A commit on the candidate's first-parent line that changes
``policies/root-signers`` is a rotation: it is approved along that line, and the
commit that completes its approval is where the new root takes over (its
signature is the last one judged by the old root). Approvals in a side branch do
not count for a rotation: the point where the root changes must be one commit.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from reconciler.core.errors import VerificationError
from reconciler.core.trust.allowed_signers import TrustRoot
from reconciler.core.trust.rules import (
    EMPTY_RULES,
    MAX_APPROVALS,
    ROOT_SIGNERS_PATH,
    Signer,
    SignerRules,
    is_policy_path,
    parse_signers,
)

if TYPE_CHECKING:
    from reconciler.core.trust.verify import (
        CommitRecord,
        ParentSigners,
        ParsedCommit,
        Pending,
        Rotation,
        Verdict,
    )

__all__ = ["Approvals", "approvals"]


@dataclass(frozen=True)
class _Need:
    count: int
    what: str
    paths: tuple[str, ...]
    root_only: bool
    others: tuple[str, ...]


@dataclass(frozen=True)
class Approvals:
    pending: Mapping[str, Pending]
    rotation: Rotation | None


def _rules(source: ParentSigners) -> SignerRules:
    """A parent's rules for thresholds; an invalid file asks for nothing more (it could only
    have become invalid through a change that its own threshold governed)."""
    if source is None or not isinstance(source, bytes):
        return EMPTY_RULES
    try:
        return parse_signers(source)
    except VerificationError:
        return EMPTY_RULES


def _listing(paths: Sequence[str], limit: int = 2) -> str:
    more = len(paths) - limit
    return ", ".join(paths[:limit]) + (f" and {more} more" if more > 0 else "")


def _need(record: CommitRecord, verdict: Verdict, trust: TrustRoot) -> _Need | None:
    count, delegated_rules = 1, EMPTY_RULES
    paths: tuple[str, ...] = ()
    emergency = 1
    for index, source in enumerate(record.parent_signers):
        rules = _rules(source)
        needed, matched, _ = rules.required(record.changes[index])
        if needed > count:
            count, paths, delegated_rules = needed, matched, rules
        if verdict.emergency:
            emergency = max(emergency, rules.emergency_approvals)
    roots = tuple(dict.fromkeys(entry.principal for entry in trust))
    if emergency > 1 and emergency >= count:
        return _Need(emergency, "declares an emergency", (), True, roots)
    if count <= 1:
        return None
    root_only = any(is_policy_path(path) for path in paths)
    others = roots
    if not root_only:
        others += tuple(s.name for s in delegated_rules.signers if s.scope_problem(paths) is None)
    return _Need(count, f"changes {_listing(paths)}", paths, root_only, others)


class _Counter:
    """Distinct principals with distinct keys, in the order they are offered."""

    def __init__(self) -> None:
        self.principals: list[str] = []
        self.fingerprints: list[str] = []
        self.keys: set[str] = set()

    def offer(self, verdict: Verdict) -> None:
        if verdict.principal is not None and verdict.fingerprint is not None:
            self.offer_identity(verdict.principal, verdict.fingerprint)

    def offer_identity(self, name: str, fp: str) -> None:
        if name in self.principals or fp in self.keys:
            return
        self.principals.append(name)
        self.fingerprints.append(fp)
        self.keys.add(fp)


def _roots_at_or_above(
    order: Sequence[str],
    children: Mapping[str, Sequence[str]],
    final: Mapping[str, Verdict],
    valid_now: Mapping[str, Signer | None],
) -> dict[str, tuple[tuple[str, str], ...]]:
    """For each commit, distinct root signers (principal, key) valid now among it and the
    accepted commits on top of it, at most `MAX_APPROVALS`: one pass, newest first, so a
    long range of thresholded commits costs linear work rather than a search each."""
    found: dict[str, tuple[tuple[str, str], ...]] = {}
    for sha in reversed(order):
        counter = _Counter()
        verdict = final[sha]
        if verdict.ok and sha in valid_now and valid_now[sha] is None:
            counter.offer(verdict)
        for child in children.get(sha, ()):
            for name, fp in found.get(child, ()):
                if len(counter.principals) >= MAX_APPROVALS:
                    break
                counter.offer_identity(name, fp)
        found[sha] = tuple(zip(counter.principals, counter.fingerprints, strict=True))
    return found


def _eligible(
    sha: str,
    final: Mapping[str, Verdict],
    valid_now: Mapping[str, Signer | None],
    need: _Need,
) -> bool:
    verdict = final.get(sha)
    if verdict is None or not verdict.ok or sha not in valid_now:
        return False
    signer = valid_now[sha]
    if signer is None:
        return True
    return not need.root_only and signer.scope_problem(need.paths) is None


def approvals(
    order: Sequence[str],
    final: Mapping[str, Verdict],
    records: Mapping[str, CommitRecord],
    parsed: Mapping[str, ParsedCommit],
    candidate: str,
    *,
    trust: TrustRoot,
    valid_now: Mapping[str, Signer | None],
) -> Approvals:
    """The pending commits of a verified range and the first rotation that took effect.

    ``valid_now`` maps each commit signed by a key valid at the node's clock to its
    delegated signer (None for a root signer), as `verify` found them.
    """
    from reconciler.core.trust.verify import Pending, Rotation

    children: dict[str, list[str]] = {}
    for sha in order:
        for parent in parsed[sha].parents:
            children.setdefault(parent, []).append(sha)
    line: list[str] = []
    step: str | None = candidate
    while step is not None and step in records:
        line.append(step)
        parents = parsed[step].parents
        step = parents[0] if parents else None
    line.reverse()
    position = {sha: index for index, sha in enumerate(line)}

    roots_at = _roots_at_or_above(order, children, final, valid_now)
    pending: dict[str, Pending] = {}
    rotation: Rotation | None = None
    for sha in order:
        verdict = final[sha]
        if not verdict.ok:
            continue
        record = records[sha]
        rotates = sha in position and ROOT_SIGNERS_PATH in record.changes[0]
        need = _need(record, verdict, trust)
        if rotates and need is None:
            roots = tuple(dict.fromkeys(entry.principal for entry in trust))
            need = _Need(1, f"changes {ROOT_SIGNERS_PATH}", (ROOT_SIGNERS_PATH,), True, roots)
        if need is None:
            continue
        counter = _Counter()
        if rotates:
            effective = None
            for above in line[position[sha] :]:
                if _eligible(above, final, valid_now, need):
                    counter.offer(final[above])
                if len(counter.principals) >= need.count:
                    effective = above
                    break
            if effective is not None:
                if rotation is None:
                    assert isinstance(record.next_root, bytes)
                    rotation = Rotation(sha, effective, record.next_root, tuple(counter.principals))
                continue
        elif need.root_only:
            for name, fp in roots_at.get(sha, ()):
                counter.offer_identity(name, fp)
            if len(counter.principals) >= need.count:
                continue
        else:
            seen = {sha}
            queue = [sha]
            while queue and len(counter.principals) < need.count:
                current = queue.pop(0)
                if _eligible(current, final, valid_now, need):
                    counter.offer(final[current])
                for child in children.get(current, ()):
                    if child not in seen:
                        seen.add(child)
                        queue.append(child)
            if len(counter.principals) >= need.count:
                continue
        others = tuple(name for name in need.others if name not in counter.principals)
        what = need.what + (" (a trust-root rotation)" if rotates else "")
        pending[sha] = Pending(sha, what, need.count, tuple(counter.principals), others)
    return Approvals(pending, rotation)
