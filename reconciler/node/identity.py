"""The node's own key: made once at enrollment, its public half recorded in the signed repository.

``outpost agent keygen`` writes an ed25519 key in OpenSSH's format (the same
files ``ssh-keygen -t ed25519`` writes: the private key, mode 0600, and
``<key>.pub``). An operator copies the ``.pub`` line into the node's entry of
``sites/<site>/hardware.yaml`` (``publicKey``) and commits it, signed; from
then on headquarters accepts status reports signed by this key for that site
and no other.

Rules:

- never overwrite an existing key unless asked (``--force``): a replaced key
  silently orphans the one the repository lists, and every report is refused;
- refuse to use a private key readable by group or others, as ``ssh`` does;
- the private key never leaves this module's callers' memory: only the
  signature and the public key are written anywhere else.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from reconciler.core.errors import ConfigError, DocumentError
from reconciler.core.files import atomic_write
from reconciler.core.source import CONFIGURED, read_file
from reconciler.core.trust.sshsig import PublicKey, public_key_of

__all__ = ["MAX_KEY_BYTES", "NodeIdentity", "generate", "load_identity"]

MAX_KEY_BYTES = 16 * 1024


@dataclass(frozen=True)
class NodeIdentity:
    """A node's private key (in memory) and its public key."""

    path: Path
    private_key: Ed25519PrivateKey
    public_key: PublicKey


def generate(path: Path, *, comment: str, force: bool = False) -> NodeIdentity:
    """Make a new ed25519 key at ``path`` (0600) and ``path.pub``; ConfigError if one exists."""
    public_path = path.with_name(path.name + ".pub")
    if not force:
        for existing in (path, public_path):
            if existing.exists() or existing.is_symlink():
                raise ConfigError(
                    f"{existing} already exists; a node keeps its key (the repository lists it). "
                    "Use --force to replace it, then commit the new public key to the site's "
                    "hardware.yaml"
                )
    private_key = Ed25519PrivateKey.generate()
    pem = private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    public = public_key_of(private_key, comment=comment)
    try:
        atomic_write(path, pem, mode=0o600)
        atomic_write(public_path, (public.line() + "\n").encode("ascii"), mode=0o644)
    except OSError as exc:
        raise ConfigError(f"cannot write the node key {path}: {exc.strerror}") from None
    return NodeIdentity(path, private_key, public)


def load_identity(path: Path) -> NodeIdentity:
    """Read the node key; ConfigError naming the file and what to do otherwise."""
    try:
        info = os.lstat(path)
    except OSError as exc:
        raise ConfigError(
            f"cannot read the node key {path}: {exc.strerror} (make one with "
            "`outpost agent keygen`)"
        ) from None
    if stat.S_ISREG(info.st_mode) and info.st_mode & 0o077:
        raise ConfigError(
            f"the node key {path} is readable by others (mode "
            f"{stat.S_IMODE(info.st_mode):04o}); run `chmod 600 {path}`"
        )
    try:  # bounded, without following a link or waiting on a FIFO swapped in since the stat
        data = read_file(path, str(path), MAX_KEY_BYTES, holder=CONFIGURED)
    except DocumentError as exc:
        raise ConfigError(f"cannot read the node key {path}: {exc.message}") from None
    try:
        key = serialization.load_ssh_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(
            f"the node key {path} is not an unencrypted OpenSSH private key: {exc}"
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"the node key {path} is not an ed25519 key (make one with keygen)")
    return NodeIdentity(path, key, public_key_of(key, comment=path.name))
