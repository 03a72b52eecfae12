"""SSH signatures (the SSHSIG format git writes with ``gpg.format=ssh``), verified in-process.

``git verify-commit`` starts ``ssh-keygen -Y verify`` once per commit, which
makes a node that checks every commit since its last apply slow; this module
does the same checks with `cryptography` on bytes handed to it, no I/O.

The format (OpenSSH ``PROTOCOL.sshsig``)::

    byte[6] "SSHSIG"  uint32 version=1  string publickey  string namespace
    string reserved  string hash_algorithm  string signature

and the signature covers ``"SSHSIG" string(namespace) string("")
string(hash_algorithm) string(H(message))``.

What is accepted, and why the rest is refused:

- keys ``ssh-ed25519``, ``ecdsa-sha2-nistp256/384/521`` and ``ssh-rsa`` (RSA of
  2048 to 16384 bits); RSA signatures only as ``rsa-sha2-256``/``rsa-sha2-512`` —
  ``ssh-rsa`` signatures use SHA-1, for which chosen-prefix collisions are
  practical (SHAmbles, 2020);
- message hashes ``sha256`` and ``sha512``, the only two OpenSSH defines;
- the namespace must equal the one the caller expects (``git`` for commits):
  a signature made for ``file`` or ``email`` must never count as a commit
  signature (cross-protocol confusion, the reason SSHSIG has namespaces);
- FIDO security keys (``sk-*``), certificates (``*-cert-v01@openssh.com``),
  post-quantum hybrids and anything unknown are refused with a message naming
  the type found: refusing loudly is better than a key that silently never
  verifies;
- every length is bounded before it is read (``MAX_ARMORED_BYTES``), and
  trailing bytes anywhere are an error, as in OpenSSH.

Every failure is a `VerificationError`; nothing from `cryptography` or
`base64` escapes.

Signing (`sign_message`) exists for one key type only, ``ssh-ed25519``: a
node signs its status reports with the key ``outpost agent keygen`` made. It
writes exactly what ``ssh-keygen -Y sign`` writes (hash ``sha512``, 70-column
armor), so ``ssh-keygen -Y verify`` accepts its signatures and an operator can
check a report by hand.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from reconciler.core.errors import VerificationError

__all__ = [
    "GIT_NAMESPACE",
    "MAX_ARMORED_BYTES",
    "SUPPORTED_KEY_TYPES",
    "PublicKey",
    "SignedData",
    "SshSignature",
    "check_namespace",
    "check_signed_data",
    "check_supported",
    "fingerprint",
    "parse_public_key_blob",
    "parse_public_key_line",
    "parse_signature",
    "prepare_verification",
    "public_key_of",
    "sign_message",
    "verify_signature",
]

GIT_NAMESPACE = "git"
MAX_ARMORED_BYTES = 16 * 1024
"""Largest armored signature read. An RSA-16384 signature is about 6 KiB armored;
anything bigger is refused before it is decoded (bounded inputs)."""

MAX_KEY_LINE_CHARS = 8 * 1024
BEGIN = "-----BEGIN SSH SIGNATURE-----"
END = "-----END SSH SIGNATURE-----"
MAGIC = b"SSHSIG"
_U32 = struct.Struct(">I")
VERSION = 1

ED25519 = "ssh-ed25519"
RSA = "ssh-rsa"
_CURVES: dict[str, tuple[str, ec.EllipticCurve, hashes.HashAlgorithm]] = {
    "ecdsa-sha2-nistp256": ("nistp256", ec.SECP256R1(), hashes.SHA256()),
    "ecdsa-sha2-nistp384": ("nistp384", ec.SECP384R1(), hashes.SHA384()),
    "ecdsa-sha2-nistp521": ("nistp521", ec.SECP521R1(), hashes.SHA512()),
}
SUPPORTED_KEY_TYPES = (ED25519, *_CURVES, RSA)
_RSA_SIGNATURES: dict[str, hashes.HashAlgorithm] = {
    "rsa-sha2-256": hashes.SHA256(),
    "rsa-sha2-512": hashes.SHA512(),
}
_MESSAGE_HASHES: dict[str, Callable[[bytes], bytes]] = {
    "sha256": lambda data: hashlib.sha256(data).digest(),
    "sha512": lambda data: hashlib.sha512(data).digest(),
}
RSA_MIN_BITS = 2048
RSA_MAX_BITS = 16384


def _shown(raw: bytes | str, limit: int = 64) -> str:
    """Attacker-controlled names made safe to print: printable ASCII, bounded length."""
    text = raw.decode("ascii", "replace") if isinstance(raw, bytes) else raw
    clean = "".join(c if 32 <= ord(c) < 127 else "?" for c in text)
    return clean if len(clean) <= limit else clean[:limit] + "…"


def _unsupported_key(key_type: str) -> str:
    shown = _shown(key_type)
    if key_type.endswith("-cert-v01@openssh.com"):
        return (
            f"SSH certificates are not supported (found a {shown} key); "
            "sign with the plain key and list that key"
        )
    if key_type.startswith("sk-"):
        return (
            f"FIDO security keys are not supported (found a {shown} key); "
            f"use one of {', '.join(SUPPORTED_KEY_TYPES)}"
        )
    return f"key type {shown!r} is not supported; use one of {', '.join(SUPPORTED_KEY_TYPES)}"


class _Reader:
    """Bounded reads of SSH wire types (RFC 4251 §5) from one buffer."""

    __slots__ = ("data", "pos", "what")

    def __init__(self, data: bytes, what: str) -> None:
        self.data = data
        self.pos = 0
        self.what = what

    def _fail(self, detail: str) -> VerificationError:
        return VerificationError(f"{self.what} is malformed: {detail}")

    def take(self, count: int, field_name: str) -> bytes:
        end = self.pos + count
        if end > len(self.data):
            raise self._fail(
                f"{field_name} needs {count} bytes but only {len(self.data) - self.pos} remain "
                "(truncated?)"
            )
        chunk = self.data[self.pos : end]
        self.pos = end
        return chunk

    def u32(self, field_name: str) -> int:
        value: int = _U32.unpack(self.take(4, field_name))[0]
        return value

    def string(self, field_name: str) -> bytes:
        data, pos = self.data, self.pos
        if pos + 4 <= len(data):
            start = pos + 4
            end = start + _U32.unpack_from(data, pos)[0]
            if end <= len(data):
                self.pos = end
                return data[start:end]
        return self.take(self.u32(field_name), field_name)  # raises, naming what is missing

    def name(self, field_name: str) -> str:
        raw = self.string(field_name)
        try:
            return raw.decode("ascii")
        except UnicodeDecodeError:
            raise self._fail(f"{field_name} is not ASCII: {_shown(raw)!r}") from None

    def mpint(self, field_name: str) -> int:
        raw = self.string(field_name)
        if raw and raw[0] & 0x80:
            raise self._fail(f"{field_name} is negative")
        return int.from_bytes(raw, "big")

    def end(self) -> None:
        if self.pos != len(self.data):
            raise self._fail(f"{len(self.data) - self.pos} unexpected trailing bytes")


def fingerprint(blob: bytes) -> str:
    """The key's SHA256 fingerprint exactly as ``ssh-keygen -l`` prints it."""
    digest = base64.b64encode(hashlib.sha256(blob).digest()).decode("ascii")
    return "SHA256:" + digest.rstrip("=")


