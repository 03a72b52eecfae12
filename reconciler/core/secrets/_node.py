"""On the node: a site's secrets as Kubernetes Secret objects, in memory only.

The node decrypts with its own key (installed at enrollment, never in the
repository). Before sops runs, the node repeats what CI checked — the file is
encrypted, to exactly the site's recipient plus break-glass — and checks that
its key is one of the recipients, so a wrong key is reported as a wrong key
(naming both recipients) rather than as sops's generic failure. sops reads the
ciphertext from stdin and writes plaintext to a pipe; nothing is written to
disk, and nothing here logs a value. Any error is a ``SecretError`` naming the
file: the agent keeps its last good revision.

``redact`` is what ``outpost render`` and ``outpost diff`` print instead of a
value: ``<redacted sha256:0123456789ab>``, the first 12 hex digits (48 bits) of
HMAC-SHA256 over the field's place and value. Why keyed: a plain hash of a
low-entropy value (a 4-digit PIN, a Wi-Fi password from a word list) is
reversed by trying every candidate, and render output lands in CI logs that
many people read. The HMAC key is derived from the age identity that decrypted
the secret (``redaction_key``), so only a holder of that key can test guesses
— and the holder can decrypt anyway. Why not keyed per revision: the same value
must give the same mark across revisions, or every diff would show every
secret as changed. Consequences, by design: marks made with different keys (a
node's key, CI's break-glass key) differ, and rotating a site's key changes
every mark once. The namespace, name and field are part of the HMAC input, so
two fields holding the same password do not show equal marks.
"""

from __future__ import annotations

import base64
import binascii
import copy
import hashlib
import hmac
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from reconciler.core.errors import Mark, SecretError
from reconciler.core.model import SECRET_SUFFIXES, Repository
from reconciler.core.secrets._age import read_key_file, short
from reconciler.core.secrets._files import VALUE_FIELDS, inspect
from reconciler.core.secrets._recipients import SiteKeys, secrets_dir, site_keys
from reconciler.core.secrets._sops import Sops
from reconciler.core.source import Tree

log = logging.getLogger("reconciler.secrets")

REDACTED_PREFIX = "<redacted sha256:"
_HASH_HEX = 12
_Loader: type[Any] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def check_recipients(keys: SiteKeys, recipients: tuple[str, ...], path: str, mark: Mark) -> None:
    """SecretError unless ``recipients`` are exactly the site's and its break-glass ones."""
    if keys.recipient is None:
        raise SecretError(
            f"site {keys.site_id!r} has secrets but no spec.sops.recipient in its site.yaml; "
            "run `outpost secrets init-site`",
            mark=keys.spec_mark,
        )
    expected = set(keys.expected)
    found = set(recipients)
    if found != expected:
        missing = ", ".join(f"{short(r)} ({keys.describe(r)})" for r in sorted(expected - found))
        extra = ", ".join(short(r) for r in sorted(found - expected))
        parts = []
        if missing:
            parts.append(f"not encrypted to {missing}")
        if extra:
            parts.append(f"encrypted to keys that must not read it: {extra}")
        raise SecretError(
            f"{path} must be encrypted to exactly site {keys.site_id!r}'s recipient plus its "
            f"fleets' break-glass recipients; it is {'; '.join(parts)}",
            mark=mark,
        )


