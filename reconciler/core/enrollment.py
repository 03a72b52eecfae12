"""The enrollment request: what a new node asks headquarters to record, signed by the node.

``outpost node enroll`` writes it on the box; ``outpost site accept`` reads it in a
checkout. It travels like a status report (`reconciler.core.report`)::

    {"apiVersion": "outpost/v1", "kind": "EnrollmentRequest",
     "payload": "<the request's exact JSON text>",
     "signature": "-----BEGIN SSH SIGNATURE-----\\n..."}

The payload names the site and node, the machine's identity (``/etc/machine-id``
and the DMI product serial), the node's new public key, the site's new age
recipient and the commit the node enrolled from.

Decisions:

- **Signed by the key it introduces** (proof of possession), in its own SSHSIG
  namespace `ENROLL_NAMESPACE`: a request cannot pass as a report or a commit,
  and a report cannot pass as a request. The signature proves the request was
  not changed after the node wrote it; whether the node is *the right box* is
  decided by the accepting operator against the signed ``hardware.yaml``.
- **The payload is the signed bytes**, carried as text, never re-serialised.
- **Bounded**: a request over `MAX_REQUEST_BYTES` is refused unread.

No I/O here: bytes in, a verified `EnrollmentRequest` or an `EnrollmentRefused` out.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from reconciler.core.envelope import envelope, read_signed
from reconciler.core.errors import PermanentError, VerificationError
from reconciler.core.secrets import is_recipient
from reconciler.core.trust.sshsig import (
    PublicKey,
    parse_public_key_line,
    parse_signature,
    public_key_of,
    sign_message,
    verify_signature,
)

__all__ = [
    "ENROLL_NAMESPACE",
    "MAX_REQUEST_BYTES",
    "REQUEST_KIND",
    "EnrollmentRefused",
    "EnrollmentRequest",
    "RegisteredNode",
    "match_machine",
    "open_request",
    "registered_nodes",
    "seal_request",
]

ENROLL_NAMESPACE = "outpost-enroll"
REQUEST_KIND = "EnrollmentRequest"
PAYLOAD_KIND = "Enrollment"
MAX_REQUEST_BYTES = 16 * 1024

_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_MACHINE_ID = re.compile(r"^[0-9a-f]{32}$")
_SHA = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")


class EnrollmentRefused(PermanentError):
    """An enrollment request is malformed, not signed by the key it carries, or tampered with."""


@dataclass(frozen=True)
class EnrollmentRequest:
    """A request whose signature verified against the public key it carries."""

    site: str
    node: str
    machine_id: str
    serial: str | None
    public_key: PublicKey
    age_recipient: str
    floor: str
    time: str
    payload: bytes = field(repr=False, default=b"")

    def body(self) -> dict[str, Any]:
        return {
            "kind": PAYLOAD_KIND,
            "site": self.site,
            "node": self.node,
            "machineId": self.machine_id,
            "serial": self.serial,
            "publicKey": self.public_key.line(),
            "ageRecipient": self.age_recipient,
            "floor": self.floor,
            "time": self.time,
        }


def seal_request(
    *,
    site: str,
    node: str,
    machine_id: str,
    serial: str | None,
    private_key: Ed25519PrivateKey,
    comment: str,
    age_recipient: str,
    floor: str,
    time: datetime,
) -> bytes:
    """The signed request file's bytes, signed with the node's new key."""
    request = EnrollmentRequest(
        site=site,
        node=node,
        machine_id=machine_id,
        serial=serial,
        public_key=public_key_of(private_key, comment=comment),
        age_recipient=age_recipient,
        floor=floor,
        time=time.isoformat(timespec="seconds"),
    )
    payload = json.dumps(request.body(), sort_keys=True, separators=(",", ":")).encode("utf-8")
    signature = sign_message(private_key, payload, namespace=ENROLL_NAMESPACE)
    wire = envelope(REQUEST_KIND, payload, signature)
    return json.dumps(wire, indent=2, sort_keys=True).encode("utf-8") + b"\n"


def open_request(data: bytes, source: str) -> EnrollmentRequest:
    """Parse ``data`` and verify its signature with the key it carries; EnrollmentRefused if not."""

    def bad(reason: str) -> EnrollmentRefused:
        return EnrollmentRefused(f"{source}: {reason}")

    signed = read_signed(
        data,
        REQUEST_KIND,
        PAYLOAD_KIND,
        cap=MAX_REQUEST_BYTES,
        what="a request",
        bad=bad,
        hint="; expected the file `outpost node enroll` wrote",
        payload_what=f"an {PAYLOAD_KIND} document",
    )
    payload, armored, body = signed.payload, signed.signature, signed.body

    def text(name: str, pattern: re.Pattern[str] | None = None) -> str:
        value = body.get(name)
        if not isinstance(value, str) or (pattern is not None and not pattern.match(value)):
            raise bad(f"payload field {name} is {str(value)[:70]!r}, not a valid value")
        return value

    site, node = text("site", _NAME), text("node", _NAME)
    machine_id, floor, time = text("machineId", _MACHINE_ID), text("floor", _SHA), text("time")
    serial = body.get("serial")
    if serial is not None and (not isinstance(serial, str) or not 0 < len(serial) <= 64):
        raise bad(f"payload field serial is {str(serial)[:70]!r}, not a serial number")
    recipient = text("ageRecipient")
    if not is_recipient(recipient):
        raise bad(f"payload field ageRecipient {recipient[:70]!r} is not an age recipient")
    try:
        key = parse_public_key_line(text("publicKey"), what="the request's publicKey")
    except VerificationError as exc:
        raise bad(str(exc)) from None
    if key.key_type != "ssh-ed25519":
        raise bad(f"the node key must be ssh-ed25519, found {key.key_type}")
    try:
        signature = parse_signature(armored)
    except VerificationError as exc:
        raise bad(f"the signature: {exc}") from None
    if signature.public_key.blob != key.blob:
        raise bad(
            f"signed by {signature.public_key}, not by the key the request carries ({key}); "
            "the request was altered or assembled from two requests"
        )
    try:
        verify_signature(signature, payload.encode("utf-8"), namespace=ENROLL_NAMESPACE)
    except VerificationError as exc:
        raise bad(f"the signature does not verify ({exc}); the request was altered") from None
    return EnrollmentRequest(
        site=site,
        node=node,
        machine_id=machine_id,
        serial=serial,
        public_key=key,
        age_recipient=recipient,
        floor=floor,
        time=time,
        payload=payload.encode("utf-8"),
    )


# -- which node of the repository a machine is ---------------------------------------------


@dataclass(frozen=True)
class RegisteredNode:
    """One node entry of a site's ``hardware.yaml``."""

    site: str
    node: str
    machine_id: str
    serial: str | None
    public_key: str | None
    where: str
    """``sites/<site>/hardware.yaml:<line>`` of the entry, for messages."""


