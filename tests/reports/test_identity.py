"""The node's own key: keygen, loading, and SSHSIG signatures that real ssh-keygen accepts."""

from __future__ import annotations

import stat
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from node_keys import NODE_KEYS, ssh_keygen_sign

from reconciler.cli import main
from reconciler.core.errors import ConfigError, VerificationError
from reconciler.core.report import REPORT_NAMESPACE
from reconciler.core.trust.sshsig import (
    parse_public_key_line,
    parse_signature,
    sign_message,
    verify_signature,
)
from reconciler.node.identity import generate, load_identity


def ssh_verify(tmp_path: Path, public_line: str, message: bytes, signature: str, ns: str) -> bool:
    """Verify with the real ``ssh-keygen -Y verify``."""
    signers = tmp_path / "allowed_signers"
    signers.write_text(f"node@example {public_line}\n")
    sig = tmp_path / "message.sig"
    sig.write_text(signature)
    done = subprocess.run(
        [
            "ssh-keygen",
            "-Y",
            "verify",
            "-f",
            str(signers),
            "-I",
            "node@example",
            "-n",
            ns,
            "-s",
            str(sig),
        ],
        input=message,
        capture_output=True,
        check=False,
    )
    return done.returncode == 0


def test_keygen_writes_an_openssh_key_only_its_owner_reads(tmp_path: Path, capsys) -> None:
    key = tmp_path / "etc" / "node.key"
    assert main(["agent", "keygen", "--out", str(key), "--comment", "outpost-node@x"]) == 0
    line = capsys.readouterr().out.strip()
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert (tmp_path / "etc" / "node.key.pub").read_text().strip() == line
    assert line.startswith("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5") and line.endswith(" outpost-node@x")
    # ssh-keygen reads it back and derives the same public key.
    derived = subprocess.run(
        ["ssh-keygen", "-y", "-f", str(key)], capture_output=True, text=True, check=True
    ).stdout.split()
    assert derived[:2] == line.split()[:2]
    assert load_identity(key).public_key.line().split()[:2] == line.split()[:2]


def test_keygen_refuses_to_replace_a_key_unless_forced(tmp_path: Path, capsys) -> None:
    key = tmp_path / "node.key"
    assert main(["agent", "keygen", "--out", str(key)]) == 0
    first = key.read_bytes()
    capsys.readouterr()
    assert main(["agent", "keygen", "--out", str(key)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert key.read_bytes() == first
    assert main(["agent", "keygen", "--out", str(key), "--force"]) == 0
    assert key.read_bytes() != first


def test_keygen_takes_the_path_from_the_agent_config(tmp_path: Path, capsys) -> None:
    config = tmp_path / "agent.yaml"
    config.write_text(
        "apiVersion: outpost/v1\nkind: AgentConfig\nspec:\n  site: de-muc-0007\n"
        "  bundleInbox: inbox\n  trustRoot: allowed_signers\n  stateDir: state\n"
        "  identityKey: keys/node.key\n"
    )
    assert main(["agent", "keygen", "--config", str(config)]) == 0
    assert capsys.readouterr().out.strip().endswith("outpost-node@de-muc-0007")
    assert (tmp_path / "keys" / "node.key").is_file()
    config.write_text(config.read_text().replace("  identityKey: keys/node.key\n", ""))
    assert main(["agent", "keygen", "--config", str(config)]) == 2
    assert "spec.identityKey is not set" in capsys.readouterr().err


def test_a_key_others_can_read_is_refused(muc_key: Path) -> None:
    muc_key.chmod(0o644)
    with pytest.raises(ConfigError, match=r"readable by others \(mode 0644\).*chmod 600"):
        load_identity(muc_key)


def test_keys_that_are_not_ed25519_openssh_keys_are_refused(tmp_path: Path) -> None:
    rsa = tmp_path / "rsa"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "rsa", "-b", "2048", "-N", "", "-f", str(rsa)], check=True
    )
    with pytest.raises(ConfigError, match="not an ed25519 key"):
        load_identity(rsa)
    junk = tmp_path / "junk"
    junk.write_text("hello\n")
    junk.chmod(0o600)
    with pytest.raises(ConfigError, match="not an unencrypted OpenSSH private key"):
        load_identity(junk)
    with pytest.raises(ConfigError, match=r"cannot read the node key .*keygen"):
        load_identity(tmp_path / "missing")


