"""SSHSIG parsing and verification against OpenSSH's own test vectors and real ssh-keygen output."""

from __future__ import annotations

import base64
import struct
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from trust_git import Key, make_key

from reconciler.core.errors import VerificationError
from reconciler.core.trust import sshsig
from tests.peers import peer_path

MESSAGE = b"tree 1234\nauthor someone\n\nhello\n"


PEER_VECTORS = "openssh-sshsig"  # in shared/testdata (tests/peers.py)


def peer(name: str) -> bytes:
    """A file of OpenSSH's vectors; missing vectors skip the test, or fail it in CI."""
    return (peer_path(PEER_VECTORS) / name).read_bytes()


class _Peer:
    """The vectors' message and namespace, read when a test asks (not at import, so a
    missing folder is the test's failure in CI, not a collection error)."""

    @property
    def message(self) -> bytes:
        return peer("signed-data")

    @property
    def namespace(self) -> str:
        return peer("namespace").decode().strip()


PEER = _Peer()


def ssh_sign(
    key: Key, data: bytes, directory: Path, *options: str, namespace: str = "git"
) -> bytes:
    """Sign with the real ssh-keygen -Y sign."""
    target = directory / f"{key.name}-{namespace}-{'-'.join(options) or 'default'}"
    target.write_bytes(data)
    argv = ["ssh-keygen", "-q", "-Y", "sign", "-n", namespace, "-f", str(key.private)]
    for option in options:
        argv += ["-O", option]
    subprocess.run([*argv, str(target)], check=True, capture_output=True, stdin=subprocess.DEVNULL)
    return Path(f"{target}.sig").read_bytes()


def armor(blob: bytes) -> bytes:
    body = base64.b64encode(blob)
    lines = [body[i : i + 70] for i in range(0, len(body), 70)]
    return (
        b"-----BEGIN SSH SIGNATURE-----\n" + b"\n".join(lines) + b"\n-----END SSH SIGNATURE-----\n"
    )


def dearmor(armored: bytes) -> bytes:
    return base64.b64decode(b"".join(armored.strip().split(b"\n")[1:-1]))


def ssh_string(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def sshsig_blob(
    key_blob: bytes, namespace: bytes, hash_alg: bytes, signature: bytes, version: int = 1
) -> bytes:
    return (
        b"SSHSIG"
        + struct.pack(">I", version)
        + ssh_string(key_blob)
        + ssh_string(namespace)
        + ssh_string(b"")
        + ssh_string(hash_alg)
        + ssh_string(signature)
    )


# --- OpenSSH's test vectors ----------------------------------------------------------------


@pytest.mark.parametrize("name", ["rsa", "ecdsa", "ed25519"])
def test_peer_vectors_verify(name: str) -> None:
    key = sshsig.parse_public_key_line(peer(f"{name}.pub").decode())
    signature = sshsig.parse_signature(peer(f"{name}.sig"))
    assert signature.public_key.blob == key.blob
    sshsig.verify_signature(signature, PEER.message, namespace=PEER.namespace)


@pytest.mark.parametrize("name", ["rsa", "ecdsa", "ed25519"])
def test_peer_vectors_fail_for_another_message_or_namespace(name: str) -> None:
    signature = sshsig.parse_signature(peer(f"{name}.sig"))
    with pytest.raises(VerificationError, match=r"^the signature does not match the signed data$"):
        sshsig.verify_signature(signature, PEER.message + b"!", namespace=PEER.namespace)
    with pytest.raises(VerificationError, match="namespace 'unittest', not 'git'"):
        sshsig.verify_signature(signature, PEER.message, namespace="git")


@pytest.mark.parametrize(
    ("name", "other"), [("ed25519", "rsa"), ("rsa", "ecdsa"), ("ecdsa", "ed25519")]
)
def test_peer_vectors_fail_for_another_key(name: str, other: str) -> None:
    other_key = sshsig.parse_public_key_line(peer(f"{other}.pub").decode())
    signature = sshsig.parse_signature(peer(f"{name}.sig"))
    assert signature.public_key.blob != other_key.blob  # a caller's key lookup would miss
    # And with the other key spliced into the blob, the signature no longer verifies.
    blob = dearmor(peer(f"{name}.sig"))
    original = signature.public_key.blob
    spliced = blob.replace(ssh_string(original), ssh_string(other_key.blob), 1)
    with pytest.raises(VerificationError):
        sshsig.verify_signature(
            sshsig.parse_signature(armor(spliced)), PEER.message, namespace=PEER.namespace
        )


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (
            "ed25519_sk",
            "FIDO security keys are not supported (found a sk-ssh-ed25519@openssh.com key)",
        ),
        (
            "ecdsa_sk",
            "FIDO security keys are not supported (found a sk-ecdsa-sha2-nistp256@openssh.com key)",
        ),
        (
            "ecdsa_sk_webauthn",
            "FIDO security keys are not supported (found a sk-ecdsa-sha2-nistp256@openssh.com key)",
        ),
        ("mldsa44-ed25519", "key type 'ssh-mldsa44-ed25519@openssh.com' is not supported"),
    ],
)
def test_peer_vectors_of_unsupported_types_are_refused_by_name(name: str, expected: str) -> None:
    with pytest.raises(VerificationError) as caught:
        sshsig.parse_signature(peer(f"{name}.sig"))
    assert caught.value.message.startswith(expected)
    key = sshsig.parse_public_key_line(peer(f"{name}.pub").decode())
    assert not key.supported
    with pytest.raises(VerificationError, match="not supported"):
        sshsig.check_supported(key)