@dataclass(frozen=True)
class PublicKey:
    """An OpenSSH public key: its type name and wire blob (the comment is informational)."""

    key_type: str
    blob: bytes = field(repr=False)
    comment: str = ""

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.blob)

    @property
    def supported(self) -> bool:
        return self.key_type in SUPPORTED_KEY_TYPES

    def line(self) -> str:
        """The key as one ``authorized_keys``-style line."""
        text = f"{self.key_type} {base64.b64encode(self.blob).decode('ascii')}"
        return f"{text} {self.comment}" if self.comment else text

    def __str__(self) -> str:
        return f"{self.key_type} {self.fingerprint}"


def parse_public_key_blob(blob: bytes, *, comment: str = "") -> PublicKey:
    """Read a key's wire blob far enough to name its type; structure is checked on use."""
    reader = _Reader(blob, "public key")
    key_type = reader.name("key type")
    if not key_type:
        raise VerificationError("public key is malformed: empty key type")
    return PublicKey(key_type, blob, comment)


def parse_public_key_line(line: str, *, what: str = "public key") -> PublicKey:
    """Parse ``"ssh-ed25519 AAAA... comment"``; the type named must match the blob's.

    Unsupported types parse (so a trust root can list them and a signature by
    them is refused by name); `check_supported` refuses them where needed.
    """
    if len(line) > MAX_KEY_LINE_CHARS:
        raise VerificationError(
            f"{what} is {len(line):,} characters; the limit is {MAX_KEY_LINE_CHARS:,}"
        )
    parts = line.strip().split(None, 2)
    if len(parts) < 2:
        raise VerificationError(
            f"{what} {_shown(line)!r} is not an OpenSSH public key "
            "(expected 'TYPE BASE64 [COMMENT]', e.g. 'ssh-ed25519 AAAAC3Nza... alice')"
        )
    key_type, encoded = parts[0], parts[1]
    try:
        blob = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise VerificationError(
            f"{what} {_shown(key_type)} {_shown(encoded, 24)!r}: the key is not valid base64"
        ) from None
    key = parse_public_key_blob(blob, comment=parts[2].strip() if len(parts) > 2 else "")
    if key.key_type != key_type:
        raise VerificationError(
            f"{what} says {_shown(key_type)!r} but its key data is a {_shown(key.key_type)!r} key"
        )
    return key


