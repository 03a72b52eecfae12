"""Secrets: SOPS with one age key per site, checked in CI, decrypted only in the node's memory.

A store's Wi-Fi password or a plant's historian credentials live in the
repository as ``sites/<id>/secrets/<name>.sops.yaml``: Kubernetes Secrets whose
``data``/``stringData`` values sops encrypted to exactly two kinds of age
recipient — the site's own key (on its node, installed at enrollment) and the
break-glass keys of its fleets (held by operations). Stealing one store's node
reveals that store's secrets and nothing else.

Parts, one job each:

- ``_age``: X25519 key pairs in age's format (``cryptography`` + bech32);
- ``_sops``: the only code in Outpost that runs ``sops`` (hermetic, timed out);
- ``_files``: the shape of an encrypted file, without a key;
- ``_recipients``: who may read a site's secrets; ``.sops.yaml``;
- ``_check``: findings for ``outpost validate``; ``_scan``: plaintext elsewhere;
- ``_node``: decrypt to memory for apply, redact for render and diff;
- ``_manage`` and ``_edit``: init, rotate, sync and encrypt in a working tree.

Errors are ``SecretError`` naming the file (and line where there is one).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from reconciler.core.lazy import lazy_names

if TYPE_CHECKING:
    from reconciler.core.secrets._age import (
        Identity,
        is_recipient,
        key_file_recipients,
        read_key_file,
    )
    from reconciler.core.secrets._check import (
        KEY_FILE_ENV,
        check_secrets,
        key_file_from_env,
        scan_file,
        scan_tree,
        secrets_check,
    )
    from reconciler.core.secrets._files import EncryptedSecret, inspect
    from reconciler.core.secrets._manage import (
        KeyResult,
        adopt_site_recipient,
        encrypt_secret,
        init_site,
        keygen,
        rotate_site,
        sync_site,
        write_sops_config,
    )
    from reconciler.core.secrets._node import (
        REDACTED_PREFIX,
        decrypt_site_secrets,
        redact,
        redaction_key,
    )
    from reconciler.core.secrets._recipients import (
        SITE_KEYS,
        SOPS_CONFIG,
        SiteKeys,
        gather_site_keys,
        site_keys,
    )
    from reconciler.core.secrets._sops import ENCRYPTED_REGEX, Sops, find_sops

# Each name is imported from its module when first used: a node's tick needs only
# decryption (`_node`), not validation or key management.
_HOME = {
    "Identity": "_age",
    "is_recipient": "_age",
    "key_file_recipients": "_age",
    "read_key_file": "_age",
    "KEY_FILE_ENV": "_check",
    "check_secrets": "_check",
    "key_file_from_env": "_check",
    "scan_file": "_check",
    "scan_tree": "_check",
    "secrets_check": "_check",
    "EncryptedSecret": "_files",
    "inspect": "_files",
    "KeyResult": "_manage",
    "adopt_site_recipient": "_manage",
    "encrypt_secret": "_manage",
    "init_site": "_manage",
    "keygen": "_manage",
    "rotate_site": "_manage",
    "sync_site": "_manage",
    "write_sops_config": "_manage",
    "REDACTED_PREFIX": "_node",
    "decrypt_site_secrets": "_node",
    "redact": "_node",
    "redaction_key": "_node",
    "SITE_KEYS": "_recipients",
    "SOPS_CONFIG": "_recipients",
    "SiteKeys": "_recipients",
    "gather_site_keys": "_recipients",
    "site_keys": "_recipients",
    "ENCRYPTED_REGEX": "_sops",
    "Sops": "_sops",
    "find_sops": "_sops",
}


__getattr__ = lazy_names(__name__, _HOME)


__all__ = [
    "ENCRYPTED_REGEX",
    "KEY_FILE_ENV",
    "REDACTED_PREFIX",
    "SITE_KEYS",
    "SOPS_CONFIG",
    "EncryptedSecret",
    "Identity",
    "KeyResult",
    "SiteKeys",
    "Sops",
    "adopt_site_recipient",
    "check_secrets",
    "decrypt_site_secrets",
    "encrypt_secret",
    "find_sops",
    "gather_site_keys",
    "init_site",
    "inspect",
    "is_recipient",
    "key_file_from_env",
    "key_file_recipients",
    "keygen",
    "read_key_file",
    "redact",
    "redaction_key",
    "rotate_site",
    "scan_file",
    "scan_tree",
    "secrets_check",
    "site_keys",
    "sync_site",
    "write_sops_config",
]
