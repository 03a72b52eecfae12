"""Operator commands on a working directory: create, rotate and use a site's key.

Rules every command here keeps:

- a private key file is created with mode 0600, never overwritten, and never
  inside the repository (or any git working tree): ``init-site`` writes it where
  enrollment picks it up, and git never sees it;
- nothing is written until everything has been computed in memory: a rotation
  decrypts and re-encrypts every secret of the site first, then writes the key,
  the secrets, ``site.yaml`` and ``.sops.yaml``, each atomically (temp file,
  fsync, rename);
- plaintext passes between sops processes through pipes and Python memory
  only; no temporary file ever holds it;
- ``site.yaml`` is edited textually (``_edit``), so comments and order survive.

Rotation re-encrypts each file with a fresh data key (decrypt, then encrypt to
the new recipients) rather than ``sops updatekeys``: updatekeys keeps the old
data key, and whoever holds the old site key and an old revision of the file
could then read every future value too. Rotation does not make old values
secret again — git history still holds them, readable with the old key — so
after a node is lost, change the values as well.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from reconciler.core.errors import DocumentError, Mark, SecretError
from reconciler.core.files import atomic_write
from reconciler.core.loader import MAX_FILE_BYTES
from reconciler.core.model import SECRET_SUFFIXES, Repository
from reconciler.core.secrets._age import (
    Identity,
    generate,
    is_recipient,
    key_file_text,
    short,
    write_key_file,
)
from reconciler.core.secrets._edit import set_value
from reconciler.core.secrets._files import VALUE_FIELDS, inspect
from reconciler.core.secrets._recipients import (
    MAX_SOPS_CONFIG_BYTES,
    SOPS_CONFIG,
    SiteKeys,
    load_site_doc,
    recipient_owners,
    secrets_dir,
    site_keys,
    sops_config_text,
)
from reconciler.core.secrets._sops import Sops
from reconciler.core.source import WorkdirTree, read_file

_Loader: type[Any] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_FILE_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")


@dataclass(frozen=True)
class KeyResult:
    """What a key-creating command did; ``written`` are repository paths."""

    site_id: str
    recipient: str
    old_recipient: str | None
    key_file: Path | None
    """Where the new private key was written; None when it was made elsewhere (a node)."""
    written: tuple[str, ...]


# -- files --------------------------------------------------------------------------------------


def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically, keeping the file's mode."""
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
    atomic_write(path, data, mode=mode)


def check_key_destination(key_out: Path, root: Path) -> Path:
    """``key_out`` made absolute; SecretError if it is inside the repository or any git tree."""
    target = key_out.expanduser()
    parent = target.parent.resolve()
    if not parent.is_dir():
        raise SecretError(
            f"folder {parent} does not exist; create it first", mark=Mark(str(key_out))
        )
    resolved = parent / target.name
    repo = root.resolve()
    if resolved == repo or repo in resolved.parents:
        raise SecretError(
            f"refusing to write a private key inside the repository ({repo}): it would be one "
            "`git add` away from every clone. Write it outside, e.g. /etc/outpost/age.key on "
            "the node or a vault export folder",
            mark=Mark(str(key_out)),
        )
    for folder in (parent, *parent.parents):
        if (folder / ".git").exists():
            raise SecretError(
                f"refusing to write a private key inside the git working tree {folder}",
                mark=Mark(str(key_out)),
            )
    return resolved


def _site_text(root: Path, site_id: str) -> tuple[str, str]:
    path = f"sites/{site_id}/site.yaml"
    if not os.path.lexists(root / path):
        raise DocumentError(f"site {site_id!r} does not exist (no {path})", mark=Mark(path))
    data = read_file(root / path, path, MAX_FILE_BYTES)
    try:
        return path, data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DocumentError(f"is not UTF-8 text ({exc.reason})", mark=Mark(path)) from None


def _secret_paths(repo: Repository, site_id: str) -> list[str]:
    paths = repo.tree.files(secrets_dir(site_id))
    for path in paths:
        if not path.endswith(SECRET_SUFFIXES):
            raise SecretError(
                f"only encrypted <name>.sops.yaml files belong in {secrets_dir(site_id)}/; "
                "move this file out (if it holds a plaintext secret, treat it as leaked)",
                mark=Mark(path),
            )
    return paths