@pytest.mark.parametrize("name", ["rsa", "ecdsa", "ed25519", "ed25519_sk", "ecdsa_sk"])
def test_fingerprints_match_ssh_keygen(name: str) -> None:
    key = sshsig.parse_public_key_line(peer(f"{name}.pub").decode())
    printed = subprocess.run(
        ["ssh-keygen", "-l", "-E", "sha256", "-f", str(peer_path(PEER_VECTORS) / f"{name}.pub")],
        capture_output=True,
        check=True,
        text=True,
    )
    assert printed.stdout.split()[1] == key.fingerprint


# --- real ssh-keygen signatures -------------------------------------------------------------


@pytest.fixture(scope="module")
def curve_keys(key_dir: Path) -> dict[str, Key]:
    return {
        "ecdsa384": make_key(key_dir, "sig-ecdsa384", "ecdsa", 384),
        "ecdsa521": make_key(key_dir, "sig-ecdsa521", "ecdsa", 521),
    }


@pytest.mark.parametrize("which", ["root", "ops", "ecdsa384", "ecdsa521", "rsa"])
@pytest.mark.parametrize("hashalg", ["sha512", "sha256"])
def test_ssh_keygen_signatures_verify(
    which: str, hashalg: str, keys: dict[str, Key], curve_keys: dict[str, Key], tmp_path: Path
) -> None:
    key = {**keys, **curve_keys}[which]
    armored = ssh_sign(key, MESSAGE, tmp_path, f"hashalg={hashalg}")
    signature = sshsig.parse_signature(armored)
    assert signature.hash_algorithm == hashalg
    assert signature.public_key.blob == key.blob
    assert signature.public_key.fingerprint == key.fingerprint
    sshsig.verify_signature(signature, MESSAGE, namespace="git")
    with pytest.raises(VerificationError, match="does not match"):
        sshsig.verify_signature(signature, MESSAGE.replace(b"hello", b"hellO"), namespace="git")


def test_rsa_signatures_use_sha2(keys: dict[str, Key], tmp_path: Path) -> None:
    signature = sshsig.parse_signature(ssh_sign(keys["rsa"], MESSAGE, tmp_path))
    assert signature.signature_algorithm == "rsa-sha2-512"


