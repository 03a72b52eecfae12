"""Signed status reports: the envelope a node seals and headquarters opens.

A node's ``SiteStatus`` report (the shape of `reconciler.node.agent.status_document`)
travels home inside an envelope::

    {"apiVersion": "outpost/v1", "kind": "SignedSiteStatus",
     "payload": "<the report's exact JSON text>",
     "signature": "-----BEGIN SSH SIGNATURE-----\\n..."}

Decisions:

- **The payload is the signed bytes, carried as text.** Nothing is
  canonicalised: the collector verifies the very bytes the node signed, then
  parses them. Re-serialising JSON before verifying is how signature schemes
  grow bypasses (duplicate keys, number formats, Unicode escapes).
- **SSHSIG in its own namespace**, `REPORT_NAMESPACE`: a node key's signature
  over a report can never pass as a commit signature (namespace ``git``) or
  the other way round. ``ssh-keygen -Y verify -n outpost-report`` checks one
  by hand.
- **The key must be one of the site's own node keys**, listed in the signed
  repository (``sites/<site>/hardware.yaml``). The report names its site; the
  caller looks that site's keys up and passes them in. Whoever holds another
  site's key cannot report for this one.
- **Bounded**: an envelope over `MAX_ENVELOPE_BYTES` is refused unread.

Opening does no I/O: bytes and keys in, a verified report or a
`ReportRefused` out. Sealing takes the private key as an object; reading the
key file is the node's business (`reconciler.node.identity`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from reconciler.core.envelope import envelope, parse_time, read_signed
from reconciler.core.errors import PermanentError, VerificationError
from reconciler.core.trust.sshsig import (
    PublicKey,
    SignedData,
    check_signed_data,
    parse_signature,
    prepare_verification,
    sign_message,
)

__all__ = [
    "ENVELOPE_KIND",
    "MAX_ENVELOPE_BYTES",
    "REPORT_NAMESPACE",
    "Envelope",
    "PendingReport",
    "ReportMalformed",
    "ReportRefused",
    "ReportUnverified",
    "VerifiedReport",
    "check_envelope",
    "open_envelope",
    "read_envelope",
    "seal",
]

REPORT_NAMESPACE = "outpost-report"
ENVELOPE_KIND = "SignedSiteStatus"
MAX_ENVELOPE_BYTES = 256 * 1024
"""A report is about 2 KiB; warnings and failed revisions are bounded by the agent."""

_SITE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


class ReportRefused(PermanentError):
    """A signed report is malformed, unsigned, or signed by a key not of its site."""


class ReportMalformed(ReportRefused):
    """The envelope or its payload is not shaped like a signed SiteStatus report."""


class ReportUnverified(ReportRefused):
    """The signature does not verify against a node key of the site the report names."""


@dataclass(frozen=True)
class Envelope:
    """A parsed envelope whose signature has not been checked yet."""

    payload: bytes = field(repr=False)
    signature: str = field(repr=False)
    site: str
    time: datetime
    body: Mapping[str, Any] | None = field(default=None, repr=False, compare=False, hash=False)
    """``payload`` as `read_envelope` parsed it (None: parse it again when opening); the
    signature still covers the payload's bytes, never this."""

    def to_bytes(self) -> bytes:
        return (
            json.dumps(
                envelope(ENVELOPE_KIND, self.payload, self.signature), sort_keys=True
            ).encode("utf-8")
            + b"\n"
        )


@dataclass(frozen=True)
class VerifiedReport:
    """A report whose signature verified against one of its site's node keys."""

    site: str
    time: datetime
    body: Mapping[str, Any] = field(hash=False, compare=False)
    payload: bytes = field(repr=False)
    key: PublicKey


def seal(status: Mapping[str, Any], private_key: Ed25519PrivateKey) -> Envelope:
    """Sign ``status`` (a ``SiteStatus`` document) with the node's key."""
    payload = json.dumps(status, sort_keys=True, separators=(",", ":")).encode("utf-8")
    signature = sign_message(private_key, payload, namespace=REPORT_NAMESPACE)
    wire = envelope(ENVELOPE_KIND, payload, signature)
    return read_envelope(json.dumps(wire).encode("utf-8"), "the report being sealed")


def read_envelope(data: bytes, source: str) -> Envelope:
    """Check an envelope's shape and read the site and time its payload claims (unverified)."""

    def bad(reason: str) -> ReportRefused:
        return ReportMalformed(f"{source}: {reason}")

    signed = read_signed(
        data,
        ENVELOPE_KIND,
        "SiteStatus",
        cap=MAX_ENVELOPE_BYTES,
        what="a report",
        bad=bad,
        payload_what="a SiteStatus report",
    )
    body = signed.body
    site = body.get("site")
    if not isinstance(site, str) or not _SITE.match(site):
        raise bad(f"site {str(site)[:70]!r} is not a site id")
    time = parse_time(body.get("time"))
    if time is None:
        raise bad(f"time {str(body.get('time'))[:40]!r} is not an RFC 3339 time with an offset")
    return Envelope(signed.payload.encode("utf-8"), signed.signature, site, time, body)


def open_envelope(
    envelope: Envelope, keys: Iterable[PublicKey], *, source: str = ""
) -> VerifiedReport:
    """Verify ``envelope`` against ``keys`` (its site's node keys, from the signed repository).

    ReportRefused when the site has no keys, the signature's key is not one of
    them, or the signature does not verify over the payload.
    """
    pending = check_envelope(envelope, keys, source=source)
    problem: str | None = None
    try:
        check_signed_data(pending.signed)
    except VerificationError as exc:
        problem = str(exc)
    return pending.verified(problem)


@dataclass(frozen=True)
class PendingReport:
    """An envelope that passed every check of `open_envelope` but the public-key step.

    The collector runs that step (`check_signed_data` over ``signed``) in a worker
    process and comes back with its answer to `verified`; `open_envelope` runs it here.
    """

    envelope: Envelope
    key: PublicKey
    signed: SignedData
    where: str

    def verified(self, problem: str | None) -> VerifiedReport:
        """The report, given `check_signed_data`'s answer for ``signed`` (None: it
        verified; else its error); ReportUnverified when it did not verify."""
        if problem is not None:
            raise ReportUnverified(f"{self.where}: {problem}")
        envelope = self.envelope
        body = envelope.body if envelope.body is not None else json.loads(envelope.payload)
        return VerifiedReport(envelope.site, envelope.time, body, envelope.payload, self.key)


def check_envelope(
    envelope: Envelope, keys: Iterable[PublicKey], *, source: str = ""
) -> PendingReport:
    """Every check of `open_envelope` before the public-key step; ReportUnverified if one fails."""
    allowed = {key.blob: key for key in keys}
    where = f"{source}: report from {envelope.site}" if source else f"report from {envelope.site}"
    if not allowed:
        raise ReportUnverified(
            f"{where}: the site has no node key in its hardware.yaml (spec.nodes[].publicKey); "
            "nobody can report for it"
        )
    try:
        signature = parse_signature(envelope.signature)
    except VerificationError as exc:
        raise ReportUnverified(f"{where}: {exc}") from None
    key = allowed.get(signature.public_key.blob)
    if key is None:
        raise ReportUnverified(
            f"{where}: signed by {signature.public_key}, which is not a node key of "
            f"{envelope.site} (it has {len(allowed)})"
        )
    try:
        signed = prepare_verification(signature, envelope.payload, namespace=REPORT_NAMESPACE)
    except VerificationError as exc:
        raise ReportUnverified(f"{where}: {exc}") from None
    return PendingReport(envelope, key, signed, where)
