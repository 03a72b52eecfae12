"""The trust root: git's allowed_signers format, checked against ssh-keygen where it decides."""

from __future__ import annotations

import contextlib
import subprocess
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from trust_git import Key, make_key

from reconciler.core.errors import ConfigError
from reconciler.core.trust.allowed_signers import match_pattern_list, parse_allowed_signers


def parse(text: str, local_tz: timezone = UTC):  # type: ignore[no-untyped-def]
    return parse_allowed_signers(text.encode(), "allowed_signers", local_tz=local_tz)


def ts(*args: int) -> int:
    return int(datetime(*args, tzinfo=UTC).timestamp())  # type: ignore[misc]


def test_full_line(keys: dict[str, Key]) -> None:
    root = parse(
        "# roots\n\n"
        f'alice@example.com,ops-*@example.com NAMESPACES="git,file",valid-after="20260101",'
        f'Valid-Before="20261231235959Z" {keys["root"].public_line}\n'
        f'"bob smith@example.com" {keys["root2"].public_line}\n'
    )
    alice, bob = root.signers
    assert alice.principals == ("alice@example.com", "ops-*@example.com")
    assert alice.principal == "alice@example.com,ops-*@example.com"
    assert alice.namespaces == ("git", "file")
    assert alice.valid_after == ts(2026, 1, 1)
    assert alice.valid_before == ts(2026, 12, 31, 23, 59, 59)
    assert str(alice.mark) == "allowed_signers:3"
    assert bob.principals == ("bob smith@example.com",)
    assert bob.namespaces is None and bob.valid_after is None and bob.valid_before is None
    assert root.find(alice.key) == (alice,)
    assert len(root) == 2


def test_times_without_z_are_local_to_the_node(keys: dict[str, Key]) -> None:
    berlin_winter = timezone(timedelta(hours=1))
    (line,) = parse(
        f'a valid-before="202601011200" {keys["root"].public_line}', local_tz=berlin_winter
    ).signers
    assert line.valid_before == ts(2026, 1, 1, 11, 0)


def test_validity_bounds_are_inclusive(keys: dict[str, Key]) -> None:
    (line,) = parse(
        f'a valid-after="20260101Z",valid-before="20260201Z" {keys["root"].public_line}'
    ).signers
    assert line.validity_problem(ts(2026, 1, 1)) is None
    assert line.validity_problem(ts(2026, 2, 1)) is None
    assert "not valid yet" in (line.validity_problem(ts(2026, 1, 1) - 1) or "")
    assert "expired" in (line.validity_problem(ts(2026, 2, 1) + 1) or "")


@pytest.mark.parametrize("offset", [-1, 0, 1])
def test_validity_agrees_with_ssh_keygen(offset: int, keys: dict[str, Key], tmp_path: Path) -> None:
    """ssh-keygen -Y verify -Overify-time is the reference for the bounds."""
    key = keys["root"]
    line = f'alice valid-after="20260101Z",valid-before="20260301120000Z" {key.public_line}'
    allowed = tmp_path / "allowed_signers"
    allowed.write_text(line + "\n")
    message = tmp_path / "message"
    message.write_bytes(b"hello\n")
    subprocess.run(
        ["ssh-keygen", "-q", "-Y", "sign", "-n", "git", "-f", str(key.private), str(message)],
        check=True,
        capture_output=True,
        stdin=subprocess.DEVNULL,
    )
    (entry,) = parse(line).signers
    for bound in (ts(2026, 1, 1), ts(2026, 3, 1, 12)):
        when = bound + offset
        stamp = datetime.fromtimestamp(when, UTC).strftime("%Y%m%d%H%M%SZ")
        done = subprocess.run(
            [
                "ssh-keygen",
                "-Y",
                "verify",
                "-f",
                str(allowed),
                "-I",
                "alice",
                "-n",
                "git",
                "-s",
                f"{message}.sig",
                f"-Overify-time={stamp}",
            ],
            input=b"hello\n",
            capture_output=True,
            check=False,
        )
        assert (done.returncode == 0) == (entry.validity_problem(when) is None), stamp


def test_namespaces_are_pattern_lists(keys: dict[str, Key]) -> None:
    (line,) = parse(f'a namespaces="g*,!gitx" {keys["root"].public_line}').signers
    assert line.namespace_problem("git") is None
    assert line.namespace_problem("gitx") is not None
    assert line.namespace_problem("file") == (
        f'allowed_signers:1 allows key {line.key.fingerprint} only for namespaces "g*,!gitx", '
        'not "file"'
    )