def test_ssh_rsa_sha1_signature_is_refused(keys: dict[str, Key]) -> None:
    """ssh-keygen no longer makes these; build one the way an old client would."""
    private = serialization.load_ssh_private_key(keys["rsa"].private.read_bytes(), None)
    assert isinstance(private, rsa.RSAPrivateKey)
    digest = __import__("hashlib").sha512(MESSAGE).digest()
    signed = (
        b"SSHSIG"
        + ssh_string(b"git")
        + ssh_string(b"")
        + ssh_string(b"sha512")
        + ssh_string(digest)
    )
    raw = private.sign(signed, padding.PKCS1v15(), hashes.SHA1())  # noqa: S303
    blob = sshsig_blob(
        keys["rsa"].blob, b"git", b"sha512", ssh_string(b"ssh-rsa") + ssh_string(raw)
    )
    signature = sshsig.parse_signature(armor(blob))
    with pytest.raises(VerificationError, match=r"uses ssh-rsa \(SHA-1\), which is refused"):
        sshsig.verify_signature(signature, MESSAGE, namespace="git")


def test_file_namespace_signature_is_refused_for_git(keys: dict[str, Key], tmp_path: Path) -> None:
    signature = sshsig.parse_signature(ssh_sign(keys["pos"], MESSAGE, tmp_path, namespace="file"))
    sshsig.verify_signature(signature, MESSAGE, namespace="file")
    with pytest.raises(VerificationError) as caught:
        sshsig.verify_signature(signature, MESSAGE, namespace="git")
    assert caught.value.message == (
        "signature was made for namespace 'file', not 'git' (a signature made for another "
        "purpose must not count here)"
    )


# --- malformed input ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def good_blob(key_dir: Path, keys: dict[str, Key]) -> bytes:
    return dearmor(ssh_sign(keys["pos"], MESSAGE, key_dir, "hashalg=sha512"))


@pytest.mark.parametrize(
    ("armored", "expected"),
    [
        (
            b"-----BEGIN PGP SIGNATURE-----\n\nabc\n-----END PGP SIGNATURE-----\n",
            "signature is an OpenPGP signature; Outpost verifies SSH signatures "
            "(git config gpg.format=ssh)",
        ),
        (b"-----BEGIN SIGNED MESSAGE-----\nabc\n", "signature is an X.509 (gpgsm) signature"),
        (b"-----BEGIN SSH SIGNATURE-----\nU1NIU0lH\n", "signature is truncated"),
        (
            b"-----BEGIN SSH SIGNATURE-----\n%%%\n-----END SSH SIGNATURE-----",
            "signature is malformed: its body is not valid base64",
        ),
        (
            "-----BEGIN SSH SIGNATURE-----\né\n-----END SSH SIGNATURE-----".encode(),
            "signature is not an SSH signature: it contains non-ASCII bytes",
        ),
        (
            b"",
            "signature is not an SSH signature: expected '-----BEGIN SSH SIGNATURE-----', found ''",
        ),
        (b"x" * 20000, "signature is 20,000 bytes; the limit is 16,384 bytes (refused unread)"),
    ],
)
def test_malformed_armor(armored: bytes, expected: str) -> None:
    with pytest.raises(VerificationError) as caught:
        sshsig.parse_signature(armored)
    assert caught.value.message.startswith(expected)


