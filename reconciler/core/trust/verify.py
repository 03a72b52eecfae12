"""The verification core: commit objects, the trust root and a clock reading in, verdicts out.

Like python-tuf's ``TrustedMetadataSet``, this module does no I/O: the git layer
(`reconciler.core.trust.gitsource`) hands it the raw commit objects of the range
(last applied, candidate], each with the paths it changes relative to each
parent and the ``policies/signers.yaml`` bytes of each parent's tree. The core
re-derives everything that matters for trust from the raw bytes itself — the
object id (the hash is recomputed), the parents, the committer time, the
message, the signed payload and the signature — so a mistake in the git layer
cannot make it trust metadata that the signature does not cover.

Checks, each refusing with the commit, the signer, the path and the rule:

1. every commit in the range is signed (an unsigned commit anywhere is
   arbitrary content: TUF "arbitrary software");
2. the signature is a valid SSHSIG for namespace ``git`` over the commit
   exactly as stored (content changed after signing is refused);
3. the key is a root signer valid at the commit's committer time
   (``valid-after``/``valid-before``: key expiry and revocation), or a
   delegated signer in the ``signers.yaml`` of *each parent*, changing only
   paths its patterns allow relative to *that* parent — merges included, so a
   merge cannot mix in content its signer could not have committed
   (mix-and-match); ``policies/**`` needs a root signer;
4. a retired key cannot start new history: a commit signed by a root key
   whose ``valid-before`` has passed at the node's clock counts only if a
   commit on top of it, in the same range, is signed by a signer valid now
   whose scope covers every path it changes (a late USB bundle, signed while
   its key was valid, gets in once a current signer vouches for it; a stolen
   retired key that backdates a commit into its old validity gets nothing);
5. committer times never go backwards along first parents, nor before the
   last applied commit for a commit that descends from it; none lies beyond
   ``max_skew`` of the node's clock. Commits a merge brings in from a branch
   started before the last applied commit are judged by their signatures,
   scopes and the merge's signer, not by their dates (an ordinary merge);
6. the candidate descends from the last applied commit: no rollback, no
   unrelated history (TUF "rollback" and a force-push by a compromised server);
7. nothing built on a refused commit is accepted — the refusal names the
   refused ancestor and the way back (reset the branch to what the sites run,
   commit again) — and at most ``max_commits`` commits are examined (bounded
   work per run).

A verdict also says whether a commit carries an ``Outpost-Emergency:`` trailer
*and* is signed by a root signer — the only emergency the schedule honours.

On top of the verdicts (`reconciler.core.trust.approvals`):

8. a change that ``spec.thresholds`` of its parent's ``signers.yaml`` governs, or
   an emergency under ``spec.emergencyApprovals``, is *pending* — not refused —
   until signed commits by that many distinct principals allowed to make it (its
   own signer and commits on top of it, keys valid now) are in the range; the
   result names the newest commit on the branch that no pending commit is under
   (`RangeResult.applicable`), which a node may apply meanwhile;
9. a commit that changes ``policies/root-signers`` rotates the trust root: once
   root signers of the *current* root, to the threshold, have signed it and
   commits on top of it along the branch, every commit after the one that
   completed the approval is verified against the new root (a chain a node
   follows from its enrolled root, and ``outpost verify --trust OLD`` too).
"""

from __future__ import annotations

import hashlib
import re
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Literal

from reconciler.core.errors import OutpostError, VerificationError
from reconciler.core.trust.allowed_signers import AllowedSigner, TrustRoot, parse_allowed_signers
from reconciler.core.trust.rules import (
    EMPTY_RULES,
    ROOT_SIGNERS_PATH,
    SIGNERS_PATH,
    Signer,
    SignerRules,
    parse_signers,
)
from reconciler.core.trust.sshsig import (
    GIT_NAMESPACE,
    MAX_ARMORED_BYTES,
    SshSignature,
    check_namespace,
    parse_signature,
    verify_signature,
)

__all__ = [
    "DEFAULT_MAX_COMMITS",
    "DEFAULT_MAX_SKEW",
    "EMERGENCY_TRAILER",
    "REFUSED",
    "VERIFIED",
    "CommitObject",
    "CommitRecord",
    "ParsedCommit",
    "Pending",
    "RangeResult",
    "Rotation",
    "SignersUnreadable",
    "Verdict",
    "emergency_reason",
    "parse_commit",
    "short",
    "verify_range",
]

DEFAULT_MAX_COMMITS = 5_000
DEFAULT_MAX_SKEW = timedelta(minutes=5)
EMERGENCY_TRAILER = "Outpost-Emergency"
MAX_COMMIT_BYTES = 1024 * 1024
SHORT = 7
VERIFIED: Literal["verified"] = "verified"
REFUSED: Literal["refused"] = "refused"