@pytest.mark.parametrize(
    ("name", "patterns", "expected"),
    [
        ("alice@example.com", ("*@example.com",), True),
        ("mallory@example.com", ("*@example.com", "!mallory@*"), False),
        ("al@x", ("a?@x",), True),
        ("alice@x", ("a?@x",), False),
        ("git", ("file", "email"), False),
    ],
)
def test_match_pattern_list(name: str, patterns: tuple[str, ...], expected: bool) -> None:
    assert match_pattern_list(name, patterns) is expected


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("a cert-authority {key}", "allowed_signers:1: cert-authority lines are not supported"),
        (
            "a valid-before=20260101 {key}",
            "allowed_signers:1: option valid-before= needs its value in double quotes",
        ),
        ("a no-touch-required {key}", "allowed_signers:1: unknown option 'no-touch-required'"),
        ('a foo="bar" {key}', "allowed_signers:1: unknown option 'foo'"),
        (
            'a namespaces="git",namespaces="file" {key}',
            "allowed_signers:1: option namespaces is given twice",
        ),
        (
            'a valid-before="20261301" {key}',
            'allowed_signers:1: valid-before="20261301" is not a valid date',
        ),
        (
            'a valid-before="2026-01-01" {key}',
            'allowed_signers:1: valid-before="2026-01-01" is not a time',
        ),
        (
            'a valid-after="20260201",valid-before="20260101" {key}',
            "allowed_signers:1: valid-before is not later than valid-after",
        ),
        (
            'a namespaces="git,,file" {key}',
            'allowed_signers:1: namespaces="git,,file" has an empty pattern',
        ),
        ("a", "allowed_signers:1: missing key after the principals"),
        ('a namespaces="git"', "allowed_signers:1: missing key after the options"),
        ('"a {key}', "allowed_signers:1: principals: missing closing quote"),
        ("a ssh-ed25519 AAAA", "allowed_signers:1: public key is malformed"),
        (
            "a ssh-ed25519 ###",
            "allowed_signers:1: key ssh-ed25519 '###': the key is not valid base64",
        ),
        ("", "allowed_signers: the trust root is empty"),
        ("# only a comment\n\n", "allowed_signers: the trust root is empty"),
    ],
)
def test_refused_lines(line: str, expected: str, keys: dict[str, Key]) -> None:
    with pytest.raises(ConfigError) as caught:
        parse(line.format(key=keys["root"].public_line))
    assert str(caught.value).startswith(expected)


def test_unsupported_keys_are_kept_but_not_enough(key_dir: Path) -> None:
    sk = (
        "sk-ssh-ed25519@openssh.com AAAAGnNrLXNzaC1lZDI1NTE5QG9wZW5zc2guY29tAAAAIJsaDYXQYruc6bi"
        "lCYDIK4YSOeG+zmrRO2M9t03//7LHAAAABHNzaDo= yubikey"
    )
    with pytest.raises(ConfigError, match="lists no usable key"):
        parse(f"a {sk}")
    other = make_key(key_dir, "usable")
    root = parse(f"a {sk}\nb {other.public_line}")
    assert [s.key.supported for s in root.signers] == [False, True]


def test_non_utf8_and_oversized_files() -> None:
    with pytest.raises(ConfigError, match="allowed_signers:2: trust root is not UTF-8"):
        parse_allowed_signers(b"# x\n\xff\n")
    with pytest.raises(ConfigError, match="the limit is 1,048,576"):
        parse_allowed_signers(b"#" * (1024 * 1024 + 1))


# --- properties ------------------------------------------------------------------------------

SETTINGS = settings(max_examples=300, deadline=None)


@SETTINGS
@given(st.text(max_size=400))
def test_garbage_only_raises_config_error(text: str) -> None:
    with contextlib.suppress(ConfigError):
        parse(text)


_principal = st.from_regex(r"[a-z*?][a-z0-9.*?@-]{0,20}", fullmatch=True)
_stamp = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2090, 1, 1)).map(
    lambda d: d.replace(microsecond=0)
)


@SETTINGS
@given(
    principals=st.lists(_principal, min_size=1, max_size=4),
    namespaces=st.none()
    | st.lists(st.sampled_from(["git", "file", "email", "g*"]), min_size=1, max_size=3),
    after=st.none() | _stamp,
    seconds=st.booleans(),
)
def test_generated_lines_round_trip(
    principals: list[str],
    namespaces: list[str] | None,
    after: datetime | None,
    seconds: bool,
    keys: dict[str, Key],
) -> None:
    options = []
    if namespaces is not None:
        options.append(f'namespaces="{",".join(namespaces)}"')
    if after is not None:
        stamp = after.strftime("%Y%m%d%H%M%S" if seconds else "%Y%m%d%H%M")
        options.append(f'valid-after="{stamp}Z"')
    option_text = (",".join(options) + " ") if options else ""
    (line,) = parse(f"{','.join(principals)} {option_text}{keys['pos'].public_line}").signers
    assert line.principals == tuple(principals)
    assert line.namespaces == (tuple(namespaces) if namespaces is not None else None)
    if after is not None:
        expected = after if seconds else after.replace(second=0)
        assert line.valid_after == int(expected.replace(tzinfo=UTC).timestamp())
    assert line.key.blob == keys["pos"].blob
