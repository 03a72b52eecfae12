"""The enrollment request parser: any bytes get EnrollmentRefused or a verified request, never a
traceback; a signed request survives only byte for byte."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.core.enrollment import EnrollmentRefused, open_request, seal_request
from reconciler.core.secrets._age import generate

KEY = Ed25519PrivateKey.generate()
SIGNED = seal_request(
    site="shop-a",
    node="edge-1",
    machine_id="ab" * 16,
    serial="CZC1",
    private_key=KEY,
    comment="n",
    age_recipient=generate().recipient,
    floor="cd" * 20,
    time=datetime(2026, 12, 1, tzinfo=UTC),
)


def _opens(data: bytes) -> bool:
    try:
        open_request(data, "request.json")
    except EnrollmentRefused:
        return False
    return True


def test_the_signed_request_opens() -> None:
    assert open_request(SIGNED, "r").site == "shop-a"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2048))
def test_any_bytes_are_refused_cleanly(data: bytes) -> None:
    assert not _opens(data)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_any_change_to_the_payload_is_refused(data: st.DataObject) -> None:
    wire = json.loads(SIGNED)
    payload = wire["payload"]
    index = data.draw(st.integers(0, len(payload) - 1))
    replacement = data.draw(st.characters(codec="ascii").filter(lambda c: c != payload[index]))
    wire["payload"] = payload[:index] + replacement + payload[index + 1 :]
    assert not _opens(json.dumps(wire).encode())


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.sampled_from(["apiVersion", "kind", "payload", "signature", "x"]),
                       st.one_of(st.none(), st.integers(), st.text(max_size=30), st.lists(st.integers()))))  # fmt: skip
def test_wrongly_shaped_envelopes_are_refused(wire: dict[str, object]) -> None:
    assert not _opens(json.dumps(wire).encode())