_EMERGENCY = re.compile(r"^outpost-emergency[ \t]*:[ \t]*(\S.*?)\s*$", re.IGNORECASE)
_HEX = re.compile(rb"^[0-9a-f]{40}([0-9a-f]{24})?$")


def short(sha: str) -> str:
    """How a commit is named in messages."""
    return sha[:SHORT]


def _when(timestamp: int) -> str:
    try:
        return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    except (OverflowError, OSError, ValueError):
        return f"@{timestamp}"


@dataclass(frozen=True)
class CommitObject:
    """A commit object exactly as stored: its id and raw bytes (``git cat-file commit``)."""

    sha: str
    raw: bytes = field(repr=False)


@dataclass(frozen=True)
class SignersUnreadable:
    """A parent's ``policies/signers.yaml`` exists but is not a regular file (symlink, tree...)."""

    reason: str


ParentSigners = bytes | SignersUnreadable | None


@dataclass(frozen=True)
class CommitRecord(CommitObject):
    """A commit of the range with what the git layer computed from its trees.

    ``changes[i]`` are the paths that differ between parent ``i``'s tree and
    this commit's (for a commit without parents: every path it holds);
    ``parent_signers[i]`` is parent ``i``'s ``policies/signers.yaml`` (None if
    absent). Both follow the order of the ``parent`` lines in ``raw``.
    """

    changes: tuple[tuple[str, ...], ...] = ()
    parent_signers: tuple[ParentSigners, ...] = ()
    next_root: ParentSigners = None
    """This commit's own ``policies/root-signers`` (read when it changes it)."""


@dataclass(frozen=True)
class ParsedCommit:
    """What the core reads out of a commit object's bytes."""

    sha: str
    tree: str
    parents: tuple[str, ...]
    committer_time: int
    payload: bytes = field(repr=False)
    signature: bytes | None = field(repr=False)
    message: str


def _object_id(raw: bytes, algorithm: str) -> str:
    hasher = hashlib.new(algorithm)
    hasher.update(b"commit %d\0" % len(raw))
    hasher.update(raw)
    return hasher.hexdigest()


def parse_commit(obj: CommitObject) -> ParsedCommit:
    """Split a commit object into signed payload, signature and the fields trust needs.

    The payload is what git itself hands ``ssh-keygen``: the object without its
    ``gpgsig`` header (and without any other ``gpgsig*`` header, as git does).
    Two signature headers, or a malformed committer line, are refused rather
    than guessed at.
    """
    raw = obj.raw
    if len(raw) > MAX_COMMIT_BYTES:
        raise VerificationError(
            f"the commit object is {len(raw):,} bytes; the limit is {MAX_COMMIT_BYTES:,}"
        )
    algorithm = "sha1" if len(obj.sha) == 40 else "sha256"
    if len(obj.sha) not in (40, 64) or _object_id(raw, algorithm) != obj.sha.lower():
        raise VerificationError(
            "the commit object does not hash to its id (corrupt or tampered object store)"
        )
    signature_header = b"gpgsig " if algorithm == "sha1" else b"gpgsig-sha256 "
    end = raw.find(b"\n\n")
    header_bytes, message = (raw[:end], raw[end + 2 :]) if end >= 0 else (raw, b"")
    payload: list[bytes] = []
    signatures: list[list[bytes]] = []
    tree = b""
    parents: list[str] = []
    committers: list[bytes] = []
    current: list[bytes] | None = None
    skipping = False
    # Lines end at "\n" only, as in git (a "\r" inside a header is just a byte).
    for line in header_bytes.split(b"\n"):
        if line[:1] == b" ":
            if current is not None:
                current.append(line[1:])
            elif not skipping:
                payload.append(line)
            continue
        current = None
        skipping = False
        if line.startswith(signature_header):
            current = [line[len(signature_header) :]]
            signatures.append(current)
            continue
        if line.startswith(b"gpgsig"):
            skipping = True
            continue
        payload.append(line)
        name, _, value = line.partition(b" ")
        if name == b"parent":
            if not _HEX.match(value):
                raise VerificationError(f"the commit has a malformed parent line {value[:80]!r}")
            parents.append(value.decode("ascii"))
        elif name == b"committer":
            committers.append(value)
        elif name == b"tree":
            tree = value
    if end >= 0:
        payload.append(b"\n" + message)
    if len(signatures) > 1:
        raise VerificationError(
            f"the commit carries {len(signatures)} {signature_header.decode().strip()} headers; "
            "expected at most one"
        )
    if len(committers) != 1:
        raise VerificationError(
            f"the commit has {len(committers)} committer lines; expected exactly one"
        )
    if not _HEX.match(tree):
        raise VerificationError("the commit has no valid tree line")
    return ParsedCommit(
        sha=obj.sha,
        tree=tree.decode("ascii"),
        parents=tuple(parents),
        committer_time=_committer_time(committers[0]),
        payload=b"\n".join(payload),
        signature=b"\n".join(signatures[0]) + b"\n" if signatures else None,
        message=message.decode("utf-8", "replace"),
    )