def test_structural_refusals(good_blob: bytes, keys: dict[str, Key]) -> None:
    signature_field = good_blob[-(4 + 4 + 11 + 4 + 64) :]
    inner = signature_field[4:]

    def refused(blob: bytes) -> str:
        with pytest.raises(VerificationError) as caught:
            sshsig.verify_signature(sshsig.parse_signature(armor(blob)), MESSAGE, namespace="git")
        return caught.value.message

    assert refused(good_blob + b"\0") == "signature is malformed: 1 unexpected trailing bytes"
    assert refused(sshsig_blob(keys["pos"].blob, b"git", b"sha512", inner, version=2)) == (
        "signature version 2 is not supported (expected 1)"
    )
    assert refused(sshsig_blob(keys["pos"].blob, b"git", b"sha1", inner)) == (
        "signature hash algorithm 'sha1' is not supported (expected sha256 or sha512)"
    )
    assert refused(sshsig_blob(keys["pos"].blob, b"git", b"sha512", inner + b"\0")) == (
        "ed25519 signature is malformed: 1 unexpected trailing bytes"
    )
    wrong_alg = ssh_string(b"ssh-rsa") + inner[4 + 11 :]
    assert refused(sshsig_blob(keys["pos"].blob, b"git", b"sha512", wrong_alg)) == (
        "signature algorithm 'ssh-rsa' does not fit an ed25519 key"
    )
    cert = ssh_string(b"ssh-ed25519-cert-v01@openssh.com") + b"\0" * 40
    assert refused(sshsig_blob(cert, b"git", b"sha512", inner)).startswith(
        "SSH certificates are not supported (found a ssh-ed25519-cert-v01@openssh.com key)"
    )
    short_key = ssh_string(b"ssh-ed25519") + ssh_string(b"\1" * 31)
    assert refused(sshsig_blob(short_key, b"git", b"sha512", inner)) == (
        "public key is malformed: an ed25519 key has 32 bytes, found 31"
    )
    assert refused(b"SSHSIX" + good_blob[6:]) == (
        "signature is malformed: magic 'SSHSIX', expected SSHSIG"
    )


def test_public_key_lines(keys: dict[str, Key]) -> None:
    line = keys["ops"].public_line
    key = sshsig.parse_public_key_line(line)
    assert key.key_type == "ecdsa-sha2-nistp256"
    assert key.comment == "ops"
    assert key.fingerprint == keys["ops"].fingerprint
    assert key.line() == line
    sshsig.check_supported(key)
    with pytest.raises(
        VerificationError,
        match="says 'ssh-ed25519' but its key data is a 'ecdsa-sha2-nistp256' key",
    ):
        sshsig.parse_public_key_line("ssh-ed25519 " + line.split()[1])
    with pytest.raises(VerificationError, match="not an OpenSSH public key"):
        sshsig.parse_public_key_line("ssh-ed25519")
    with pytest.raises(VerificationError, match="not valid base64"):
        sshsig.parse_public_key_line("ssh-ed25519 AAAA!!!")


def test_ssh_keygen_fingerprints(keys: dict[str, Key]) -> None:
    for key in keys.values():
        printed = subprocess.run(
            ["ssh-keygen", "-l", "-E", "sha256", "-f", f"{key.private}.pub"],
            capture_output=True,
            check=True,
            text=True,
        )
        assert (
            printed.stdout.split()[1] == sshsig.parse_public_key_line(key.public_line).fingerprint
        )


# --- properties: garbage never crashes ---------------------------------------------------------

SETTINGS = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@SETTINGS
@given(st.binary(max_size=2048))
def test_garbage_bytes_only_raise_verification_error(data: bytes) -> None:
    with pytest.raises(VerificationError):
        sshsig.parse_signature(data)


@SETTINGS
@given(st.binary(max_size=1024))
def test_armored_garbage_only_raises_verification_error(body: bytes) -> None:
    try:
        signature = sshsig.parse_signature(armor(b"SSHSIG\0\0\0\1" + body))
        sshsig.verify_signature(signature, MESSAGE, namespace="git")
    except VerificationError:
        return
    raise AssertionError("random bytes verified")


@SETTINGS
@given(st.data())
def test_any_change_to_a_real_signature_is_refused(good_blob: bytes, data: st.DataObject) -> None:
    index = data.draw(st.integers(0, len(good_blob) - 1))
    value = data.draw(st.integers(0, 255).filter(lambda v: v != good_blob[index]))
    cut = data.draw(st.integers(0, len(good_blob)))
    mutated = good_blob[:index] + bytes([value]) + good_blob[index + 1 :]
    for blob in (mutated, good_blob[:cut] if cut < len(good_blob) else mutated):
        with pytest.raises(VerificationError):
            sshsig.verify_signature(sshsig.parse_signature(armor(blob)), MESSAGE, namespace="git")


@SETTINGS
@given(st.text(max_size=300))
def test_public_key_line_garbage_only_raises_verification_error(text: str) -> None:
    try:
        key = sshsig.parse_public_key_line(text)
        sshsig.check_supported(key)
    except VerificationError:
        pass