def _values(plaintext: bytes) -> list[str]:
    """The secret values of a plaintext Secret, to keep out of error messages."""
    try:
        body = yaml.load(plaintext, Loader=_Loader)  # noqa: S506 - a safe loader
    except yaml.YAMLError:
        return []
    found: list[str] = []
    if isinstance(body, dict):
        for field in VALUE_FIELDS:
            values = body.get(field)
            if isinstance(values, dict):
                found.extend(str(v) for v in values.values() if v is not None)
    return found


def _reencrypt(
    sops: Sops, data: bytes, path: str, decrypt_key: Path, recipients: Sequence[str]
) -> bytes:
    """Decrypt with ``decrypt_key`` and encrypt to ``recipients`` with a fresh data key."""
    before = inspect(data, path)
    if before.problems:
        first = before.problems[0]
        raise SecretError(f"fix this file first: {first.message}", mark=first.mark)
    plaintext = sops.decrypt(data, key_file=decrypt_key, path=path)
    try:
        encrypted = sops.encrypt(
            plaintext, recipients=recipients, path=path, scrub=_values(plaintext)
        )
    finally:
        del plaintext
    after = inspect(encrypted, path)
    if after.problems or set(after.recipients) != set(recipients):
        raise SecretError(
            "re-encrypted file did not check out; nothing was written", mark=Mark(path)
        )
    return encrypted


def _sops_config(root: Path) -> bytes:
    repo = Repository(WorkdirTree(root))
    _, keys = recipient_owners(repo, repo.site_ids)
    return sops_config_text(keys.values()).encode("utf-8")


def write_sops_config(root: Path) -> bool:
    """Regenerate ``.sops.yaml`` from the tree; True if it changed."""
    target = root / SOPS_CONFIG
    text = _sops_config(root)
    if target.is_file() and read_file(target, SOPS_CONFIG, MAX_SOPS_CONFIG_BYTES) == text:
        return False
    write_atomic(target, text)
    return True


def _key_comment(site_id: str) -> str:
    return (
        f"age key of Outpost site {site_id}. Install it on the site's node only (agent.yaml "
        "spec.ageKey, mode 0600). Never commit it."
    )


# -- commands -----------------------------------------------------------------------------------


def keygen(key_out: Path, root: Path, *, created: datetime | None, comment: str = "") -> str:
    """A new key pair at ``key_out`` (outside the repository); returns the recipient."""
    destination = check_key_destination(key_out, root)
    identity = generate()
    write_key_file(destination, key_file_text(identity, created=created, comment=comment))
    return identity.recipient


def _write_site_and_key(
    root: Path,
    site_id: str,
    identity: Identity,
    destination: Path,
    new_site_text: str,
    created: datetime | None,
    secrets: dict[str, bytes],
) -> tuple[str, ...]:
    site_path = f"sites/{site_id}/site.yaml"
    write_key_file(
        destination, key_file_text(identity, created=created, comment=_key_comment(site_id))
    )
    written: list[str] = []
    try:
        for path, data in secrets.items():
            write_atomic(root / path, data)
            written.append(path)
        write_atomic(root / site_path, new_site_text.encode("utf-8"))
        written.append(site_path)
    except OSError as exc:
        if not written:
            destination.unlink(missing_ok=True)
        raise SecretError(
            f"writing failed after {len(written)} file(s) ({exc.strerror}); the new key is "
            f"kept at {destination} — restore the site with git and run the command again",
            mark=Mark(site_path),
        ) from None
    if write_sops_config(root):
        written.append(SOPS_CONFIG)
    return tuple(written)


def init_site(
    root: Path, site_id: str, key_out: Path, *, created: datetime | None = None
) -> KeyResult:
    """``outpost secrets init-site``: the site's first key pair, its recipient, .sops.yaml."""
    repo = Repository(WorkdirTree(root))
    keys = site_keys(repo, site_id, load_site_doc(repo, site_id))
    if keys.recipient is not None:
        raise SecretError(
            f"site {site_id!r} already has recipient {short(keys.recipient)}; to replace its "
            "key use `outpost secrets rotate-site`",
            mark=keys.recipient_mark,
        )
    if _secret_paths(repo, site_id):
        raise SecretError(
            f"site {site_id!r} has secret files but no recipient; they were encrypted to some "
            "other key. Move them out, init the site, then re-add them with "
            "`outpost secrets encrypt`",
            mark=Mark(secrets_dir(site_id)),
        )
    destination = check_key_destination(key_out, root)
    identity = generate()
    site_path, text = _site_text(root, site_id)
    new_text = set_value(text, site_path, ("spec", "sops"), "recipient", identity.recipient)
    written = _write_site_and_key(root, site_id, identity, destination, new_text, created, {})
    return KeyResult(site_id, identity.recipient, None, destination, written)