def _committer_time(value: bytes) -> int:
    """``Name <email> 1700000000 +0100`` → 1700000000 (the zone does not change the instant)."""
    _, bracket, tail = value.rpartition(b">")
    fields = tail.split()
    if not bracket or len(fields) != 2 or not fields[0].isdigit() or len(fields[0]) > 12:
        raise VerificationError(
            f"the commit's committer line is malformed: {value[:120].decode('utf-8', 'replace')!r}"
        )
    return int(fields[0])


def emergency_reason(message: str) -> str | None:
    """The reason of an ``Outpost-Emergency: <reason>`` trailer, or None.

    Trailers live in the message's last paragraph, and never in the subject
    (git's own rule), so a subject that merely mentions the word does not count.
    """
    paragraphs = [p for p in re.split(r"\n[ \t]*\n", message.strip()) if p.strip()]
    if len(paragraphs) < 2:
        return None
    for line in paragraphs[-1].splitlines():
        match = _EMERGENCY.match(line)
        if match:
            return match.group(1)
    return None


@dataclass(frozen=True)
class Verdict:
    """One commit's verdict; ``reason`` explains it (without the ``commit <sha>:`` prefix)."""

    sha: str
    verdict: Literal["verified", "refused"]
    reason: str
    principal: str | None = None
    fingerprint: str | None = None
    root: bool = False
    committer_time: int | None = None
    emergency: bool = False
    emergency_reason: str = ""

    @property
    def ok(self) -> bool:
        return self.verdict == VERIFIED

    @property
    def short(self) -> str:
        return short(self.sha)

    @property
    def message(self) -> str:
        return f"commit {self.short}: {self.reason}"


@dataclass(frozen=True)
class Pending:
    """A verified commit that waits for approvals by more distinct principals."""

    sha: str
    what: str
    needed: int
    approvers: tuple[str, ...]
    others: tuple[str, ...]
    """Principals who may still approve it."""

    @property
    def short(self) -> str:
        return short(self.sha)

    @property
    def missing(self) -> int:
        return self.needed - len(self.approvers)

    @property
    def message(self) -> str:
        have = ", ".join(self.approvers) or "nobody"
        who = (
            f" from {', '.join(self.others)}"
            if self.others
            else " (no other principal may approve it: too few are allowed to)"
        )
        return (
            f"commit {self.short} {self.what}: it needs {self.needed} distinct principals, "
            f"has {len(self.approvers)} ({have}); waiting for {self.missing} more{who} — "
            f"an approval is a signed commit on top of it, e.g. "
            f"git commit --allow-empty -S -m 'Approve {self.short}'"
        )


@dataclass(frozen=True)
class Rotation:
    """The trust root moved: ``commit`` changed ``policies/root-signers``, approved by
    ``approvers`` of the root before it; commits after ``effective`` use ``root``."""

    commit: str
    effective: str
    root: bytes = field(repr=False)
    approvers: tuple[str, ...] = ()


@dataclass(frozen=True)
class RangeResult:
    """The verdicts for (last applied, candidate], oldest first, and any range-level refusal.

    ``pending`` lists commits that wait for approvals; ``applicable`` is then the newest
    commit on the branch that no pending commit is under (None: nothing new), else the
    candidate. ``rotations`` are the trust-root changes that took effect in the range.
    """

    candidate: str
    last_applied: str | None
    verdicts: tuple[Verdict, ...]
    problem: str | None = None
    pending: tuple[Pending, ...] = ()
    applicable: str | None = None
    rotations: tuple[Rotation, ...] = ()

    @property
    def ok(self) -> bool:
        """Nothing refused (pending commits are not refusals)."""
        return self.problem is None and all(v.ok for v in self.verdicts)

    @property
    def complete(self) -> bool:
        """Nothing refused and nothing pending: the candidate itself may be applied."""
        return self.ok and not self.pending

    @property
    def error(self) -> VerificationError | None:
        """The first reason to refuse the candidate, as the error the agent raises."""
        if self.problem is not None:
            return VerificationError(self.problem)
        for verdict in self.verdicts:
            if not verdict.ok:
                if verdict.sha == self.candidate:
                    return VerificationError(verdict.message)
                back = (
                    f"reset the branch to {short(self.last_applied)}, what the sites run,"
                    if self.last_applied is not None
                    else "reset the branch to the commit the sites run"
                )
                return VerificationError(
                    f"{verdict.message} — the candidate {short(self.candidate)} is built on it "
                    f"and refused with it: {back} and commit the work again"
                )
        return None

    def raise_for_refusal(self) -> None:
        error = self.error
        if error is not None:
            raise error

    def verdict_for(self, sha: str) -> Verdict | None:
        return next((v for v in self.verdicts if v.sha == sha), None)


