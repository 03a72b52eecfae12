"""The signed report envelope: sealed by a node key, opened only with that site's keys."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from node_keys import NODE_KEYS, node_key, ssh_keygen_sign

from reconciler.core.report import (
    MAX_ENVELOPE_BYTES,
    REPORT_NAMESPACE,
    Envelope,
    ReportRefused,
    open_envelope,
    read_envelope,
    seal,
)
from reconciler.core.trust.sshsig import parse_public_key_line
from reconciler.node.identity import load_identity

NOW = datetime(2026, 12, 1, 9, 30, tzinfo=UTC)


def status(site: str = "de-muc-0007", **extra: object) -> dict[str, object]:
    return {
        "apiVersion": "outpost/v1",
        "kind": "SiteStatus",
        "site": site,
        "time": NOW.isoformat(),
        "outcome": "applied",
        "applied": {"revision": "a" * 40, "at": NOW.isoformat()},
        "health": "healthy",
        **extra,
    }


def keys_of(site: str, *nodes: str) -> list:
    return [
        parse_public_key_line((NODE_KEYS / f"{site}-{n}.key.pub").read_text())
        for n in nodes or ("edge-1",)
    ]


def test_a_sealed_report_opens_with_its_sites_keys(muc_key: Path) -> None:
    envelope = seal(status(), load_identity(muc_key).private_key)
    again = read_envelope(envelope.to_bytes(), "wire")
    assert (again.site, again.time) == ("de-muc-0007", NOW)
    report = open_envelope(again, keys_of("de-muc-0007"))
    assert report.body["outcome"] == "applied"
    assert report.key.blob == keys_of("de-muc-0007")[0].blob


def test_one_of_several_node_keys_is_enough(tmp_path: Path) -> None:
    edge2 = load_identity(node_key(tmp_path, "de-ber-0042", "edge-2"))
    envelope = seal(status("de-ber-0042"), edge2.private_key)
    assert open_envelope(envelope, keys_of("de-ber-0042", "edge-1", "edge-2")).site == "de-ber-0042"


def test_another_sites_key_cannot_report_for_this_site(tmp_path: Path) -> None:
    berlin = load_identity(node_key(tmp_path, "de-ber-0042"))
    envelope = seal(status("de-muc-0007"), berlin.private_key)
    with pytest.raises(ReportRefused, match="not a node key of de-muc-0007"):
        open_envelope(envelope, keys_of("de-muc-0007"))


def test_a_site_without_keys_cannot_report(muc_key: Path) -> None:
    envelope = seal(status(), load_identity(muc_key).private_key)
    with pytest.raises(ReportRefused, match="no node key"):
        open_envelope(envelope, [])


def test_a_changed_payload_is_refused(muc_key: Path) -> None:
    envelope = seal(status(), load_identity(muc_key).private_key)
    forged = envelope.payload.replace(b'"applied"', b'"rolled-back"', 1)
    assert forged != envelope.payload
    with pytest.raises(ReportRefused, match="does not match"):
        open_envelope(
            Envelope(forged, envelope.signature, envelope.site, envelope.time),
            keys_of("de-muc-0007"),
        )


def test_a_signature_made_for_git_does_not_count(muc_key: Path, tmp_path: Path) -> None:
    envelope = seal(status(), load_identity(muc_key).private_key)
    signature = ssh_keygen_sign(muc_key, envelope.payload, tmp_path / "payload", "git")
    git_signed = Envelope(envelope.payload, signature, envelope.site, envelope.time)
    with pytest.raises(ReportRefused, match="namespace 'git'"):
        open_envelope(git_signed, keys_of("de-muc-0007"))


def test_a_real_ssh_keygen_signature_in_our_namespace_opens(muc_key: Path, tmp_path: Path) -> None:
    payload = json.dumps(status()).encode()
    signature = ssh_keygen_sign(muc_key, payload, tmp_path / "p", REPORT_NAMESPACE)
    wire = json.dumps(
        {
            "apiVersion": "outpost/v1",
            "kind": "SignedSiteStatus",
            "payload": payload.decode(),
            "signature": signature,
        }
    )
    assert open_envelope(read_envelope(wire.encode(), "w"), keys_of("de-muc-0007")).time == NOW


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"nope", "not JSON"),
        (b"[]", "expected a JSON object"),
        (b'{"apiVersion": "outpost/v1", "kind": "SiteStatus"}', "kind SignedSiteStatus"),
        (
            b'{"apiVersion":"outpost/v1","kind":"SignedSiteStatus","payload":1,"signature":"x"}',
            "must both be strings",
        ),
        (
            b'{"apiVersion":"outpost/v1","kind":"SignedSiteStatus","payload":"{","signature":"x"}',
            "payload is not JSON",
        ),
        (
            b'{"apiVersion":"outpost/v1","kind":"SignedSiteStatus","payload":"{\\"kind\\":\\"SiteStatus\\",\\"site\\":\\"../x\\"}","signature":"x"}',
            "not a site id",
        ),
        (
            b'{"apiVersion":"outpost/v1","kind":"SignedSiteStatus","payload":"{\\"kind\\":\\"SiteStatus\\",\\"site\\":\\"x\\",\\"time\\":\\"2026-01-01T00:00:00\\"}","signature":"x"}',
            "with an offset",
        ),
        (b" " * (MAX_ENVELOPE_BYTES + 1), "over the cap"),
    ],
)
def test_malformed_envelopes_are_refused_with_the_reason(body: bytes, expected: str) -> None:
    with pytest.raises(ReportRefused, match=expected):
        read_envelope(body, "upload")


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=512) | st.text(max_size=512).map(str.encode))
def test_garbage_only_raises_report_refused(data: bytes) -> None:
    try:
        envelope = read_envelope(data, "upload")
    except ReportRefused:
        return
    with pytest.raises(ReportRefused):
        open_envelope(envelope, keys_of("de-muc-0007"))