def rotate_site(
    root: Path,
    site_id: str,
    key_out: Path,
    *,
    old_key: Path | None,
    created: datetime | None = None,
    sops: Sops | None = None,
) -> KeyResult:
    """``outpost secrets rotate-site``: new key pair, every secret re-encrypted, old one removed.

    ``old_key`` is any key that can decrypt the site's secrets: the old site key,
    or — when the node is lost with it — a break-glass key.
    """
    runner = sops or Sops()
    repo = Repository(WorkdirTree(root))
    keys = _enrolled_keys(repo, site_id)
    paths = _secret_paths(repo, site_id)
    if paths and old_key is None:
        raise SecretError(
            f"site {site_id!r} has {len(paths)} secret(s) to re-encrypt: give --old-key, the "
            "old site key or a break-glass key (OUTPOST_AGE_KEY_FILE is used if set)",
            mark=Mark(secrets_dir(site_id)),
        )
    destination = check_key_destination(key_out, root)
    identity = generate()
    recipients = _recipients_with(keys, identity.recipient)
    secrets: dict[str, bytes] = {}
    for path in paths:
        assert old_key is not None
        secrets[path] = _reencrypt(runner, repo.tree.read(path), path, old_key, recipients)
    site_path, text = _site_text(root, site_id)
    new_text = set_value(text, site_path, ("spec", "sops"), "recipient", identity.recipient)
    written = _write_site_and_key(root, site_id, identity, destination, new_text, created, secrets)
    return KeyResult(site_id, identity.recipient, keys.recipient, destination, written)


def _enrolled_keys(repo: Repository, site_id: str) -> SiteKeys:
    """The site's keys; SecretError at its ``spec`` when it has no recipient yet."""
    keys = site_keys(repo, site_id, load_site_doc(repo, site_id))
    if keys.recipient is None:
        raise SecretError(
            f"site {site_id!r} has no recipient yet; run `outpost secrets init-site` first",
            mark=keys.spec_mark,
        )
    return keys


def _recipients_with(keys: SiteKeys, site_recipient: str) -> tuple[str, ...]:
    ordered = [site_recipient]
    for bg in keys.break_glass:
        if bg.recipient not in ordered:
            ordered.append(bg.recipient)
    return tuple(ordered)


def sync_site(root: Path, site_id: str, key: Path, *, sops: Sops | None = None) -> tuple[str, ...]:
    """Re-encrypt the site's secrets whose recipients differ from site + break-glass.

    After a fleet's break-glass recipients change; ``key`` is any key that can
    decrypt the files (the site key or a break-glass key).
    """
    runner = sops or Sops()
    repo = Repository(WorkdirTree(root))
    keys = _enrolled_keys(repo, site_id)
    changed: dict[str, bytes] = {}
    for path in _secret_paths(repo, site_id):
        data = repo.tree.read(path)
        if set(inspect(data, path).recipients) == set(keys.expected):
            continue
        changed[path] = _reencrypt(runner, data, path, key, keys.expected)
    for path, data in changed.items():
        write_atomic(root / path, data)
    written = list(changed)
    if write_sops_config(root):
        written.append(SOPS_CONFIG)
    return tuple(written)


