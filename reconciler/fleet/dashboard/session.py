"""The dashboard's login session: a cookie naming a bearer token, signed with HMAC-SHA256.

The cookie holds ``<token name>|<expiry>`` and an HMAC of both under a key
(``--session-key FILE``; without one, a random key per process: sessions end
when the collector restarts). It is set ``Secure; HttpOnly; SameSite=Strict;
Path=/dashboard``. A session is good while it has not expired **and** its
token still exists: ``outpost fleet token remove NAME`` ends its sessions
too (within the collector's 10 s token cache).

The token itself never goes into the cookie: a stolen cookie lasts at most
`SESSION_SECONDS` and is revoked with the token.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from pathlib import Path

from reconciler.core.errors import ConfigError, DocumentError

__all__ = ["COOKIE", "SESSION_SECONDS", "SessionSigner", "load_key"]

COOKIE = "outpost_session"
SESSION_SECONDS = 12 * 3600
"""One shift: a wall screen logs in again each morning."""
_MAX_COOKIE = 512
_MAX_KEY_FILE = 64 * 1024  # a key is its first 4 KiB; a file far larger is not a key file
_HOLDER = "the collector's configuration"


def load_key(path: Path | None) -> bytes:
    """The signing key from ``path`` (at least 32 bytes), or a fresh random one."""
    if path is None:
        return os.urandom(32)
    from reconciler.core.source import read_file

    try:
        data = read_file(path, str(path), _MAX_KEY_FILE, holder=_HOLDER, follow_links=True)
    except DocumentError as exc:
        raise ConfigError(f"--session-key {path}: cannot read it: {exc.message}") from None
    data = data[:4096].strip()
    if len(data) < 32:
        raise ConfigError(
            f"--session-key {path}: expected at least 32 bytes of secret "
            f"(e.g. `head -c 48 /dev/urandom | base64 > {path}`), found {len(data)}"
        )
    return data


class SessionSigner:
    def __init__(self, key: bytes) -> None:
        self._key = hashlib.sha256(b"outpost-dashboard-session\0" + key).digest()

    def _mac(self, body: bytes) -> str:
        digest = hmac.new(self._key, body, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")

    def issue(self, name: str, *, now: float) -> str:
        body = f"{name}|{int(now) + SESSION_SECONDS}".encode()
        return f"{base64.urlsafe_b64encode(body).decode().rstrip('=')}.{self._mac(body)}"

    def name(self, cookie: str | None, *, now: float) -> str | None:
        """The token name a valid, unexpired cookie names; None otherwise."""
        if not cookie or len(cookie) > _MAX_COOKIE or cookie.count(".") != 1:
            return None
        encoded, mac = cookie.split(".")
        try:
            body = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
        except ValueError:
            return None
        if not hmac.compare_digest(self._mac(body).encode(), mac.encode("utf-8", "replace")):
            return None
        name, _, expiry = body.decode("utf-8", "replace").rpartition("|")
        if not expiry.isdigit() or int(expiry) < now or not name:
            return None
        return name