def decrypt_site_secrets(
    tree: Tree, site_id: str, key_file: Path, *, sops: Sops | None = None
) -> list[dict[str, Any]]:
    """Every secret of ``site_id`` as a Kubernetes Secret object (plaintext, in memory only).

    A site without secret files needs no key: the key file is read only when there is
    something to decrypt, so a store that has no secrets yet is not blocked by a key that
    enrollment has not installed.
    """
    paths = tree.files(secrets_dir(site_id))
    if not paths:
        return []
    identities = read_key_file(key_file)
    key_recipients = {identity.recipient for identity in identities}
    keys = site_keys(Repository(tree), site_id)
    runner = sops if sops is not None else Sops()
    secrets: list[dict[str, Any]] = []
    seen: dict[tuple[str, str], str] = {}
    for path in paths:
        if not path.endswith(SECRET_SUFFIXES):
            raise SecretError(
                f"only encrypted <name>.sops.yaml files belong in {secrets_dir(site_id)}/",
                mark=Mark(path),
            )
        data = tree.read(path)
        encrypted = inspect(data, path)
        if encrypted.problems:
            first = encrypted.problems[0]
            more = len(encrypted.problems) - 1
            suffix = f" (and {more} more problem(s); run `outpost validate`)" if more else ""
            raise SecretError(first.message + suffix, mark=first.mark)
        check_recipients(keys, encrypted.recipients, path, encrypted.recipients_mark)
        if not key_recipients & set(encrypted.recipients):
            own = ", ".join(short(r) for r in sorted(key_recipients))
            hint = (
                "the key file is for another site, or the site's key was rotated and this "
                "node still has the old one (re-enroll it with the new key)"
            )
            if keys.recipient is not None and keys.recipient not in key_recipients:
                hint = (
                    f"site.yaml says site {site_id!r} has recipient {short(keys.recipient)}; "
                    + hint
                )
            raise SecretError(
                f"wrong key: {key_file} holds {own}, which is not a recipient of this file; "
                + hint,
                mark=encrypted.recipients_mark,
            )
        plaintext = runner.decrypt(data, key_file=key_file, path=path)
        secret = _parse_plaintext(plaintext, path)
        del plaintext
        namespace = str(secret["metadata"].get("namespace") or "")
        name = str(secret["metadata"]["name"])
        if (namespace, name) in seen:
            raise SecretError(
                f"Secret {namespace}/{name} is also defined in {seen[(namespace, name)]}",
                mark=Mark(path),
            )
        seen[(namespace, name)] = path
        secrets.append(secret)
    log.info("decrypted %d secret(s) of site %s in memory", len(secrets), site_id)
    return secrets


def _parse_plaintext(plaintext: bytes, path: str) -> dict[str, Any]:
    try:
        secret = yaml.load(plaintext, Loader=_Loader)  # noqa: S506 - a safe loader
    except yaml.YAMLError:
        # The error text could quote plaintext: report the place, not the words.
        raise SecretError("sops returned output that is not YAML", mark=Mark(path)) from None
    if (
        not isinstance(secret, dict)
        or secret.get("kind") != "Secret"
        or not isinstance(secret.get("metadata"), dict)
        or not isinstance(secret["metadata"].get("name"), str)
    ):
        raise SecretError("decrypted file is not a Kubernetes Secret", mark=Mark(path))
    return secret


def redaction_key(key_file: Path, site_id: str) -> bytes:
    """The HMAC key for ``redact``: derived from the first identity of ``key_file`` and the site."""
    identity = read_key_file(key_file)[0]
    return hmac.new(
        identity.secret, b"outpost redaction v1\x00" + site_id.encode(), hashlib.sha256
    ).digest()


def _canonical(field: str, value: str) -> bytes:
    if field == "data":
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            pass
    return value.encode("utf-8")


def redaction_mark(key: bytes, place: str, field: str, value: object) -> str:
    """``<redacted sha256:…>`` for one value at ``place`` (``namespace/name/key``)."""
    if not isinstance(value, str):
        value = str(value)
    digest = hmac.new(
        key, place.encode("utf-8") + b"\x00" + _canonical(field, value), hashlib.sha256
    ).hexdigest()
    return f"{REDACTED_PREFIX}{digest[:_HASH_HEX]}>"


def redact(secret: Mapping[str, Any], key: bytes) -> dict[str, Any]:
    """A copy of ``secret`` with every data/stringData value replaced by its redaction mark."""
    out = copy.deepcopy(dict(secret))
    raw = out.get("metadata")
    metadata: dict[str, Any] = raw if isinstance(raw, dict) else {}
    base = f"{metadata.get('namespace') or ''}/{metadata.get('name') or ''}"
    for field in VALUE_FIELDS:
        values = out.get(field)
        if not isinstance(values, dict):
            continue
        out[field] = {
            name: None if value is None else redaction_mark(key, f"{base}/{name}", field, value)
            for name, value in values.items()
        }
    return out