def encrypt_secret(
    root: Path,
    site_id: str,
    plaintext: bytes,
    *,
    name: str | None = None,
    force: bool = False,
    sops: Sops | None = None,
) -> str:
    """Encrypt a plaintext Secret manifest into ``sites/<site>/secrets/<name>.sops.yaml``."""
    runner = sops or Sops()
    repo = Repository(WorkdirTree(root))
    keys = _enrolled_keys(repo, site_id)
    source = "<input>"
    try:
        body = yaml.load(plaintext, Loader=_Loader)  # noqa: S506 - a safe loader
    except yaml.YAMLError:
        raise SecretError("input is not valid YAML", mark=Mark(source)) from None
    if not isinstance(body, dict) or body.get("apiVersion") != "v1" or body.get("kind") != "Secret":
        raise SecretError(
            "input must be one Kubernetes `apiVersion: v1` `kind: Secret`", mark=Mark(source)
        )
    if "sops" in body:
        raise SecretError("input is already encrypted (it has a `sops` entry)", mark=Mark(source))
    metadata = body.get("metadata")
    secret_name = metadata.get("name") if isinstance(metadata, dict) else None
    if not isinstance(secret_name, str):
        raise SecretError("the Secret has no metadata.name", mark=Mark(source))
    if not any(isinstance(body.get(f), dict) and body.get(f) for f in VALUE_FIELDS):
        raise SecretError("the Secret has no data or stringData", mark=Mark(source))
    for field in VALUE_FIELDS:
        values = body.get(field)
        if values is None:
            continue
        if not isinstance(values, dict) or not all(isinstance(v, str) for v in values.values()):
            raise SecretError(
                f"{field} must map names to string values (quote numbers and booleans)",
                mark=Mark(source),
            )
    file_name = name or secret_name
    if not _FILE_NAME.match(file_name):
        raise SecretError(
            f"{file_name!r} is not a usable file name (lowercase letters, digits, '-', '.')",
            mark=Mark(source),
        )
    path = f"{secrets_dir(site_id)}/{file_name}.sops.yaml"
    if (root / path).exists() and not force:
        raise SecretError("already exists; pass --force to replace it", mark=Mark(path))
    encrypted = runner.encrypt(
        plaintext, recipients=keys.expected, path=path, scrub=_values(plaintext)
    )
    result = inspect(encrypted, path)
    if result.problems:
        raise SecretError(result.problems[0].message, mark=result.problems[0].mark)
    write_atomic(root / path, encrypted)
    write_sops_config(root)
    return path


def adopt_site_recipient(
    root: Path,
    site_id: str,
    recipient: str,
    *,
    key: Path | None,
    sops: Sops | None = None,
) -> KeyResult:
    """Make ``recipient`` (a key made on the site's node) the site's key; re-encrypt its secrets.

    ``outpost site accept`` after enrollment: the private key never left the node, so
    unlike `rotate_site` nothing is generated here. Every secret of the site is
    re-encrypted to the new recipient plus its fleets' break-glass keys, decrypted
    with ``key`` (a break-glass key, or the old site key); the old site key can read
    nothing written from now on. ``site.yaml`` and ``.sops.yaml`` follow.
    """
    if not is_recipient(recipient):
        raise SecretError(
            f"{recipient[:70]!r} is not an age recipient", mark=Mark(f"sites/{site_id}/site.yaml")
        )
    runner = sops or Sops()
    repo = Repository(WorkdirTree(root))
    keys = site_keys(repo, site_id, load_site_doc(repo, site_id))
    paths = _secret_paths(repo, site_id)
    recipients = _recipients_with(keys, recipient)
    secrets: dict[str, bytes] = {}
    for path in paths:
        data = repo.tree.read(path)
        if set(inspect(data, path).recipients) == set(recipients):
            continue  # already the site's (another node of the site enrolled with its key)
        if key is None:
            raise SecretError(
                f"site {site_id!r} has secrets to re-encrypt to the node's new key: give --key, "
                "a break-glass key of its fleet or the old site key "
                "(OUTPOST_AGE_KEY_FILE is used if set)",
                mark=Mark(path),
            )
        secrets[path] = _reencrypt(runner, data, path, key, recipients)
    site_path, text = _site_text(root, site_id)
    written: list[str] = []
    for path, data in secrets.items():
        write_atomic(root / path, data)
        written.append(path)
    if keys.recipient != recipient:
        new_text = set_value(text, site_path, ("spec", "sops"), "recipient", recipient)
        write_atomic(root / site_path, new_text.encode("utf-8"))
        written.append(site_path)
    if write_sops_config(root):
        written.append(SOPS_CONFIG)
    return KeyResult(site_id, recipient, keys.recipient, None, tuple(written))