def registered_nodes(repo: Any) -> list[RegisteredNode]:
    """Every node of every site in ``repo`` (a `reconciler.core.model.Repository`)."""
    found: list[RegisteredNode] = []
    for site_id in repo.site_ids:
        hardware = repo.site(site_id).hardware
        if hardware is None:
            continue
        for index, entry in enumerate(hardware.nodes):
            identity = entry.get("identity") or {}
            serial = identity.get("serial")
            key = entry.get("publicKey")
            found.append(
                RegisteredNode(
                    site=str(site_id),
                    node=str(entry.get("name", "")),
                    machine_id=str(identity.get("machineId", "")),
                    serial=None if serial is None else str(serial),
                    public_key=None if key is None else str(key),
                    where=str(hardware.doc.mark("spec", "nodes", index)),
                )
            )
    return found


def _described(machine_id: str, serial: str | None) -> str:
    return f"machine id {machine_id}" + (f", serial {serial}" if serial else ", no serial")


def match_machine(
    nodes: list[RegisteredNode],
    machine_id: str,
    serial: str | None,
    *,
    expected_site: str | None = None,
    revision: str = "",
) -> RegisteredNode:
    """The one node whose identity is this machine's; EnrollmentRefused naming why otherwise.

    A node matches when its ``machineId`` equals the machine's and its ``serial``, when
    hardware.yaml lists one, equals the machine's too. A node that shares one of the two
    with the machine but not the other is named (a reinstalled box, a swapped board);
    ``expected_site`` (the store the person enrolling stands in) must be the match's site.
    """
    at = f" at commit {revision[:12]}" if revision else ""
    me = _described(machine_id, serial)
    full = [
        n for n in nodes if n.machine_id == machine_id and (n.serial is None or n.serial == serial)
    ]
    if len(full) > 1:
        listing = "; ".join(f"{n.site}/{n.node} ({n.where})" for n in full)
        raise EnrollmentRefused(
            f"this box ({me}) matches {len(full)} nodes in the repository{at}: {listing}. A box "
            "belongs to one store: remove the stale entries in a signed commit, then enroll again"
        )
    if not full:
        partial = [
            n
            for n in nodes
            if n.machine_id == machine_id or (serial is not None and n.serial == serial)
        ]
        if partial:
            near = partial[0]
            raise EnrollmentRefused(
                f"this box ({me}) is not exactly the one registered as {near.site}/{near.node} "
                f"({near.where}: {_described(near.machine_id, near.serial)}). If this is that "
                "box (reinstalled, or its board swapped), correct its identity in "
                f"sites/{near.site}/hardware.yaml in a signed commit and enroll again; "
                "otherwise this box is not meant for that store"
            )
        raise EnrollmentRefused(
            f"no site's hardware.yaml{at} registers this box ({me}). Register it first: add it "
            "to its store's sites/<site>/hardware.yaml (spec.nodes[].identity) in a signed "
            "commit; do not enroll a box no store expects"
        )
    match = full[0]
    if expected_site is not None and match.site != expected_site:
        raise EnrollmentRefused(
            f"this box ({me}) is registered for {match.site}/{match.node} ({match.where}), not "
            f"for {expected_site}: it was sent to the wrong store. Do not enroll it here; send "
            f"it to {match.site} or ask operations to register it for {expected_site}"
        )
    return match