def check_supported(key: PublicKey) -> None:
    """Refuse a key Outpost cannot verify, naming its type; also checks the key's structure."""
    if not key.supported:
        raise VerificationError(_unsupported_key(key.key_type))
    _verifier(key.blob)


_Verify = Callable[[str, bytes, bytes], None]


@lru_cache(maxsize=32768)
def _verifier(blob: bytes) -> _Verify:
    """Build (once per key) a function ``(sig_algorithm, sig_bytes, data) -> None``.

    Cached because the same few keys sign thousands of commits, and a collector
    verifies the reports of every node of a fleet (a key each, tens of thousands;
    an entry is a few hundred bytes): building the key object again for each
    report would cost a good part of a verification.
    """
    reader = _Reader(blob, "public key")
    key_type = reader.name("key type")
    try:
        if key_type == ED25519:
            raw = reader.string("ed25519 key")
            reader.end()
            if len(raw) != 32:
                raise VerificationError(
                    f"public key is malformed: an ed25519 key has 32 bytes, found {len(raw)}"
                )
            return _ed25519(Ed25519PublicKey.from_public_bytes(raw))
        if key_type in _CURVES:
            curve_name, curve, digest = _CURVES[key_type]
            found_curve = reader.name("curve name")
            point = reader.string("ecdsa point")
            reader.end()
            if found_curve != curve_name:
                raise VerificationError(
                    f"public key is malformed: a {key_type} key names curve {_shown(found_curve)!r}"
                )
            if not point or point[0] != 4:
                raise VerificationError(
                    "public key is malformed: the ecdsa point is not in uncompressed form"
                )
            return _ecdsa(
                key_type, ec.EllipticCurvePublicKey.from_encoded_point(curve, point), digest
            )
        if key_type == RSA:
            exponent = reader.mpint("rsa exponent")
            modulus = reader.mpint("rsa modulus")
            reader.end()
            bits = modulus.bit_length()
            if not RSA_MIN_BITS <= bits <= RSA_MAX_BITS:
                raise VerificationError(
                    f"RSA key of {bits} bits refused: Outpost accepts {RSA_MIN_BITS} to "
                    f"{RSA_MAX_BITS} bits"
                )
            return _rsa(rsa.RSAPublicNumbers(exponent, modulus).public_key(), (bits + 7) // 8)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise VerificationError(f"public key {key_type} is invalid: {exc}") from None
    raise VerificationError(_unsupported_key(key_type))


def _bad_signature() -> VerificationError:
    return VerificationError("the signature does not match the signed data")


def _ed25519(key: Ed25519PublicKey) -> _Verify:
    def verify(algorithm: str, signature: bytes, data: bytes) -> None:
        sig = _Reader(signature, "ed25519 signature")
        raw = sig.string("ed25519 signature")
        sig.end()
        if algorithm != ED25519:
            raise VerificationError(
                f"signature algorithm {_shown(algorithm)!r} does not fit an ed25519 key"
            )
        if len(raw) != 64:
            raise VerificationError(
                f"ed25519 signature is malformed: 64 bytes expected, found {len(raw)}"
            )
        try:
            key.verify(raw, data)
        except InvalidSignature:
            raise _bad_signature() from None

    return verify


def _ecdsa(key_type: str, key: ec.EllipticCurvePublicKey, digest: hashes.HashAlgorithm) -> _Verify:
    def verify(algorithm: str, signature: bytes, data: bytes) -> None:
        if algorithm != key_type:
            raise VerificationError(
                f"signature algorithm {_shown(algorithm)!r} does not fit a {key_type} key"
            )
        outer = _Reader(signature, "ecdsa signature")
        inner = _Reader(outer.string("ecdsa signature"), "ecdsa signature")
        outer.end()
        r = inner.mpint("ecdsa r")
        s = inner.mpint("ecdsa s")
        inner.end()
        try:
            key.verify(encode_dss_signature(r, s), data, ec.ECDSA(digest))
        except InvalidSignature:
            raise _bad_signature() from None

    return verify


def _rsa(key: rsa.RSAPublicKey, size: int) -> _Verify:
    def verify(algorithm: str, signature: bytes, data: bytes) -> None:
        if algorithm == RSA:
            raise VerificationError(
                "RSA signature uses ssh-rsa (SHA-1), which is refused; sign with "
                "rsa-sha2-256 or rsa-sha2-512 (any OpenSSH since 8.2 does by default)"
            )
        digest = _RSA_SIGNATURES.get(algorithm)
        if digest is None:
            raise VerificationError(
                f"signature algorithm {_shown(algorithm)!r} does not fit an RSA key "
                "(expected rsa-sha2-256 or rsa-sha2-512)"
            )
        sig = _Reader(signature, "rsa signature")
        raw = sig.string("rsa signature")
        sig.end()
        if not raw or len(raw) > size:
            raise VerificationError(
                f"rsa signature is malformed: {len(raw)} bytes for a {size}-byte modulus"
            )
        try:
            # OpenSSH left-pads short signatures to the modulus length; so do we.
            key.verify(raw.rjust(size, b"\0"), data, padding.PKCS1v15(), digest)
        except InvalidSignature:
            raise _bad_signature() from None

    return verify


@dataclass(frozen=True)
class SshSignature:
    """A parsed SSHSIG blob: who claims to have signed, for what namespace, with what."""

    public_key: PublicKey
    namespace: str
    hash_algorithm: str
    signature_algorithm: str
    signature: bytes = field(repr=False)


def _dearmor(armored: bytes | str) -> bytes:
    if len(armored) > MAX_ARMORED_BYTES:
        raise VerificationError(
            f"signature is {len(armored):,} bytes; the limit is {MAX_ARMORED_BYTES:,} bytes "
            "(refused unread)"
        )
    if isinstance(armored, bytes):
        try:
            text = armored.decode("ascii")
        except UnicodeDecodeError:
            raise VerificationError(
                "signature is not an SSH signature: it contains non-ASCII bytes"
            ) from None
    else:
        text = armored
    text = text.strip()
    if text.startswith("-----BEGIN PGP SIGNATURE-----"):
        raise VerificationError(
            "signature is an OpenPGP signature; Outpost verifies SSH signatures "
            "(git config gpg.format=ssh)"
        )
    if text.startswith("-----BEGIN SIGNED MESSAGE-----"):
        raise VerificationError(
            "signature is an X.509 (gpgsm) signature; Outpost verifies SSH signatures "
            "(git config gpg.format=ssh)"
        )
    if not text.startswith(BEGIN):
        raise VerificationError(
            f"signature is not an SSH signature: expected {BEGIN!r}, found "
            f"{_shown(text.partition(chr(10))[0], 40)!r}"
        )
    if not text.endswith(END):
        raise VerificationError(f"signature is truncated: {END!r} is missing")
    body = "".join(text[len(BEGIN) : -len(END)].split())
    try:
        return base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        raise VerificationError("signature is malformed: its body is not valid base64") from None


def parse_signature(armored: bytes | str) -> SshSignature:
    """Parse an armored SSHSIG (as in a commit's ``gpgsig`` header). No verification yet."""
    blob = _dearmor(armored)
    reader = _Reader(blob, "signature")
    magic = reader.take(len(MAGIC), "magic")
    if magic != MAGIC:
        raise VerificationError(f"signature is malformed: magic {_shown(magic)!r}, expected SSHSIG")
    version = reader.u32("version")
    if version != VERSION:
        raise VerificationError(f"signature version {version} is not supported (expected 1)")
    key = parse_public_key_blob(reader.string("public key"))
    namespace = reader.string("namespace")
    reader.string("reserved")
    hash_algorithm = reader.name("hash algorithm")
    signature = reader.string("signature")
    reader.end()
    if key.key_type not in SUPPORTED_KEY_TYPES:
        raise VerificationError(_unsupported_key(key.key_type))
    inner = _Reader(signature, "signature")
    signature_algorithm = inner.name("signature algorithm")
    return SshSignature(
        public_key=key,
        namespace=namespace.decode("utf-8", "replace"),
        hash_algorithm=hash_algorithm,
        signature_algorithm=signature_algorithm,
        signature=signature[inner.pos :],
    )


def check_namespace(signature: SshSignature, namespace: str) -> None:
    """Refuse a signature made for another namespace (``file``, ``email``) than ``namespace``."""
    if signature.namespace != namespace:
        raise VerificationError(
            f"signature was made for namespace {_shown(signature.namespace)!r}, not "
            f"{namespace!r} (a signature made for another purpose must not count here)"
        )


def verify_signature(signature: SshSignature, message: bytes, *, namespace: str) -> None:
    """Check ``signature`` over ``message`` for ``namespace``; raise `VerificationError` if not.

    The caller decides separately whether the embedded key is trusted: this
    only proves that the holder of ``signature.public_key`` signed ``message``.
    """
    check_signed_data(prepare_verification(signature, message, namespace=namespace))


@dataclass(frozen=True)
class SignedData:
    """The public-key step of `verify_signature`, everything else already checked: the
    key's blob, the signature algorithm and bytes, and the exact data they must cover.

    Small and picklable, so that a busy verifier (the collector) can hand the
    cryptography to another process (`check_signed_data` there).
    """

    key_blob: bytes
    algorithm: str
    signature: bytes = field(repr=False)
    data: bytes = field(repr=False)


def prepare_verification(signature: SshSignature, message: bytes, *, namespace: str) -> SignedData:
    """`verify_signature` up to the public-key step: the namespace and the hash algorithm are
    checked and ``message`` hashed; `VerificationError` if either is wrong."""
    check_namespace(signature, namespace)
    hasher = _MESSAGE_HASHES.get(signature.hash_algorithm)
    if hasher is None:
        raise VerificationError(
            f"signature hash algorithm {_shown(signature.hash_algorithm)!r} is not supported "
            "(expected sha256 or sha512)"
        )
    return SignedData(
        signature.public_key.blob,
        signature.signature_algorithm,
        signature.signature,
        _signed_data(message, namespace, signature.hash_algorithm, hasher),
    )


def check_signed_data(signed: SignedData) -> None:
    """The public-key step: `VerificationError` unless the signature covers the data."""
    _verifier(signed.key_blob)(signed.algorithm, signed.signature, signed.data)


def _signed_data(
    message: bytes, namespace: str, hash_algorithm: str, hasher: Callable[[bytes], bytes]
) -> bytes:
    """What an SSHSIG signature covers (``PROTOCOL.sshsig``, "Signed Data")."""
    ns = namespace.encode("utf-8")
    algorithm = hash_algorithm.encode("ascii")
    parts = (ns, b"", algorithm, hasher(message))
    return MAGIC + b"".join(_ssh_string(part) for part in parts)


def _ssh_string(data: bytes) -> bytes:
    return _U32.pack(len(data)) + data


ARMOR_COLUMNS = 70
"""ssh-keygen wraps the armored body at 70 characters; so do we."""


def public_key_of(private_key: Ed25519PrivateKey, *, comment: str = "") -> PublicKey:
    """The OpenSSH public key of an ed25519 private key."""
    raw = private_key.public_key().public_bytes_raw()
    return PublicKey(ED25519, _ssh_string(ED25519.encode()) + _ssh_string(raw), comment)


def sign_message(private_key: Ed25519PrivateKey, message: bytes, *, namespace: str) -> str:
    """An armored SSHSIG over ``message`` for ``namespace``, as ``ssh-keygen -Y sign`` makes it.

    The namespace must not be empty (OpenSSH refuses one too): a signature without a
    purpose could be replayed for any purpose.
    """
    if not namespace:
        raise VerificationError("refusing to sign without a namespace")
    hash_algorithm = "sha512"
    signed = _signed_data(message, namespace, hash_algorithm, _MESSAGE_HASHES[hash_algorithm])
    raw = private_key.sign(signed)
    blob = b"".join(
        (
            MAGIC,
            _U32.pack(VERSION),
            _ssh_string(public_key_of(private_key).blob),
            _ssh_string(namespace.encode("utf-8")),
            _ssh_string(b""),
            _ssh_string(hash_algorithm.encode("ascii")),
            _ssh_string(_ssh_string(ED25519.encode()) + _ssh_string(raw)),
        )
    )
    body = base64.b64encode(blob).decode("ascii")
    lines = [body[i : i + ARMOR_COLUMNS] for i in range(0, len(body), ARMOR_COLUMNS)]
    return "\n".join((BEGIN, *lines, END)) + "\n"
