"""age X25519 keys: generate a site's key pair, read a key file, derive its recipients.

Why not the ``age`` CLI or ``pyrage``: sops cannot generate age keys, the ``age``
binary is not a Python dependency, and ``pyrage`` would add a compiled
extension to every node for one operation that runs at enrollment. X25519 is
already on the node through ``cryptography`` (the trust module verifies SSH
signatures with it), so a key pair costs one ``X25519PrivateKey.generate()``
and a 40-line bech32 encoder. ``cryptography`` is imported inside the functions
that need it, so the CLI's start-up does not pay for it.

The format is age's (https://age-encryption.org/v1): the recipient is the
32-byte X25519 public key in bech32 with HRP ``age`` (lowercase), the identity
is the 32-byte scalar in bech32 with HRP ``age-secret-key-``, written in upper
case. Bech32 here is BIP 173's checksum (not bech32m) without BIP 173's
90-character limit, as age does. The tests check every key against real sops in
both directions.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from reconciler.core.errors import DocumentError, Mark, SecretError
from reconciler.core.source import read_file

RECIPIENT_HRP = "age"
IDENTITY_HRP = "age-secret-key-"
_CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_GENERATOR = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)
MAX_KEY_FILE_BYTES = 64 * 1024


# -- bech32 (BIP 173 checksum, no length limit) ------------------------------------------------


def _generator_sum(top: int) -> int:
    mixed = 0
    for i in range(5):
        if (top >> i) & 1:
            mixed ^= _GENERATOR[i]
    return mixed


# BIP 173's polymod step, with the XOR of generators for each 5-bit top precomputed: a
# fleet's validation checks one recipient per site, 10,000 of them.
_STEP = tuple(_generator_sum(top) for top in range(32))
_WORDS = {c: i for i, c in enumerate(_CHARSET)}


def _polymod(values: Sequence[int]) -> int:
    checksum = 1
    for value in values:
        checksum = ((checksum & 0x1FFFFFF) << 5) ^ value ^ _STEP[checksum >> 25]
    return checksum


def _hrp_expand(hrp: str) -> list[int]:
    return [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]


def _convert_bits(data: Sequence[int], from_bits: int, to_bits: int, pad: bool) -> list[int]:
    acc = 0
    bits = 0
    out: list[int] = []
    max_value = (1 << to_bits) - 1
    for value in data:
        if value < 0 or value >> from_bits:
            raise ValueError("value out of range")
        acc = (acc << from_bits) | value
        bits += from_bits
        while bits >= to_bits:
            bits -= to_bits
            out.append((acc >> bits) & max_value)
    if pad:
        if bits:
            out.append((acc << (to_bits - bits)) & max_value)
    elif bits >= from_bits or ((acc << (to_bits - bits)) & max_value):
        raise ValueError("non-zero padding")
    return out


def bech32_encode(hrp: str, data: bytes) -> str:
    """Encode ``data`` under ``hrp`` (lowercase result)."""
    words = _convert_bits(data, 8, 5, pad=True)
    polymod = _polymod([*_hrp_expand(hrp), *words, 0, 0, 0, 0, 0, 0]) ^ 1
    checksum = [(polymod >> 5 * (5 - i)) & 31 for i in range(6)]
    return hrp + "1" + "".join(_CHARSET[w] for w in words + checksum)


def bech32_decode(text: str) -> tuple[str, bytes]:
    """Decode a bech32 string into (hrp, data); ValueError if it is not valid bech32."""
    if text.lower() != text and text.upper() != text:
        raise ValueError("mixed case")
    text = text.lower()
    pos = text.rfind("1")
    if pos < 1 or pos + 7 > len(text):
        raise ValueError("separator '1' missing or misplaced")
    hrp, rest = text[:pos], text[pos + 1 :]
    if any(ord(c) < 33 or ord(c) > 126 for c in hrp):
        raise ValueError("invalid character in prefix")
    try:
        words = [_WORDS[c] for c in rest]
    except KeyError:
        raise ValueError("invalid character") from None
    if _polymod([*_hrp_expand(hrp), *words]) != 1:
        raise ValueError("checksum mismatch")
    return hrp, bytes(_convert_bits(words[:-6], 5, 8, pad=False))


# -- keys --------------------------------------------------------------------------------------


# The checksum's state after ``age`` and the separator (BIP 173's expanded prefix): each
# recipient's check starts here.
_AGE_STATE = _polymod(_hrp_expand(RECIPIENT_HRP))


def is_recipient(text: str) -> bool:
    """True if ``text`` is an age X25519 recipient (``age1`` + 32 bytes, valid checksum).

    What ``bech32_decode`` would say of it, without decoding it: 32 bytes are 52 five-bit
    words whose last 4 bits are padding (zero), so a recipient is ``age1``, 52 words and
    6 of checksum, 62 characters. A fleet's validation checks one per site.
    """
    if len(text) != 62 or not text.startswith("age1"):
        return False
    words = _WORDS
    state = _AGE_STATE
    step = _STEP
    for char in text[4:]:
        word = words.get(char, -1)
        if word < 0:
            return False
        state = ((state & 0x1FFFFFF) << 5) ^ word ^ step[state >> 25]
    return state == 1 and words[text[55]] & 0xF == 0


def short(recipient: str) -> str:
    """A recipient shortened for messages: ``age1abcd…wxyz``."""
    return recipient if len(recipient) <= 20 else f"{recipient[:10]}…{recipient[-6:]}"


@dataclass(frozen=True)
class Identity:
    """One age X25519 identity (private key). ``repr`` never shows the key."""

    secret: bytes = field(repr=False)

    @property
    def recipient(self) -> str:
        from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
        from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

        public = X25519PrivateKey.from_private_bytes(self.secret).public_key()
        return bech32_encode(RECIPIENT_HRP, public.public_bytes(Encoding.Raw, PublicFormat.Raw))

    def encoded(self) -> str:
        """The identity as age writes it: ``AGE-SECRET-KEY-1…`` (upper case)."""
        return bech32_encode(IDENTITY_HRP, self.secret).upper()


def generate() -> Identity:
    """A new X25519 identity from the operating system's CSPRNG (via ``cryptography``)."""
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        NoEncryption,
        PrivateFormat,
    )

    key = X25519PrivateKey.generate()
    return Identity(key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption()))