def test_the_example_fleet_lists_every_test_key() -> None:
    """Every node of the example fleet has a key under tests/keys/node, and vice versa."""
    import yaml

    listed = set()
    for hardware in (NODE_KEYS.parents[2] / "sites").glob("*/hardware.yaml"):
        for node in yaml.safe_load(hardware.read_text())["spec"]["nodes"]:
            listed.add(node["publicKey"])
            site = hardware.parent.name
            pub = (NODE_KEYS / f"{site}-{node['name']}.key.pub").read_text().strip()
            assert pub == node["publicKey"]
    assert len(listed) == len(list(NODE_KEYS.glob("*.key")))


@settings(max_examples=25, deadline=None)
@given(message=st.binary(max_size=2048))
def test_signatures_verify_in_process(message: bytes) -> None:
    identity = load_identity(_example_key())
    armored = sign_message(identity.private_key, message, namespace=REPORT_NAMESPACE)
    signature = parse_signature(armored)
    verify_signature(signature, message, namespace=REPORT_NAMESPACE)
    with pytest.raises(VerificationError, match="namespace"):
        verify_signature(signature, message, namespace="git")
    with pytest.raises(VerificationError, match="does not match"):
        verify_signature(signature, message + b"x", namespace=REPORT_NAMESPACE)


_KEY_COPY: list[Path] = []


def _example_key() -> Path:
    if not _KEY_COPY:
        import tempfile

        from node_keys import node_key

        _KEY_COPY.append(node_key(Path(tempfile.mkdtemp()), "plant-lyon", "ipc-1"))
    return _KEY_COPY[0]


@pytest.mark.parametrize("message", [b"", b"{}", b"x" * 100_000, "grüß dich\n".encode()])
def test_our_signatures_verify_with_real_ssh_keygen(
    muc_key: Path, tmp_path: Path, message: bytes
) -> None:
    identity = load_identity(muc_key)
    armored = sign_message(identity.private_key, message, namespace=REPORT_NAMESPACE)
    line = identity.public_key.line()
    assert ssh_verify(tmp_path, line, message, armored, REPORT_NAMESPACE)
    assert not ssh_verify(tmp_path, line, message, armored, "git")
    assert not ssh_verify(tmp_path, line, message + b".", armored, REPORT_NAMESPACE)


def test_ssh_keygen_signatures_by_a_node_key_verify_in_process(
    muc_key: Path, tmp_path: Path
) -> None:
    armored = ssh_keygen_sign(muc_key, b"report", tmp_path / "m", REPORT_NAMESPACE)
    signature = parse_signature(armored)
    verify_signature(signature, b"report", namespace=REPORT_NAMESPACE)
    public = parse_public_key_line((NODE_KEYS / "de-muc-0007-edge-1.key.pub").read_text())
    assert signature.public_key.blob == public.blob
    # What we make for the same message is accepted the same way, byte for byte the same
    # shape (ed25519 signatures are deterministic).
    ours = sign_message(load_identity(muc_key).private_key, b"report", namespace=REPORT_NAMESPACE)
    assert ours.strip() == armored.strip()


def test_generate_then_sign(tmp_path: Path) -> None:
    identity = generate(tmp_path / "k", comment="c")
    armored = sign_message(identity.private_key, b"m", namespace="outpost-report")
    assert ssh_verify(tmp_path, identity.public_key.line(), b"m", armored, "outpost-report")
    with pytest.raises(VerificationError, match="namespace"):
        sign_message(identity.private_key, b"m", namespace="")
