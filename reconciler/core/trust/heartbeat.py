"""The heartbeat: a signed tag that says "at this time, the branch was here".

A git server that withholds updates (TUF's freeze attack) looks, from a node, just
like a quiet repository. CI therefore moves a tag (``refs/tags/outpost/heartbeat``,
`reconciler.ci.heartbeat`) onto the branch head on a schedule: an annotated tag
object, SSH-signed in namespace ``git`` as ``git tag -s`` with ``gpg.format=ssh``
makes it, whose tagger time is the signed time. A node that holds a verified
heartbeat older than the fleet's ``maxSilence`` says "updates may be withheld".

This module is pure: the raw tag object in, a verdict out. It re-derives what it
trusts from the bytes — the object id (recomputed), the target, the tagger time,
the signed payload and the signature — and checks the signer against
``spec.heartbeat.keys`` of a ``policies/signers.yaml`` the caller already trusts
(the one of the revision the node runs). Where the tag points is checked by the
caller (`reconciler.node.heartbeat`): at the fetched head or an ancestor of it.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from reconciler.core.errors import VerificationError
from reconciler.core.trust.rules import SignerRules
from reconciler.core.trust.sshsig import (
    GIT_NAMESPACE,
    MAX_ARMORED_BYTES,
    parse_signature,
    verify_signature,
)

__all__ = [
    "HEARTBEAT_TAG",
    "MAX_TAG_BYTES",
    "Heartbeat",
    "parse_tag",
    "verify_heartbeat",
]

HEARTBEAT_TAG = "outpost/heartbeat"
MAX_TAG_BYTES = 64 * 1024
_BEGIN = b"-----BEGIN SSH SIGNATURE-----"
_HEX = re.compile(rb"^[0-9a-f]{40}([0-9a-f]{24})?$")


@dataclass(frozen=True)
class Heartbeat:
    """A verified heartbeat: the commit it names, when it was signed, by which key."""

    tag: str
    target: str
    signed_at: int
    fingerprint: str


@dataclass(frozen=True)
class _Tag:
    target: str
    kind: str
    name: str
    tagger_time: int
    payload: bytes
    signature: bytes | None


def parse_tag(sha: str, raw: bytes) -> _Tag:
    """Split a tag object into its fields, the signed payload and the signature."""
    if len(raw) > MAX_TAG_BYTES:
        raise VerificationError(
            f"the heartbeat tag object is {len(raw):,} bytes; the limit is {MAX_TAG_BYTES:,}"
        )
    algorithm = "sha1" if len(sha) == 40 else "sha256"
    hasher = hashlib.new(algorithm)
    hasher.update(b"tag %d\0" % len(raw))
    hasher.update(raw)
    if hasher.hexdigest() != sha.lower():
        raise VerificationError("the heartbeat tag object does not hash to its id (tampered)")
    end = raw.find(b"\n\n")
    if end < 0:
        raise VerificationError("the heartbeat tag object has no message")
    headers: dict[bytes, list[bytes]] = {}
    for line in raw[:end].split(b"\n"):
        name, _, value = line.partition(b" ")
        headers.setdefault(name, []).append(value)
    if any(len(headers.get(h, ())) != 1 for h in (b"object", b"type", b"tag", b"tagger")):
        raise VerificationError(
            "the heartbeat tag object needs exactly one object, type, tag and tagger line"
        )
    target = headers[b"object"][0]
    if not _HEX.match(target):
        raise VerificationError(f"the heartbeat tag names a malformed object {target[:80]!r}")
    _, bracket, tail = headers[b"tagger"][0].rpartition(b">")
    fields = tail.split()
    if not bracket or len(fields) != 2 or not fields[0].isdigit() or len(fields[0]) > 12:
        raise VerificationError("the heartbeat tag's tagger line is malformed")
    # git's parse_signed_buffer: the signature starts at the last line that opens one.
    start = raw.rfind(b"\n" + _BEGIN, end)
    payload, signature = (raw, None) if start < 0 else (raw[: start + 1], raw[start + 1 :])
    return _Tag(
        target=target.decode("ascii"),
        kind=headers[b"type"][0].decode("ascii", "replace"),
        name=headers[b"tag"][0].decode("utf-8", "replace"),
        tagger_time=int(fields[0]),
        payload=payload,
        signature=signature,
    )


def verify_heartbeat(sha: str, raw: bytes, rules: SignerRules) -> Heartbeat:
    """Verify a heartbeat tag object against the heartbeat keys in ``rules``.

    `VerificationError` says why it does not count: not a signed tag of a commit, a
    signature that does not match, or a key that ``spec.heartbeat.keys`` does not list.
    """
    tag = parse_tag(sha, raw)
    if tag.kind != "commit":
        raise VerificationError(f"the heartbeat tag points at a {tag.kind}, not a commit")
    if tag.signature is None:
        raise VerificationError(
            "the heartbeat tag is not signed (outpost heartbeat signs it with the CI key)"
        )
    if len(tag.signature) > MAX_ARMORED_BYTES:
        raise VerificationError("the heartbeat tag's signature is too large (refused unread)")
    signature = parse_signature(tag.signature)
    key = signature.public_key
    if not rules.heartbeat_key(key):
        raise VerificationError(
            f"the heartbeat tag is signed by key {key.fingerprint}, which spec.heartbeat.keys "
            "of policies/signers.yaml does not list"
        )
    try:
        verify_signature(signature, tag.payload, namespace=GIT_NAMESPACE)
    except VerificationError as exc:
        raise VerificationError(f"the heartbeat tag's signature: {exc.message}") from None
    return Heartbeat(tag.name, tag.target, tag.tagger_time, key.fingerprint)