def key_file_text(identity: Identity, *, created: datetime | None, comment: str = "") -> str:
    """The key file as ``age-keygen`` writes it (comment lines are ignored by age and sops)."""
    lines = []
    if created is not None:
        lines.append(f"# created: {created.isoformat(timespec='seconds')}")
    if comment:
        lines.extend(f"# {line}" for line in comment.splitlines())
    lines.append(f"# public key: {identity.recipient}")
    lines.append(identity.encoded())
    return "\n".join(lines) + "\n"


def parse_identities(text: str, path: str) -> tuple[Identity, ...]:
    """Every ``AGE-SECRET-KEY-1`` line of a key file; SecretError naming the line otherwise."""
    found: list[Identity] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        try:
            hrp, data = bech32_decode(line)
        except ValueError as exc:
            raise SecretError(
                f"line {number} is not an age identity ({exc}); expected a line starting "
                "with AGE-SECRET-KEY-1 as age-keygen or `outpost secrets init-site` writes it",
                mark=Mark(path, number),
            ) from None
        if hrp != IDENTITY_HRP or len(data) != 32:
            raise SecretError(
                f"line {number} is not an age X25519 identity (prefix {hrp!r}); "
                "expected AGE-SECRET-KEY-1…",
                mark=Mark(path, number),
            )
        found.append(Identity(data))
    if not found:
        raise SecretError(
            "key file holds no age identity (no AGE-SECRET-KEY-1 line)", mark=Mark(path)
        )
    return tuple(found)


def read_key_file(path: Path) -> tuple[Identity, ...]:
    """Read and parse an age key file; SecretError for a missing, unreadable or empty file."""
    name = str(path)
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise SecretError("age key file is not a regular file", mark=Mark(name))
        if info.st_mode & 0o044:
            raise SecretError(
                f"age key file is readable by group or others (mode "
                f"{stat.S_IMODE(info.st_mode):04o}); like ssh with a private key, Outpost "
                "refuses it: `chmod 600` it, and treat the key as exposed if others could "
                "read it",
                mark=Mark(name),
            )
        if info.st_size > MAX_KEY_FILE_BYTES:
            raise SecretError(
                f"age key file is {info.st_size:,} bytes; a key file is a few lines "
                f"(limit {MAX_KEY_FILE_BYTES:,}) — is this the right file?",
                mark=Mark(name),
            )
        # Bounded and without blocking: swapped for a FIFO since the stat, it is refused.
        data = read_file(
            path, name, MAX_KEY_FILE_BYTES, holder="the key's folder", follow_links=True
        )
    except DocumentError as exc:
        raise SecretError(f"age key file: {exc.message}", mark=Mark(name)) from None
    except FileNotFoundError:
        raise SecretError(
            "age key file does not exist; on a node it is installed at enrollment "
            "(agent.yaml spec.ageKey), in CI it comes from OUTPOST_AGE_KEY_FILE",
            mark=Mark(name),
        ) from None
    except PermissionError:
        raise SecretError(
            "age key file is not readable by this user (it should be mode 0600, owned by "
            "the user the agent runs as)",
            mark=Mark(name),
        ) from None
    except OSError as exc:
        raise SecretError(f"cannot read age key file: {exc.strerror}", mark=Mark(name)) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise SecretError("age key file is not text (UTF-8)", mark=Mark(name)) from None
    return parse_identities(text, name)


def key_file_recipients(path: Path) -> tuple[str, ...]:
    """The recipients (public keys) of every identity in a key file."""
    return tuple(identity.recipient for identity in read_key_file(path))


def write_key_file(path: Path, text: str) -> None:
    """Create ``path`` with mode 0600; never overwrite an existing file (a lost key is final).

    ``O_EXCL`` makes the no-overwrite rule atomic, and the mode is set at creation so
    the key is never readable by others, not even for a moment.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        raise SecretError(
            "refusing to overwrite an existing key file; choose a new path "
            "(an overwritten key cannot be recovered)",
            mark=Mark(str(path)),
        ) from None
    except OSError as exc:
        raise SecretError(f"cannot create key file: {exc.strerror}", mark=Mark(str(path))) from None
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, text.encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)
