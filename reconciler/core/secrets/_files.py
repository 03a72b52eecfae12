"""The shape of one encrypted secret file, checked without any key.

A secret file is a Kubernetes ``v1 Secret`` encrypted by sops with
``encrypted_regex: ^(data|stringData)$``: ``apiVersion``, ``kind`` and
``metadata`` stay readable for review and rendering, every value under
``data``/``stringData`` is ``ENC[AES256_GCM,…]``. What is checked here, and why:

- a ``sops`` block with age recipients, ``version``, ``lastmodified`` and an
  encrypted ``mac`` — a file without them is plaintext, or was edited by hand;
- every value under ``data``/``stringData`` is ciphertext (a plaintext value
  next to encrypted ones is what ``sops --set`` mistakes and bad merges leave);
- only age recipients: a KMS, PGP or Vault key is a key our nodes do not have and
  a door we do not audit; ``key_groups`` (Shamir) change what "recipient" means;
- no ``mac_only_encrypted``: the MAC must also cover the readable fields, or
  someone could move a Secret to another namespace without breaking it.

No message here ever contains a value from the file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from reconciler.core.errors import Mark, OutpostError
from reconciler.core.loader import YamlDocument, parse_yaml
from reconciler.core.secrets._age import is_recipient
from reconciler.core.secrets._sops import ENCRYPTED_REGEX

ENC_VALUE = re.compile(
    r"^ENC\[AES256_GCM,data:[A-Za-z0-9+/=]*,iv:[A-Za-z0-9+/=]+,tag:[A-Za-z0-9+/=]+,"
    r"type:(?P<type>str|int|float|bool|bytes|comment)\]$"
)
AGE_BLOCK = "-----BEGIN AGE ENCRYPTED FILE-----"
_OTHER_KEY_TYPES = ("kms", "gcp_kms", "azure_kv", "hc_vault", "pgp", "hckms")
VALUE_FIELDS = ("data", "stringData")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a secret file, at a line."""

    mark: Mark
    message: str


@dataclass(frozen=True)
class EncryptedSecret:
    """What a reviewer can see of an encrypted secret file, and what is wrong with it."""

    path: str
    document: YamlDocument | None
    recipients: tuple[str, ...]
    problems: tuple[Problem, ...]

    @property
    def recipients_mark(self) -> Mark:
        if self.document is None:
            return Mark(self.path)
        return self.document.mark("sops", "age")

    @property
    def name(self) -> str:
        metadata = self.document.body.get("metadata") if self.document else None
        name = metadata.get("name") if isinstance(metadata, dict) else None
        return name if isinstance(name, str) else ""

    @property
    def namespace(self) -> str:
        metadata = self.document.body.get("metadata") if self.document else None
        ns = metadata.get("namespace") if isinstance(metadata, dict) else None
        return ns if isinstance(ns, str) else ""

    @property
    def ok(self) -> bool:
        return not self.problems


def inspect(data: bytes, path: str) -> EncryptedSecret:
    """Parse and check one secret file's bytes; never raises for content problems."""
    try:
        documents = parse_yaml(data, path)
    except OutpostError as exc:
        return EncryptedSecret(path, None, (), (Problem(exc.mark or Mark(path), exc.message),))
    doc = documents[0]
    problems: list[Problem] = []

    def add(message: str, *keys: str | int) -> None:
        problems.append(Problem(doc.mark(*keys), message))

    body = doc.body
    if not isinstance(body, dict):
        add("expected a Kubernetes Secret (a mapping) encrypted by sops")
        return EncryptedSecret(path, doc, (), tuple(problems))
    if body.get("apiVersion") != "v1" or body.get("kind") != "Secret":
        add(
            "expected a Kubernetes `apiVersion: v1`, `kind: Secret`; found "
            f"apiVersion {body.get('apiVersion')!r}, kind {body.get('kind')!r}",
            "kind",
        )
    metadata = body.get("metadata")
    if not isinstance(metadata, dict) or not isinstance(metadata.get("name"), str):
        add("the Secret has no metadata.name", "metadata")
    _readable_fields(body, add)
    sops = body.get("sops")
    if not isinstance(sops, dict):
        plain = any(_has_plain_value(body.get(f)) for f in VALUE_FIELDS)
        if plain:
            add(
                "PLAINTEXT secret: this file is not encrypted (no sops block) but holds values. "
                "Treat the values as leaked: change them, then encrypt the new ones with "
                "`outpost secrets encrypt` or sops",
                "sops",
            )
        else:
            add("not encrypted: the file has no sops block; encrypt it with sops", "sops")
        return EncryptedSecret(path, doc, (), tuple(problems))

    recipients = _recipients(sops, doc, problems)
    for other in _OTHER_KEY_TYPES:
        if sops.get(other):
            add(
                f"sops.{other}: encrypted to a {other} key as well; Outpost sites decrypt with "
                "age only, so every key must be an age recipient (site + break-glass)",
                "sops",
                other,
            )
    if sops.get("key_groups"):
        add(
            "sops.key_groups (Shamir key groups) are not supported; encrypt to plain age "
            "recipients (site + break-glass)",
            "sops",
            "key_groups",
        )
    for key in ("version", "lastmodified"):
        if not isinstance(sops.get(key), str) or not sops.get(key):
            add(f"sops.{key} is missing; the sops block is incomplete (edited by hand?)", "sops")
    mac = sops.get("mac")
    if not isinstance(mac, str) or not ENC_VALUE.match(mac):
        add(
            "sops.mac is missing or not encrypted; without it nobody can tell whether the "
            "file was changed after encryption — re-encrypt it with sops",
            "sops",
            "mac",
        )
    regex = sops.get("encrypted_regex")
    if regex != ENCRYPTED_REGEX:
        add(
            f"sops.encrypted_regex is {regex!r}; expected {ENCRYPTED_REGEX!r} so that exactly "
            "data and stringData are encrypted and the rest of the Secret stays reviewable "
            "(encrypt with the repository's .sops.yaml or `outpost secrets encrypt`)",
            "sops",
            "encrypted_regex" if regex is not None else "sops",
        )
    if sops.get("mac_only_encrypted"):
        add(
            "sops.mac_only_encrypted is set: the MAC would not cover metadata, so the Secret "
            "could be moved to another namespace unnoticed; re-encrypt without it",
            "sops",
            "mac_only_encrypted",
        )
    for field in VALUE_FIELDS:
        values = body.get(field)
        if values is None:
            continue
        if not isinstance(values, dict):
            add(f"{field} must be a mapping of names to values", field)
            continue
        for name, value in values.items():
            if isinstance(value, str) and value == "":
                continue  # sops leaves empty strings as they are; nothing to hide
            match = ENC_VALUE.match(value) if isinstance(value, str) else None
            if match is None:
                add(
                    f"{field}.{name} is NOT encrypted (plaintext next to encrypted values). "
                    "Treat the value as leaked: change it, then re-encrypt the file with sops",
                    field,
                    name,
                )
            elif match.group("type") != "str":
                add(
                    f"{field}.{name} was encrypted from a {match.group('type')}, but Secret "
                    "values are strings; quote the value and re-encrypt",
                    field,
                    name,
                )
    return EncryptedSecret(path, doc, recipients, tuple(problems))


