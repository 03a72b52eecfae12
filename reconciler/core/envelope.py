"""Outpost's own JSON documents as they arrive from outside, and the signed envelope.

Enrollment requests, status reports (signed envelopes and the files a USB stick carries),
the feed's ``index.json`` and bundle manifests all come to a reader as bytes someone else
wrote. Each is read the same way, in this order, and each step's failure is one error
naming the source (the caller's ``bad``: its own error class, its own prefix):

1. size: over the cap, refused unread — ``json.loads`` of a gigabyte costs the gigabyte
   before any check can run;
2. JSON (invalid UTF-8 included);
3. a JSON object;
4. ``apiVersion: outpost/v1`` and the kind the reader expects (`read_document`).

A signed envelope (`read_signed`) is ``{apiVersion, kind, payload, signature}``: the
payload a string of JSON — the exact bytes that were signed, so nothing is re-serialised
before verifying — holding an object of its own kind. Checking the signature is the
caller's, with the key it trusts (an SSH signature for enrollment, the node's ed25519 key
for reports): this module does no cryptography and no I/O.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "API_VERSION",
    "Signed",
    "check_kind",
    "envelope",
    "parse_time",
    "read_document",
    "read_json",
    "read_object",
    "read_signed",
]

API_VERSION = "outpost/v1"

Bad = Callable[[str], Exception]
"""Makes the caller's error from a reason (``lambda reason: FeedError(f"{where}: {reason}")``)."""


def _shown(value: Any) -> str:
    return repr(str(value)[:40])


def loads(data: bytes | str) -> Any:
    """``json.loads``, with nesting past the interpreter's recursion limit a ValueError like
    any other bad JSON (``json`` raises RecursionError there): every reader of JSON from
    outside catches one error and names its file."""
    try:
        return json.loads(data)
    except RecursionError:
        raise ValueError("nested too deeply to read") from None


def read_json(data: bytes, *, cap: int, what: str, bad: Bad, hint: str = "") -> Any:
    """``data`` parsed, if at most ``cap`` bytes (``what`` names the document in the error:
    "a report"); ``hint`` follows "not JSON (...)" (what the file should have been)."""
    if len(data) > cap:
        raise bad(f"{len(data):,} bytes, over the cap of {cap:,} for {what}")
    try:
        return loads(data)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError alike
        raise bad(f"not JSON ({exc}){hint}") from None


def read_object(data: bytes, *, cap: int, what: str, bad: Bad, hint: str = "") -> dict[str, Any]:
    """`read_json`, and the value must be a JSON object."""
    value = read_json(data, cap=cap, what=what, bad=bad, hint=hint)
    if not isinstance(value, dict):
        raise bad(f"expected a JSON object, found {type(value).__name__}")
    return value


def check_kind(document: Mapping[str, Any], kind: str, bad: Bad) -> None:
    """``apiVersion: outpost/v1`` and ``kind``, or ``bad`` saying what was found."""
    if document.get("apiVersion") != API_VERSION or document.get("kind") != kind:
        raise bad(
            f"expected apiVersion {API_VERSION} and kind {kind}, found "
            f"{_shown(document.get('apiVersion'))} / {_shown(document.get('kind'))}"
        )


def read_document(
    data: bytes, kind: str, *, cap: int, what: str, bad: Bad, hint: str = ""
) -> dict[str, Any]:
    """`read_object`, and the object must be of ``apiVersion: outpost/v1`` and ``kind``."""
    document = read_object(data, cap=cap, what=what, bad=bad, hint=hint)
    check_kind(document, kind, bad)
    return document


@dataclass(frozen=True)
class Signed:
    """An envelope's parts, the signature not yet checked."""

    payload: str
    """The signed bytes, as text."""
    signature: str
    body: dict[str, Any]
    """The payload parsed: an object of the payload kind."""


def read_signed(
    data: bytes,
    kind: str,
    payload_kind: str,
    *,
    cap: int,
    what: str,
    bad: Bad,
    hint: str = "",
    payload_what: str,
) -> Signed:
    """The envelope ``kind`` around a payload object of ``payload_kind`` (``payload_what``
    names it in the error: "a SiteStatus report")."""
    outer = read_document(data, kind, cap=cap, what=what, bad=bad, hint=hint)
    payload, signature = outer.get("payload"), outer.get("signature")
    if not isinstance(payload, str) or not isinstance(signature, str):
        raise bad("payload and signature must both be strings")
    try:
        body = json.loads(payload)
    except ValueError as exc:
        raise bad(f"the payload is not JSON ({exc})") from None
    if not isinstance(body, dict) or body.get("kind") != payload_kind:
        raise bad(f"the payload is not {payload_what}")
    return Signed(payload, signature, body)


def envelope(kind: str, payload: bytes, signature: str) -> dict[str, str]:
    """The wire form `read_signed` reads: ``payload`` (UTF-8 JSON) and its signature."""
    return {
        "apiVersion": API_VERSION,
        "kind": kind,
        "payload": payload.decode("utf-8"),
        "signature": signature,
    }


def parse_time(value: Any) -> datetime | None:
    """An RFC 3339 time with an offset, in UTC; None for anything else (no offset included:
    a time without one means whatever the writer's clock zone was)."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed.astimezone(UTC) if parsed.tzinfo is not None else None