class _Refusal(Exception):
    """Internal: carries a refusal reason plus what was learnt about the signer so far."""

    def __init__(
        self, reason: str, principal: str | None = None, fingerprint: str | None = None
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.principal = principal
        self.fingerprint = fingerprint


@dataclass(frozen=True)
class _Retired:
    """A commit signed by a root key that was valid then but is retired at the node's clock."""

    principal: str
    retired_at: int


@dataclass
class _Context:
    trust: TrustRoot
    now: int
    max_skew: int
    namespace: str
    floor: int | None
    floor_sha: str | None
    parsed: dict[str, ParsedCommit] = field(default_factory=dict)
    descends: set[str] = field(default_factory=set)
    """Commits of the range that descend from the last applied commit."""
    retired: dict[str, _Retired] = field(default_factory=dict)
    vouchers: dict[str, Signer | None] = field(default_factory=dict)
    """For each commit verified on its own merits and signed by a key valid now: the
    delegated signer (None for a root signer, whose scope is everything)."""


def _rules(source: ParentSigners, parent: str) -> SignerRules:
    if source is None:
        return EMPTY_RULES
    if isinstance(source, SignersUnreadable):
        raise VerificationError(f"{SIGNERS_PATH} of parent {short(parent)} {source.reason}")
    try:
        return parse_signers(source)
    except VerificationError as exc:
        raise VerificationError(
            f"{SIGNERS_PATH} of parent {short(parent)} is invalid ({exc}); until a root "
            "signer fixes it, only root signers can sign"
        ) from None


def _root_identity(
    lines: Iterable[AllowedSigner], namespace: str, when: int
) -> tuple[AllowedSigner | None, str | None]:
    """The first trust-root line that allows this signature, else the first reason none does."""
    first_problem: str | None = None
    for line in lines:
        problem = line.namespace_problem(namespace) or line.validity_problem(when)
        if problem is None:
            return line, None
        first_problem = first_problem or problem
    return None, first_problem


def _retired_at(lines: Iterable[AllowedSigner], namespace: str, now: int) -> int | None:
    """When the key retired, if no trust-root line allows it at the node's clock; else None."""
    ends: list[int] = []
    for line in lines:
        if line.namespace_problem(namespace) is not None:
            continue
        if line.validity_problem(now) is None:
            return None
        if line.valid_before is not None and line.valid_before < now:
            ends.append(line.valid_before)
    return max(ends) if ends else None


def _judge(record: CommitRecord, commit: ParsedCommit, ctx: _Context) -> Verdict:
    """Verify one commit on its own merits (the parent-refused rule is applied by the caller)."""
    parents = commit.parents
    expected = max(1, len(parents))
    if len(record.changes) != expected or len(record.parent_signers) != len(parents):
        raise _Refusal(
            f"internal error: the git layer gave {len(record.changes)} change lists and "
            f"{len(record.parent_signers)} signers files for {len(parents)} parents"
        )
    when = commit.committer_time
    if when > ctx.now + ctx.max_skew:
        raise _Refusal(
            f"committer time {_when(when)} lies in the future (node clock {_when(ctx.now)}, "
            f"allowed skew {ctx.max_skew}s)"
        )
    if ctx.floor is not None and commit.sha in ctx.descends and when < ctx.floor:
        raise _Refusal(
            f"committer time {_when(when)} is earlier than that of the last applied commit "
            f"{short(ctx.floor_sha or '')} ({_when(ctx.floor)}); committer times may not go "
            "backwards (a backdated commit could slip inside a retired key's valid-before)"
        )
    # Along first parents only: a merge may bring in a branch older than its first parent.
    before = ctx.parsed.get(parents[0]) if parents else None
    if before is not None and when < before.committer_time:
        raise _Refusal(
            f"committer time {_when(when)} is earlier than that of its parent "
            f"{short(parents[0])} ({_when(before.committer_time)}); committer times may not go "
            "backwards (a backdated commit could slip inside a retired key's valid-before)"
        )
    if commit.signature is None:
        raise _Refusal("not signed; every commit must carry an SSH signature (git commit -S)")
    if len(commit.signature) > MAX_ARMORED_BYTES:
        raise _Refusal(
            f"signature is {len(commit.signature):,} bytes; the limit is "
            f"{MAX_ARMORED_BYTES:,} bytes (refused unread)"
        )
    try:
        signature: SshSignature = parse_signature(commit.signature)
    except VerificationError as exc:
        raise _Refusal(exc.message) from None
    key = signature.public_key
    fp = key.fingerprint
    try:
        check_namespace(signature, ctx.namespace)
    except VerificationError as exc:
        raise _Refusal(exc.message, fingerprint=fp) from None

    root_line, root_problem = _root_identity(ctx.trust.find(key), ctx.namespace, when)
    if root_line is not None:
        _check_crypto(signature, commit, ctx, root_line.principal, fp)
        problem = next_root_problem(record)
        if problem is not None:
            raise _Refusal(problem, root_line.principal, fp)
        retired = _retired_at(ctx.trust.find(key), ctx.namespace, ctx.now)
        if retired is None:
            ctx.vouchers[commit.sha] = None
        else:
            ctx.retired[commit.sha] = _Retired(root_line.principal, retired)
        return _verified(
            commit,
            root_line.principal,
            fp,
            root=True,
            reason=f"signed by root signer {root_line.principal}",
        )

    # Not (or no longer) a root signer: judge as a delegated signer of each parent.
    per_parent: list[SignerRules | None] = []
    invalid: str | None = None
    for index, parent in enumerate(parents):
        try:
            per_parent.append(_rules(record.parent_signers[index], parent))
        except VerificationError as exc:
            per_parent.append(None)
            invalid = invalid or exc.message
    found = [s for rules in per_parent if rules is not None for s in [rules.find(key)] if s]
    if not found:
        if root_problem is not None:
            raise _Refusal(root_problem, ctx.trust.find(key)[0].principal, fp)
        if invalid is not None:
            raise _Refusal(f"signed by key {fp}, not a root signer; {invalid}", fingerprint=fp)
        if not parents:
            where = "a commit without parents can be signed by root signers only"
        else:
            listed = f"parent {short(parents[0])}" if len(parents) == 1 else "any parent"
            where = f"not in the trust root {ctx.trust.source} nor in {SIGNERS_PATH} of {listed}"
        raise _Refusal(f"signed by an unknown key {fp} ({key.key_type}): {where}", fingerprint=fp)
    principal = found[0].name
    _check_crypto(signature, commit, ctx, principal, fp)
    if invalid is not None:
        raise _Refusal(f"signed by {principal}; {invalid}", principal, fp)
    for index, parent in enumerate(parents):
        rules = per_parent[index]
        signer = rules.find(key) if rules is not None else None
        if signer is None:
            raise _Refusal(
                f"signed by {principal}, which {SIGNERS_PATH} of parent {short(parent)} "
                "does not list",
                principal,
                fp,
            )
        problem = signer.scope_problem(record.changes[index])
        if problem is not None:
            relative = f" (relative to parent {short(parent)})" if len(parents) > 1 else ""
            raise _Refusal(problem + relative, principal, fp)
    reason = f"signed by {principal} within {', '.join(found[0].paths)}"
    ctx.vouchers[commit.sha] = found[0]
    return _verified(commit, principal, fp, root=False, reason=reason)


def _check_crypto(
    signature: SshSignature, commit: ParsedCommit, ctx: _Context, principal: str, fp: str
) -> None:
    try:
        verify_signature(signature, commit.payload, namespace=ctx.namespace)
    except VerificationError as exc:
        detail = exc.message
        if detail.startswith("the signature does not match"):
            detail = (
                f"the signature by {principal} ({fp}) does not match the commit's content "
                "(changed after signing?)"
            )
        raise _Refusal(detail, principal, fp) from None


def _verified(commit: ParsedCommit, principal: str, fp: str, *, root: bool, reason: str) -> Verdict:
    trailer = emergency_reason(commit.message)
    emergency = trailer is not None and root
    if trailer is not None and not root:
        reason += (
            f"; its {EMERGENCY_TRAILER} trailer is ignored (only a root signer may declare "
            "an emergency)"
        )
    elif emergency:
        reason += f"; emergency: {trailer}"
    return Verdict(
        sha=commit.sha,
        verdict=VERIFIED,
        reason=reason,
        principal=principal,
        fingerprint=fp,
        root=root,
        committer_time=commit.committer_time,
        emergency=emergency,
        emergency_reason=(trailer or "") if emergency else "",
    )


def _topological(
    records: dict[str, CommitRecord], parsed: dict[str, ParsedCommit], candidate: str
) -> list[str]:
    """Commits reachable from ``candidate`` inside the range, parents before children."""
    order: list[str] = []
    state: dict[str, int] = {}
    stack: list[tuple[str, int]] = [(candidate, 0)]
    while stack:
        sha, index = stack.pop()
        parents = parsed[sha].parents if sha in parsed else ()
        if index == 0:
            if state.get(sha):
                continue
            state[sha] = 1
        if index < len(parents):
            stack.append((sha, index + 1))
            parent = parents[index]
            if parent in records and not state.get(parent):
                stack.append((parent, 0))
            continue
        state[sha] = 2
        order.append(sha)
    return order


def _changed_paths(record: CommitRecord) -> tuple[str, ...]:
    return tuple(sorted({path for per_parent in record.changes for path in per_parent}))


def _listing(paths: Sequence[str], limit: int = 3) -> str:
    more = len(paths) - limit
    return ", ".join(paths[:limit]) + (f" and {more} more" if more > 0 else "")


def _root_vouchers_below(
    order: Sequence[str],
    children: dict[str, list[str]],
    ok: Callable[[str], bool],
    ctx: _Context,
) -> dict[str, str]:
    """For each commit, an accepted commit on top of it signed by a root key valid now.

    One pass over the range, newest first: a root signer's scope is everything, so this
    answers most retired-key commits without a search of their own.
    """
    below: dict[str, str] = {}
    for sha in reversed(order):
        for child in children.get(sha, ()):
            if child in ctx.vouchers and ctx.vouchers[child] is None and ok(child):
                below[sha] = child
                break
            if child in below:
                below[sha] = below[child]
                break
    return below


def _voucher_for(
    retired: str,
    children: dict[str, list[str]],
    ok: Callable[[str], bool],
    records: dict[str, CommitRecord],
    ctx: _Context,
    root_below: dict[str, str],
) -> str | None:
    """An accepted commit on top of ``retired`` signed by a key valid now whose scope covers
    every path ``retired`` changes; None if there is none."""
    if retired in root_below:
        return root_below[retired]
    if all(signer is None for signer in ctx.vouchers.values()):
        return None  # no delegated signer in the range: no other voucher to look for
    paths = _changed_paths(records[retired])
    seen: set[str] = set()
    queue = deque(children.get(retired, ()))
    while queue:
        sha = queue.popleft()
        if sha in seen:
            continue
        seen.add(sha)
        if sha in ctx.vouchers and ok(sha):
            signer = ctx.vouchers[sha]
            if signer is None or signer.scope_problem(paths) is None:
                return sha
        queue.extend(children.get(sha, ()))
    return None


def _settle(
    order: Sequence[str],
    own: dict[str, Verdict],
    records: dict[str, CommitRecord],
    ctx: _Context,
    last_sha: str | None,
) -> tuple[Verdict, ...]:
    """Final verdicts: retired keys need a voucher on top; nothing stands on a refusal.

    A retired-key commit counts when an *accepted* commit on top of it vouches for it,
    and that commit's acceptance may depend on the retired one: start from every voucher
    that is good on its own merits and drop, until nothing changes, those whose voucher
    ends up refused (the set only shrinks, so this ends).
    """
    children: dict[str, list[str]] = {}
    for sha in order:
        for parent in ctx.parsed[sha].parents:
            children.setdefault(parent, []).append(sha)
    vouched: dict[str, str] = {}
    if ctx.retired:

        def good(sha: str) -> bool:
            return own[sha].ok

        root_below = _root_vouchers_below(order, children, good, ctx)
        for sha in ctx.retired:
            if own[sha].ok:
                voucher = _voucher_for(sha, children, good, records, ctx, root_below)
                if voucher is not None:
                    vouched[sha] = voucher
    way_back = (
        f"reset the branch to {short(last_sha)}, what the sites run, and commit the work again"
        if last_sha is not None
        else "reset the branch to the commit the sites run and commit the work again"
    )
    while True:
        final: dict[str, Verdict] = {}
        cause: dict[str, str] = {}
        for sha in order:
            verdict = own[sha]
            retired = ctx.retired.get(sha)
            if verdict.ok and retired is not None:
                verdict = _retired_verdict(verdict, retired, vouched.get(sha), records[sha], ctx)
            bad = next((p for p in ctx.parsed[sha].parents if p in cause), None)
            if verdict.ok and bad is not None:
                origin = cause[bad]
                verdict = replace(
                    verdict,
                    verdict=REFUSED,
                    reason=(
                        f"built on {short(origin)}, which was refused ({final[origin].reason}); "
                        f"nothing built on a refused commit is accepted: {way_back}"
                    ),
                    emergency=False,
                    emergency_reason="",
                )
                cause[sha] = origin
            elif not verdict.ok:
                cause[sha] = sha
            final[sha] = verdict
        accepted = {sha for sha, verdict in final.items() if verdict.ok}
        root_below = _root_vouchers_below(order, children, accepted.__contains__, ctx)
        still: dict[str, str] = {}
        for sha in vouched:
            voucher = _voucher_for(sha, children, accepted.__contains__, records, ctx, root_below)
            if voucher is not None:
                still[sha] = voucher
        if still == vouched:
            return tuple(final[sha] for sha in order)
        vouched = still


def _retired_verdict(
    verdict: Verdict,
    retired: _Retired,
    voucher: str | None,
    record: CommitRecord,
    ctx: _Context,
) -> Verdict:
    since = f"retired since {_when(retired.retired_at)}"
    if voucher is not None:
        who = ctx.vouchers[voucher]
        name = "a root signer" if who is None else who.name
        return replace(
            verdict,
            reason=f"{verdict.reason} (key {since}; vouched for by {name} in {short(voucher)})",
        )
    paths = _changed_paths(record)
    return replace(
        verdict,
        verdict=REFUSED,
        reason=(
            f"signed by {retired.principal} with key {verdict.fingerprint}, valid at its "
            f"committer time {_when(verdict.committer_time or 0)} but {since} (node clock "
            f"{_when(ctx.now)}): a retired key cannot start new history; it counts only "
            "under a commit on top of it signed by a signer valid now whose scope covers "
            f"{_listing(paths) or 'its changes'}"
        ),
        root=False,
        emergency=False,
        emergency_reason="",
    )


def changes_root(record: CommitRecord) -> bool:
    """Does this commit change ``policies/root-signers`` relative to its first parent?"""
    return bool(record.changes) and ROOT_SIGNERS_PATH in record.changes[0]


def next_root_problem(record: CommitRecord) -> str | None:
    """Why the next trust root this commit writes cannot be one, or None."""
    if not changes_root(record):
        return None
    content = record.next_root
    if content is None:
        return (
            f"it deletes {ROOT_SIGNERS_PATH}; the next trust root can be replaced, never "
            "removed (the nodes would keep the root they hold)"
        )
    if isinstance(content, SignersUnreadable):
        return f"{ROOT_SIGNERS_PATH} {content.reason}"
    try:
        parse_allowed_signers(content, f"{ROOT_SIGNERS_PATH} at {short(record.sha)}", local_tz=UTC)
    except OutpostError as exc:
        return f"the next trust root it writes is invalid: {exc}"
    return None


def verify_range(
    commits: Sequence[CommitRecord],
    *,
    trust: TrustRoot,
    candidate: str,
    now: datetime,
    last_applied: CommitObject | None = None,
    max_skew: timedelta = DEFAULT_MAX_SKEW,
    max_commits: int = DEFAULT_MAX_COMMITS,
    namespace: str = GIT_NAMESPACE,
) -> RangeResult:
    """Verify every commit in (``last_applied``, ``candidate``]; ``commits`` is that range.

    ``commits`` must be exactly the commits reachable from ``candidate`` and not
    from ``last_applied`` (``git rev-list last..candidate``); None for
    ``last_applied`` means the whole history. ``now`` is the node's clock,
    passed in.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    last_sha = last_applied.sha if last_applied is not None else None

    def refuse(problem: str, verdicts: tuple[Verdict, ...] = ()) -> RangeResult:
        return RangeResult(candidate, last_sha, verdicts, problem)

    if len(commits) > max_commits:
        return refuse(
            f"more than {max_commits:,} commits between the last applied commit "
            f"{short(last_sha) if last_sha else '(none)'} and {short(candidate)}; refusing to "
            "walk further (raise the limit, e.g. outpost verify --max-commits, after checking "
            "why the range is this long)"
        )
    floor: int | None = None
    if last_applied is not None:
        try:
            floor = parse_commit(last_applied).committer_time
        except VerificationError as exc:
            return refuse(f"last applied commit {short(last_applied.sha)}: {exc.message}")
        if candidate == last_applied.sha:
            return RangeResult(candidate, last_sha, ())
    ctx = _Context(
        trust=trust,
        now=int(now.timestamp()),
        max_skew=int(max_skew.total_seconds()),
        namespace=namespace,
        floor=floor,
        floor_sha=last_sha,
    )
    records = {record.sha: record for record in commits}
    if candidate not in records:
        if last_applied is not None and not commits:
            return refuse(
                f"candidate {short(candidate)} is an ancestor of the last applied commit "
                f"{short(last_applied.sha)}: going back is refused (rollback); undo a change "
                "with a new revert commit instead"
            )
        return refuse(f"candidate {short(candidate)} is not among the commits to verify")

    for sha, record in records.items():
        try:
            ctx.parsed[sha] = parse_commit(record)
        except VerificationError as exc:
            return refuse(f"commit {short(sha)}: {exc.message}")
    order = _topological(records, ctx.parsed, candidate)
    if len(order) != len(records):
        return refuse(
            f"internal error: {len(records) - len(order)} commits handed in are not reachable "
            f"from the candidate {short(candidate)}"
        )

    own: dict[str, Verdict] = {}
    for sha in order:
        commit = ctx.parsed[sha]
        if last_sha is not None and any(p == last_sha or p in ctx.descends for p in commit.parents):
            ctx.descends.add(sha)
        try:
            own[sha] = _judge(records[sha], commit, ctx)
        except _Refusal as refusal:
            own[sha] = Verdict(
                sha,
                REFUSED,
                refusal.reason,
                principal=refusal.principal,
                fingerprint=refusal.fingerprint,
                committer_time=commit.committer_time,
            )
    verdicts = _settle(order, own, records, ctx, last_sha)
    if last_applied is not None and candidate not in ctx.descends:
        return refuse(
            f"candidate {short(candidate)} does not descend from the last applied commit "
            f"{short(last_applied.sha)}: unrelated history (a force-push, or another branch) "
            "is refused",
            tuple(verdicts),
        )
    from reconciler.core.trust.approvals import approvals

    final = {v.sha: v for v in verdicts}
    found = approvals(
        order, final, records, ctx.parsed, candidate, trust=trust, valid_now=ctx.vouchers
    )
    pending = dict(found.pending)
    rotation = found.rotation
    if rotation is None or rotation.effective == candidate:
        rotations = (rotation,) if rotation is not None else ()
        pending_list = tuple(pending[sha] for sha in order if sha in pending)
        return RangeResult(
            candidate,
            last_sha,
            tuple(verdicts),
            pending=pending_list,
            applicable=_applicable(order, ctx, pending, candidate, last_sha),
            rotations=rotations,
        )
    # The root rotated at ``rotation.effective``: what lies above it is judged by the new one.
    below = _ancestors(rotation.effective, records, ctx.parsed)
    above = [records[sha] for sha in order if sha not in below]
    new_root = parse_allowed_signers(
        rotation.root, f"{ROOT_SIGNERS_PATH} at {short(rotation.commit)}", local_tz=UTC
    )
    rest = verify_range(
        above,
        trust=new_root,
        candidate=candidate,
        now=now,
        last_applied=records[rotation.effective],
        max_skew=max_skew,
        max_commits=max_commits,
        namespace=namespace,
    )
    combined = {v.sha: v for v in verdicts if v.sha in below}
    combined.update({v.sha: v for v in rest.verdicts})
    pending = {sha: item for sha, item in pending.items() if sha in below}
    pending.update({item.sha: item for item in rest.pending})
    return RangeResult(
        candidate,
        last_sha,
        tuple(combined[sha] for sha in order),
        problem=rest.problem,
        pending=tuple(pending[sha] for sha in order if sha in pending),
        applicable=_applicable(order, ctx, pending, candidate, last_sha),
        rotations=(rotation, *rest.rotations),
    )


def _ancestors(
    sha: str, records: dict[str, CommitRecord], parsed: dict[str, ParsedCommit]
) -> set[str]:
    """``sha`` and its ancestors inside the range."""
    seen = {sha}
    stack = [sha]
    while stack:
        for parent in parsed[stack.pop()].parents:
            if parent in records and parent not in seen:
                seen.add(parent)
                stack.append(parent)
    return seen


def _applicable(
    order: Sequence[str],
    ctx: _Context,
    pending: dict[str, Pending],
    candidate: str,
    last_sha: str | None,
) -> str | None:
    """The newest commit on the candidate's first-parent line that no pending commit is under."""
    if not pending:
        return candidate
    blocked: set[str] = set()
    for sha in order:
        if sha in pending or any(p in blocked for p in ctx.parsed[sha].parents):
            blocked.add(sha)
    step: str | None = candidate
    while step is not None and step in ctx.parsed:
        if step not in blocked and (last_sha is None or step in ctx.descends):
            return step
        parents = ctx.parsed[step].parents
        step = parents[0] if parents else None
    return None
