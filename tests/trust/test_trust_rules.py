"""Delegation rules: path patterns, policies/** for roots only, and signers.yaml refusals."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from trust_git import Key, signers_yaml

from reconciler.core.errors import VerificationError
from reconciler.core.trust.rules import Signer, compile_pattern, is_policy_path, parse_signers


@pytest.mark.parametrize(
    ("pattern", "path", "expected"),
    [
        ("apps/pos/**", "apps/pos/app.yaml", True),
        ("apps/pos/**", "apps/pos/manifests/deploy.yaml", True),
        ("apps/pos/**", "apps/posx/app.yaml", False),
        ("apps/pos/**", "apps/pos", False),
        ("sites/de-*/**", "sites/de-ber-0042/site.yaml", True),
        ("sites/de-*/**", "sites/de-ber-0042/vms/hmi.yaml", True),
        ("sites/de-*/**", "sites/fr-par-0001/site.yaml", False),
        ("sites/de-*/**", "sites/de/x/site.yaml", False),
        ("sites/*/site.yaml", "sites/a/b/site.yaml", False),
        ("sites/*/site.yaml", "sites/a/site.yaml", True),
        ("fleets/retail-eu.yaml", "fleets/retail-eu.yaml", True),
        ("fleets/retail-eu.yaml", "fleets/retail-euxyaml", False),
        ("**/overrides.yaml", "overrides.yaml", True),
        ("**/overrides.yaml", "sites/x/overrides.yaml", True),
        ("sites/**/secrets/*.sops.yaml", "sites/de-1/secrets/db.sops.yaml", True),
        ("sites/**/secrets/*.sops.yaml", "sites/secrets/db.sops.yaml", True),
        ("sites/**/secrets/*.sops.yaml", "sites/de-1/secrets/db.yaml", False),
        ("apps/{pos,kiosk}/**", "apps/kiosk/app.yaml", True),
        ("apps/{pos,kiosk}/**", "apps/scale/app.yaml", False),
        ("sites/de-ber-00[0-4]?/**", "sites/de-ber-0042/site.yaml", True),
        ("sites/de-ber-00[0-3]?/**", "sites/de-ber-0042/site.yaml", False),
        ("sites/de-*", "sites/de-x/site.yaml", False),
    ],
)
def test_patterns(pattern: str, path: str, expected: bool) -> None:
    assert bool(compile_pattern(pattern).fullmatch(path)) is expected


@pytest.mark.parametrize(
    "pattern", ["/apps/**", "apps//x", "apps/../policies/**", "./apps", "apps/[x", "apps/{a", "a b"]
)
def test_malformed_patterns(pattern: str) -> None:
    with pytest.raises(ValueError, match="pattern"):
        compile_pattern(pattern)


def test_policies_are_never_delegated(keys: dict[str, Key]) -> None:
    everything = Signer("all", (), ("**", "*/*", "policies*/**"))
    assert everything.allows("apps/pos/app.yaml")
    assert not everything.allows("policies/signers.yaml")
    assert not everything.allows("policies/no-latest-tag.yaml")
    assert everything.allows("policies-old/x.yaml")
    assert is_policy_path("policies") and not is_policy_path("policiesx")
    assert everything.scope_problem(["apps/x", "policies/signers.yaml"]) == (
        "signed by all, a delegated signer, but it changes policies/signers.yaml; only root "
        "signers may change policies/**"
    )


def test_scope_problem_names_signer_patterns_and_path() -> None:
    signer = Signer("pos-team", (), ("apps/pos/**", "fleets/retail-eu.yaml"))
    assert signer.scope_problem(["apps/pos/a", "fleets/retail-eu.yaml"]) is None
    assert signer.scope_problem(["apps/pos/a", "sites/de-ber-0042/site.yaml"]) == (
        "signed by pos-team, which may change apps/pos/**, fleets/retail-eu.yaml, but it "
        "changes sites/de-ber-0042/site.yaml"
    )


def test_parse_signers(keys: dict[str, Key]) -> None:
    rules = parse_signers(
        signers_yaml(
            {
                "pos-team": ([keys["pos"], keys["pos2"]], ["apps/pos/**"]),
                "ops-de": ([keys["ops"]], ["sites/de-*/**"]),
            }
        ).encode()
    )
    pos = rules.find(keys_public(keys["pos2"]))
    assert pos is not None and pos.name == "pos-team"
    assert str(pos.mark) == "policies/signers.yaml:6"
    assert rules.find(keys_public(keys["rogue"])) is None
    assert parse_signers(signers_yaml({}).encode()).signers == ()


def keys_public(key: Key):  # type: ignore[no-untyped-def]
    from reconciler.core.trust.sshsig import parse_public_key_line

    return parse_public_key_line(key.public_line)


def _doc(entries: str) -> bytes:
    return (
        "apiVersion: outpost/v1\nkind: Signers\nmetadata: {name: signers}\nspec:\n"
        f"  signers:\n{entries}"
    ).encode()


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            b"apiVersion: outpost/v1\nkind: Site\nmetadata: {name: x}\nspec: {}\n",
            "policies/signers.yaml:2: expected kind Signers, found kind Site",
        ),
        (
            b"apiVersion: outpost/v1\nkind: Signers\nmetadata: {name: x}\nspec: {signers: 1}\n",
            "policies/signers.yaml:4: spec.signers must be a list",
        ),
        (
            b"apiVersion: outpost/v1\nkind: Signers\nmetadata: {name: x}\n"
            b"spec: {signers: [], extra: 1}\n",
            "policies/signers.yaml:4: unknown field 'extra' in spec",
        ),
        (b"kind: [\n", "policies/signers.yaml:2: YAML syntax error"),
        (
            _doc("    - {name: a, keys: ['{pos}'], paths: ['apps/**'], scope: all}\n"),
            "policies/signers.yaml:6: unknown field 'scope' in a signer",
        ),
        (
            _doc("    - {name: Pos_Team, keys: ['{pos}'], paths: ['apps/**']}\n"),
            "policies/signers.yaml:6: signer name 'Pos_Team' is not a DNS label",
        ),
        (
            _doc("    - {name: a, keys: [], paths: ['apps/**']}\n"),
            "policies/signers.yaml:6: signer a: keys must be a non-empty list",
        ),
        (
            _doc("    - {name: a, keys: ['ssh-ed25519 AAAA'], paths: ['apps/**']}\n"),
            "policies/signers.yaml:6: public key is malformed",
        ),
        (
            _doc("    - {name: a, keys: ['{pos}'], paths: ['policies/**']}\n"),
            "policies/signers.yaml:6: signer a: pattern 'policies/**' reaches into policies/",
        ),
        (
            _doc("    - {name: a, keys: ['{pos}'], paths: ['../x']}\n"),
            "policies/signers.yaml:6: signer a: pattern '../x' has a '.' or '..' segment",
        ),
        (
            _doc(
                "    - {name: a, keys: ['{pos}'], paths: ['apps/**']}\n"
                "    - {name: b, keys: ['{pos}'], paths: ['sites/**']}\n"
            ),
            "policies/signers.yaml:7: key {fp} is listed for both a and b",
        ),
        (
            _doc(
                "    - {name: a, keys: ['{pos}'], paths: ['apps/**']}\n"
                "    - {name: a, keys: ['{ops}'], paths: ['sites/**']}\n"
            ),
            "policies/signers.yaml:7: signer 'a' is listed twice",
        ),
        (
            _doc("    - {name: a, keys: ['{sk}'], paths: ['apps/**']}\n"),
            "policies/signers.yaml:6: FIDO security keys are not supported",
        ),
        (
            _doc("    []\n  thresholds:\n    - {paths: ['policies/**'], approvals: 0}\n"),
            "policies/signers.yaml:8: approvals must be a whole number from 1 to 16, found 0",
        ),
        (
            _doc("    []\n  thresholds:\n    - {paths: ['policies/**'], count: 2}\n"),
            "policies/signers.yaml:8: each threshold must be a mapping with exactly paths",
        ),
        (
            _doc("    []\n  thresholds:\n    - {paths: ['/etc'], approvals: 2}\n"),
            "policies/signers.yaml:8: pattern '/etc' is not a relative path pattern",
        ),
        (
            _doc("    []\n  emergencyApprovals: true\n"),
            "policies/signers.yaml:7: spec.emergencyApprovals must be a whole number",
        ),
        (
            _doc("    []\n  heartbeat:\n    keys: ['ssh-ed25519 nope']\n"),
            "policies/signers.yaml:8: public key is malformed",
        ),
    ],
)
def test_invalid_signers_files(body: bytes, expected: str, keys: dict[str, Key]) -> None:
    sk = (
        "sk-ssh-ed25519@openssh.com AAAAGnNrLXNzaC1lZDI1NTE5QG9wZW5zc2guY29tAAAAIJsaDYXQYruc6bi"
        "lCYDIK4YSOeG+zmrRO2M9t03//7LHAAAABHNzaDo="
    )
    text = (
        body.decode()
        .replace("{pos}", keys["pos"].public_line)
        .replace("{ops}", keys["ops"].public_line)
        .replace("{sk}", sk)
    )
    with pytest.raises(VerificationError) as caught:
        parse_signers(text.encode())
    assert str(caught.value).startswith(expected.replace("{fp}", keys["pos"].fingerprint))


# --- properties ------------------------------------------------------------------------------

_segment = st.from_regex(r"[A-Za-z0-9_.-]{1,12}", fullmatch=True).filter(
    lambda s: s not in (".", "..")
)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60))
def test_compile_pattern_never_crashes(pattern: str) -> None:
    try:
        regex = compile_pattern(pattern)
    except ValueError:
        return
    assert isinstance(regex, re.Pattern)


@settings(max_examples=300, deadline=None)
@given(st.lists(_segment, min_size=1, max_size=6), st.data())
def test_literal_paths_match_themselves_and_wildcards_stay_in_segments(
    segments: list[str], data: st.DataObject
) -> None:
    path = "/".join(segments)
    assert compile_pattern(path).fullmatch(path)
    index = data.draw(st.integers(0, len(segments) - 1))
    starred = [*segments[:index], "*", *segments[index + 1 :]]
    assert compile_pattern("/".join(starred)).fullmatch(path)
    deeper = "/".join([*segments[:index], "extra", *segments[index:]])
    assert not compile_pattern("/".join(starred)).fullmatch(deeper)
    prefix = "/".join(segments[:index])
    spanning = f"{prefix}/**" if prefix else "**"
    assert compile_pattern(spanning).fullmatch(deeper)