# What sops leaves readable in a Secret: fields that hold no secret, and the sops block.
_READABLE = frozenset(
    {"apiVersion", "kind", "metadata", "type", "immutable", "sops", *VALUE_FIELDS}
)
_METADATA = frozenset({"name", "namespace", "labels", "annotations"})
# kubectl writes the whole object, values included, into this annotation.
_LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"


def _readable_fields(body: dict[str, Any], add: Any) -> None:
    """Plaintext outside ``data``/``stringData``: sops encrypts only those two fields.

    A value under another top-level key, in a metadata field other than name,
    namespace, labels and annotations, in an annotation or label named like a secret,
    or in kubectl's last-applied annotation (a copy of the values) is in the clear.
    """
    from reconciler.core.secrets._scan import sensitive_name

    for key in body:
        if key not in _READABLE:
            add(
                f"top-level field {key!r} is not encrypted (sops encrypts only data and "
                "stringData): anything in it is plaintext in git; move it under data or "
                "stringData, and treat a secret written here as leaked",
                key,
            )
    metadata = body.get("metadata")
    if not isinstance(metadata, dict):
        return
    for key in metadata:
        if key not in _METADATA:
            add(
                f"metadata.{key} is not part of a Secret's reviewable metadata and is not "
                "encrypted; remove it",
                "metadata",
                key,
            )
    for field in ("annotations", "labels"):
        entries = metadata.get(field)
        if not isinstance(entries, dict):
            continue
        for name, value in entries.items():
            if not (isinstance(value, str) and value.strip()):
                continue
            if str(name) == _LAST_APPLIED or sensitive_name(str(name).rsplit("/", 1)[-1]):
                add(
                    f"metadata.{field}.{name} holds a value in the clear (sops encrypts only "
                    "data and stringData); treat it as leaked, remove it and change the secret",
                    "metadata",
                    field,
                    name,
                )


def _recipients(
    sops: dict[str, Any], doc: YamlDocument, problems: list[Problem]
) -> tuple[str, ...]:
    entries = sops.get("age")
    if not isinstance(entries, list) or not entries:
        problems.append(
            Problem(
                doc.mark("sops", "age") if "age" in sops else doc.mark("sops"),
                "sops.age lists no recipients; the file must be encrypted to its site's age "
                "recipient and the fleet's break-glass recipients",
            )
        )
        return ()
    found: list[str] = []
    for index, entry in enumerate(entries):
        recipient = entry.get("recipient") if isinstance(entry, dict) else None
        enc = entry.get("enc") if isinstance(entry, dict) else None
        if not isinstance(recipient, str) or not is_recipient(recipient):
            problems.append(
                Problem(
                    doc.mark("sops", "age", index),
                    f"sops.age[{index}].recipient is not an age X25519 recipient (age1…)",
                )
            )
            continue
        if not isinstance(enc, str) or AGE_BLOCK not in enc:
            problems.append(
                Problem(
                    doc.mark("sops", "age", index),
                    f"sops.age[{index}] for {recipient} has no encrypted data key (enc)",
                )
            )
        found.append(recipient)
    return tuple(found)


def _has_plain_value(values: object) -> bool:
    if not isinstance(values, dict):
        return False
    return any(
        not (isinstance(v, str) and (v == "" or ENC_VALUE.match(v))) for v in values.values()
    )
