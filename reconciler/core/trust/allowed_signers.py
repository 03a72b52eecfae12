"""The node's trust root: git's ``allowed_signers`` file (``man ssh-keygen``, ALLOWED SIGNERS).

The file is installed on the node at enrollment and never read from the
repository: whoever controls the repository must not be able to choose who
is trusted (TUF's "root of trust out of band"). Keys listed here are the
*root signers*: they may change every path, and only they may change
``policies/**``.

Format, one signer per line, ``#`` comments and blank lines ignored::

    principals [options] keytype base64-key [comment]

- ``principals``: a comma-separated pattern list (``*``, ``?``, ``!negation``),
  quoted if it contains spaces;
- options, comma-separated, keywords case-insensitive, values in double quotes
  (as ssh-keygen requires): ``namespaces="git,file"`` (a pattern list; without
  it every namespace is allowed), ``valid-after="YYYYMMDD[HHMM[SS]][Z]"`` and
  ``valid-before=...`` (inclusive bounds; without ``Z`` the time is local to the
  node, as ssh-keygen reads it), ``cert-authority``.

Departures from ssh-keygen, all in the fail-closed direction:

- ssh-keygen logs and skips a line it cannot parse; a trust root with a typo
  in a ``valid-before`` would then silently trust less *or more* than the
  operator meant, so any bad line refuses the whole file (`ConfigError`, with
  file and line);
- ``cert-authority`` lines are refused: Outpost verifies plain keys only;
- a file without a single usable key is refused (an empty trust root must
  never mean "trust nothing and carry on", nor "trust everything").

Errors are `ConfigError`: the trust root is the node's own configuration, so
a bad one is fixed on the node, not by a new commit.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo

from reconciler.core.errors import ConfigError, Mark, VerificationError
from reconciler.core.trust.sshsig import PublicKey, check_supported, parse_public_key_line

__all__ = [
    "MAX_TRUST_ROOT_BYTES",
    "AllowedSigner",
    "TrustRoot",
    "match_pattern_list",
    "parse_allowed_signers",
]

MAX_TRUST_ROOT_BYTES = 1024 * 1024
_OPTIONS = ("cert-authority", "namespaces", "valid-after", "valid-before")
_TIMESTAMP = re.compile(r"^(\d{4})(\d{2})(\d{2})(?:(\d{2})(\d{2})(\d{2})?)?([zZ])?$")


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    out = []
    for char in pattern:
        if char == "*":
            out.append(".*")
        elif char == "?":
            out.append(".")
        else:
            out.append(re.escape(char))
    return re.compile("".join(out), re.DOTALL)


def match_pattern_list(name: str, patterns: tuple[str, ...]) -> bool:
    """OpenSSH ``match_pattern_list``: a ``!`` pattern that matches vetoes, else any match wins."""
    matched = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        body = pattern[1:] if negated else pattern
        if _pattern_regex(body).fullmatch(name):
            if negated:
                return False
            matched = True
    return matched


def _fmt_time(value: int) -> str:
    return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


@dataclass(frozen=True)
class AllowedSigner:
    """One line of the trust root."""

    principals: tuple[str, ...]
    key: PublicKey
    namespaces: tuple[str, ...] | None = None
    valid_after: int | None = None
    valid_before: int | None = None
    mark: Mark = field(default_factory=lambda: Mark("allowed_signers"))

    @property
    def principal(self) -> str:
        """How the signer is shown in verdicts: its principals as written."""
        return ",".join(self.principals)

    def namespace_problem(self, namespace: str) -> str | None:
        """Why this line does not allow ``namespace``, or None if it does."""
        if self.namespaces is None or match_pattern_list(namespace, self.namespaces):
            return None
        return (
            f"{self.mark} allows key {self.key.fingerprint} only for namespaces "
            f'"{",".join(self.namespaces)}", not "{namespace}"'
        )

    def validity_problem(self, when: int) -> str | None:
        """Why the key is not valid at ``when`` (unix seconds), or None if it is.

        Bounds are inclusive, as in ssh-keygen (``valid-before`` is "at or before").
        """
        if self.valid_after is not None and when < self.valid_after:
            return (
                f"key {self.key.fingerprint} of {self.principal} is not valid yet at committer "
                f"time {_fmt_time(when)} (valid-after {_fmt_time(self.valid_after)}, {self.mark})"
            )
        if self.valid_before is not None and when > self.valid_before:
            return (
                f"key {self.key.fingerprint} of {self.principal} expired before committer time "
                f"{_fmt_time(when)} (valid-before {_fmt_time(self.valid_before)}, {self.mark})"
            )
        return None


@dataclass(frozen=True)
class TrustRoot:
    """The parsed trust root, indexed by key blob (several lines may share a key)."""

    signers: tuple[AllowedSigner, ...]
    source: str = "allowed_signers"
    _by_key: Mapping[bytes, tuple[AllowedSigner, ...]] = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        if not any(signer.key.supported for signer in self.signers):
            raise ConfigError(
                "the trust root lists no usable key; refusing to verify anything "
                "(install the root signers' keys at enrollment)",
                mark=Mark(self.source),
            )
        index: dict[bytes, list[AllowedSigner]] = {}
        for signer in self.signers:
            index.setdefault(signer.key.blob, []).append(signer)
        object.__setattr__(self, "_by_key", {k: tuple(v) for k, v in index.items()})

    def find(self, key: PublicKey) -> tuple[AllowedSigner, ...]:
        """Every line that lists ``key`` (empty if the key is not a root signer)."""
        return self._by_key.get(key.blob, ())

    def __iter__(self) -> Iterator[AllowedSigner]:
        return iter(self.signers)

    def __len__(self) -> int:
        return len(self.signers)


def _read_principals(text: str, mark: Mark) -> tuple[str, str]:
    if text.startswith('"'):
        end = text.find('"', 1)
        if end < 0:
            raise ConfigError("principals: missing closing quote", mark=mark)
        return text[1:end], text[end + 1 :]
    match = re.match(r"\S+", text)
    assert match is not None
    return match.group(0), text[match.end() :]


def _split_options(text: str, mark: Mark) -> tuple[str, str]:
    """Options run until the first whitespace outside double quotes."""
    quoted = False
    for index, char in enumerate(text):
        if char == '"':
            quoted = not quoted
        elif char.isspace() and not quoted:
            return text[:index], text[index:]
    if quoted:
        raise ConfigError("options: missing closing quote", mark=mark)
    return text, ""


def _options(text: str, mark: Mark) -> Iterator[tuple[str, str | None]]:
    pos = 0
    while pos < len(text):
        match = re.match(r"([A-Za-z-]+)", text[pos:])
        if match is None:
            raise ConfigError(f"options: unexpected {text[pos : pos + 20]!r}", mark=mark)
        name = match.group(1).lower()
        pos += match.end()
        value: str | None = None
        if text.startswith("=", pos):
            pos += 1
            if not text.startswith('"', pos):
                raise ConfigError(
                    f"option {name}= needs its value in double quotes, as ssh-keygen "
                    f'requires (e.g. {name}="...")',
                    mark=mark,
                )
            pos += 1
            chars = []
            while pos < len(text) and text[pos] != '"':
                if text[pos] == "\\" and text.startswith('"', pos + 1):
                    pos += 1
                chars.append(text[pos])
                pos += 1
            if pos >= len(text):
                raise ConfigError(f"option {name}: missing closing quote", mark=mark)
            pos += 1
            value = "".join(chars)
        yield name, value
        if pos < len(text):
            if text[pos] != ",":
                raise ConfigError(
                    f"options: expected ',' after {name}, found {text[pos : pos + 20]!r}", mark=mark
                )
            pos += 1
            if pos == len(text):
                raise ConfigError("options: trailing ','", mark=mark)


def _timestamp(value: str, name: str, mark: Mark, local_tz: tzinfo | None) -> int:
    match = _TIMESTAMP.match(value)
    if match is None:
        raise ConfigError(
            f'{name}="{value}" is not a time; expected YYYYMMDD, YYYYMMDDHHMM or '
            "YYYYMMDDHHMMSS, optionally followed by Z for UTC",
            mark=mark,
        )
    year, month, day, hour, minute, second, zulu = match.groups()
    try:
        naive = datetime(
            int(year), int(month), int(day), int(hour or 0), int(minute or 0), int(second or 0)
        )
    except ValueError as exc:
        raise ConfigError(f'{name}="{value}" is not a valid date: {exc}', mark=mark) from None
    if zulu:
        aware = naive.replace(tzinfo=UTC)
    elif local_tz is None:
        aware = naive.astimezone()  # the node's local zone, as ssh-keygen's mktime()
    else:
        aware = naive.replace(tzinfo=local_tz)
    return int(aware.timestamp())


def _patterns(value: str, name: str, mark: Mark) -> tuple[str, ...]:
    items = tuple(value.split(","))
    if not value or any(not item or item == "!" for item in items):
        raise ConfigError(f'{name}="{value}" has an empty pattern', mark=mark)
    return items


def _reads_as_key(text: str) -> bool:
    try:
        parse_public_key_line(text.lstrip())
    except VerificationError:
        return False
    return True


def _looks_like_options(token: str) -> bool:
    keyword = re.split(r"[=,]", token, maxsplit=1)[0].lower()
    return "=" in token or keyword in _OPTIONS


def _parse_line(text: str, mark: Mark, local_tz: tzinfo | None) -> AllowedSigner:
    principals_text, rest = _read_principals(text, mark)
    principals = _patterns(principals_text, "principals", mark)
    rest = rest.lstrip()
    if not rest:
        raise ConfigError("missing key after the principals", mark=mark)
    namespaces: tuple[str, ...] | None = None
    valid_after: int | None = None
    valid_before: int | None = None
    # As ssh-keygen: the field after the principals is the key if it reads as one,
    # otherwise it is the options and the key follows.
    key: PublicKey | None = None
    try:
        key = parse_public_key_line(rest, what="key")
    except VerificationError as exc:
        key_problem = exc.message
    if key is None:
        first, *tail = rest.split(None, 1)
        if '"' in first or _looks_like_options(first):
            options_text, after = _split_options(rest, mark)
        elif tail and _reads_as_key(tail[0]):
            options_text, after = first, tail[0]
        else:
            raise ConfigError(key_problem, mark=mark)
        rest = after.lstrip()
        if not rest:
            raise ConfigError("missing key after the options", mark=mark)
        seen: set[str] = set()
        for name, value in _options(options_text, mark):
            if name in seen:
                raise ConfigError(f"option {name} is given twice", mark=mark)
            seen.add(name)
            if name == "cert-authority":
                raise ConfigError(
                    "cert-authority lines are not supported: Outpost verifies plain keys, "
                    "not SSH certificates; list each signer's own key instead",
                    mark=mark,
                )
            if name not in _OPTIONS:
                raise ConfigError(
                    f"unknown option {name!r}; allowed: namespaces, valid-after, valid-before",
                    mark=mark,
                )
            if value is None:
                raise ConfigError(f'option {name} needs a value: {name}="..."', mark=mark)
            if name == "namespaces":
                namespaces = _patterns(value, name, mark)
            elif name == "valid-after":
                valid_after = _timestamp(value, name, mark, local_tz)
            else:
                valid_before = _timestamp(value, name, mark, local_tz)
        try:
            key = parse_public_key_line(rest, what="key")
        except VerificationError as exc:
            raise ConfigError(exc.message, mark=mark) from None
    if valid_after is not None and valid_before is not None and valid_before <= valid_after:
        raise ConfigError("valid-before is not later than valid-after", mark=mark)
    try:
        if key.supported:
            check_supported(key)
    except VerificationError as exc:
        raise ConfigError(exc.message, mark=mark) from None
    return AllowedSigner(principals, key, namespaces, valid_after, valid_before, mark)


def parse_allowed_signers(
    data: bytes, source: str = "allowed_signers", *, local_tz: tzinfo | None = None
) -> TrustRoot:
    """Parse a trust root. ``local_tz`` reads times without ``Z``; None = the node's zone.

    Keys of types Outpost cannot verify (FIDO ``sk-*`` keys, say) are kept, so
    that a signature by one is refused by name rather than as "unknown key".
    """
    if len(data) > MAX_TRUST_ROOT_BYTES:
        raise ConfigError(
            f"trust root is {len(data):,} bytes; the limit is {MAX_TRUST_ROOT_BYTES:,}",
            mark=Mark(source),
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError("trust root is not UTF-8 text", mark=Mark(source, line)) from None
    signers = []
    for number, raw in enumerate(text.split("\n"), start=1):
        content = raw.strip()
        if not content or content.startswith("#"):
            continue
        signers.append(_parse_line(content, Mark(source, number), local_tz))
    if not signers:
        raise ConfigError(
            "the trust root is empty; refusing to verify anything (install the root "
            "signers' keys at enrollment)",
            mark=Mark(source),
        )
    return TrustRoot(tuple(signers), source)
