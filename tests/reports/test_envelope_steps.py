"""`open_envelope` in two steps (the collector runs the public-key step in a worker): the same
verdict and the same words as in one, for good, tampered and foreign reports."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from reconciler.core.errors import VerificationError
from reconciler.core.report import (
    Envelope,
    ReportRefused,
    check_envelope,
    open_envelope,
    read_envelope,
    seal,
)
from reconciler.core.trust.sshsig import check_signed_data, public_key_of, sign_message

NOW = datetime(2026, 12, 1, 9, 30, tzinfo=UTC)
STATUS = {"apiVersion": "outpost/v1", "kind": "SiteStatus", "site": "s1", "time": NOW.isoformat()}


def in_two_steps(envelope: Envelope, keys: list) -> object:
    pending = check_envelope(envelope, keys, source="test")
    try:
        check_signed_data(pending.signed)
    except VerificationError as exc:
        return pending.verified(str(exc))
    return pending.verified(None)


def outcome(open_it, envelope: Envelope, keys: list) -> tuple[str, object]:
    try:
        report = open_it(envelope, keys)
    except ReportRefused as exc:
        return "refused", exc.message
    return "verified", (report.site, report.time, dict(report.body), report.payload, report.key)


def envelopes() -> tuple[list, list[Envelope]]:
    key, other = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    good = seal(STATUS, key)
    tampered = Envelope(good.payload.replace(b"s1", b"s2"), good.signature, "s1", NOW)
    foreign = seal(STATUS, other)
    namespace = Envelope(good.payload, sign_message(key, good.payload, namespace="file"), "s1", NOW)
    reread = read_envelope(good.to_bytes(), "wire")
    return [public_key_of(key)], [good, tampered, foreign, namespace, reread]


@pytest.mark.parametrize("index", range(5))
def test_two_steps_give_the_verdict_of_one(index: int) -> None:
    keys, cases = envelopes()
    one = outcome(lambda e, k: open_envelope(e, k, source="test"), cases[index], keys)
    two = outcome(in_two_steps, cases[index], keys)
    assert one == two
    assert one[0] == ("verified" if index in (0, 4) else "refused")
    if one[0] == "refused":
        assert str(one[1]).startswith("test: report from s1: ")
