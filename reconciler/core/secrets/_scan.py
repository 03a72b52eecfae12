"""Plaintext secret material outside ``sites/*/secrets/``: the mistakes that leak a store.

Three patterns, each a mistake seen in real GitOps repositories:

- a private key in any file of the tree: a PEM block (``-----BEGIN … PRIVATE
  KEY-----``, OpenSSH keys included) or an age identity (``AGE-SECRET-KEY-1``
  followed by a full key). Every file is scanned, code and docs included,
  because a key pasted into a README leaks as surely as one in a manifest. The
  one exception is ``tests/keys/``: committed example keys for tests and the
  demo, which decrypt nothing real (the folder name is the review signal);
- a Kubernetes ``kind: Secret`` with ``data``/``stringData`` in the
  configuration (``apps/``, ``fleets/``, ``sites/``, ``policies/``, ``deploy/``
  and top-level YAML): secrets belong encrypted in ``sites/<id>/secrets/``;
- an obvious password field with a literal value where parameters are set: an
  app's ``defaults`` and parameter ``default``s, a fleet's or site's app
  ``values``, site overrides, and the manifests and VMs themselves (including
  ``env`` entries such as ``{name: DB_PASSWORD, value: …}``). A field counts
  when its last word is password, passwd, pwd, passphrase, psk, secret, token,
  credential(s), or api/private/access/secret key; a value counts when it is a
  non-empty string that is not a ``${…}`` placeholder. Fields that name a
  Secret rather than hold one end in Name/Ref/File/Path and do not count.

Findings never quote the value they found.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from typing import Any

from reconciler.core.errors import Mark, OutpostError
from reconciler.core.loader import YamlDocument, parse_yaml
from reconciler.core.secrets._files import Problem

EXAMPLE_KEY_DIRS = ("tests/keys/",)
CONFIG_DIRS = ("apps/", "fleets/", "sites/", "policies/", "deploy/")
_YAML = (".yaml", ".yml")
# JSON is read too: a Secret in manifests/secret.json leaks as surely as one in YAML.
_CONFIG_SUFFIXES = (*_YAML, ".json")

_PEM_PRIVATE = re.compile(rb"-----BEGIN ((?:[A-Z0-9]+ )*)PRIVATE KEY( BLOCK)?-----")
# Bech32 is one case or the other: ``age-secret-key-1…`` is the same key in lower case.
_AGE_IDENTITY = re.compile(rb"(?i)AGE-SECRET-KEY-1[QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L]{58}")
_WORD = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")
_SENSITIVE_LAST = frozenset(
    {
        "password",
        "passwd",
        "pwd",
        "passphrase",
        "psk",
        "secret",
        "token",
        "credential",
        "credentials",
        "apikey",
    }
)
_SENSITIVE_PAIRS = frozenset(
    {("api", "key"), ("private", "key"), ("access", "key"), ("secret", "key"), ("auth", "key")}
)
_PLACEHOLDER = re.compile(r"^\$\{[^}]*\}$")
# Cheap test before parsing: a file without any of these words has no finding here.
_MAYBE = re.compile(rb"secret|pass|pwd|psk|token|credential|(?:api|private|access|auth)[-_]?key")
# The words `_MAYBE` matches, written out: a search for each is a C scan of the bytes,
# several times quicker than the expression's, and nearly every file has none of them.
# The twelve that end in "key" are found as a "key" that one of their heads comes before.
_MAYBE_WORDS = (b"secret", b"pass", b"pwd", b"psk", b"token", b"credential")
_MAYBE_KEY_HEADS = tuple(
    f"{head}{sep}".encode()
    for head in ("api", "private", "access", "auth")
    for sep in ("", "-", "_")
)
_KEY_HEAD_MAX = max(map(len, _MAYBE_KEY_HEADS))


def may_hold_secrets(data: bytes) -> bool:
    """Whether ``data`` holds a word that may name a secret (`_MAYBE`, in any case)."""
    lowered = data.lower()
    if any(map(lowered.__contains__, _MAYBE_WORDS)):
        return True
    at = lowered.find(b"key")
    while at >= 0:  # one search, not one per word: "key" is rare, twelve searches are not
        if lowered[max(0, at - _KEY_HEAD_MAX) : at].endswith(_MAYBE_KEY_HEADS):
            return True
        at = lowered.find(b"key", at + 1)
    return False


def sensitive_name(name: str) -> bool:
    """True if a field ``name`` obviously holds a secret (``adminPassword``, ``WIFI_PSK``)."""
    words = [w.lower() for w in _WORD.findall(name)]
    if not words or words[0] == "existing":
        return False
    if words[-1] in _SENSITIVE_LAST:
        return True
    return len(words) >= 2 and (words[-2], words[-1]) in _SENSITIVE_PAIRS


def _literal(value: object) -> bool:
    return isinstance(value, str) and value.strip() != "" and not _PLACEHOLDER.match(value.strip())


def scan_key_material(path: str, data: bytes) -> list[Problem]:
    """Private key blocks and age identities in one file (any file type)."""
    if path.startswith(EXAMPLE_KEY_DIRS):
        return []
    problems: list[Problem] = []
    for match in _PEM_PRIVATE.finditer(data):
        line = data.count(b"\n", 0, match.start()) + 1
        kind = match.group(1).decode("ascii").strip() or "PEM"
        problems.append(
            Problem(
                Mark(path, line),
                f"a {kind} private key is committed here in plaintext. Treat it as leaked: "
                "revoke or replace it, remove it from the tree (and from history if you can)",
            )
        )
    # The identity's pattern ignores case, which costs re its fast search for a literal:
    # a look for its fixed part in the lowered bytes first (4 ms, not 12, for 3 MB).
    found = _AGE_IDENTITY.finditer(data) if b"secret-key-1" in data.lower() else ()
    for match in found:
        line = data.count(b"\n", 0, match.start()) + 1
        problems.append(
            Problem(
                Mark(path, line),
                "an age private key (AGE-SECRET-KEY-1…) is committed here in plaintext. Treat "
                "it as leaked: rotate the site with `outpost secrets rotate-site` and change "
                "the secrets it could decrypt",
            )
        )
    return problems


def _secret_manifests(doc: YamlDocument) -> Iterator[Problem]:
    body = doc.body
    if (
        isinstance(body, dict)
        and body.get("kind") == "List"
        and isinstance(body.get("items"), list)
    ):
        for index, item in enumerate(body["items"]):
            yield from _secret_fields(doc, item, ("items", index))
    yield from _secret_fields(doc, body, ())


def _secret_fields(doc: YamlDocument, body: Any, at: tuple[str | int, ...]) -> Iterator[Problem]:
    if not isinstance(body, dict) or body.get("kind") != "Secret":
        return
    for field in ("data", "stringData"):
        values = body.get(field)
        if isinstance(values, dict) and any(v not in (None, "") for v in values.values()):
            yield Problem(
                doc.mark(*at, field),
                f"a Kubernetes Secret with {field} outside sites/<id>/secrets/: its values are "
                "plaintext in git. Move it to sites/<site>/secrets/<name>.sops.yaml, encrypted "
                "(`outpost secrets encrypt`), and change the values",
            )


def _walk(doc: YamlDocument, node: Any, at: tuple[str | int, ...]) -> Iterator[Problem]:
    """Sensitive keys with literal values, and ``{name: X_PASSWORD, value: literal}`` pairs."""
    if isinstance(node, dict):
        name = node.get("name")
        if isinstance(name, str) and sensitive_name(name) and _literal(node.get("value")):
            yield Problem(
                doc.mark(*at, "value"),
                f"{name!r} is set to a literal value; a password must come from an encrypted "
                "Secret (valueFrom.secretKeyRef to a secret in sites/<site>/secrets/)",
            )
        for key, value in node.items():
            if sensitive_name(str(key)) and _literal(value):
                yield Problem(
                    doc.mark(*at, key),
                    f"{key!r} holds a literal value that looks like a password or key; keep "
                    "secrets in sites/<site>/secrets/<name>.sops.yaml and refer to the Secret "
                    "by name (a field ending in SecretName or SecretRef)",
                )
            else:
                yield from _walk(doc, value, (*at, key))
    elif isinstance(node, list):
        for index, item in enumerate(node):
            yield from _walk(doc, item, (*at, index))


def _schema_defaults(
    doc: YamlDocument, schema: Any, at: tuple[str | int, ...]
) -> Iterator[Problem]:
    """``default:`` of sensitive properties in an app's parameters (a JSON Schema)."""
    if not isinstance(schema, dict):
        return
    properties = schema.get("properties")
    if isinstance(properties, dict):
        for name, prop in properties.items():
            where = (*at, "properties", name)
            if (
                isinstance(prop, dict)
                and sensitive_name(str(name))
                and _literal(prop.get("default"))
            ):
                yield Problem(
                    doc.mark(*where, "default"),
                    f"parameter {name!r} has a literal default that looks like a password; a "
                    "default is the same at every site and public in git — drop the default "
                    "and set the value from an encrypted Secret",
                )
            yield from _schema_defaults(doc, prop, where)
    items = schema.get("items")
    if isinstance(items, dict):
        yield from _schema_defaults(doc, items, (*at, "items"))


def _sensitive_values(path: str, doc: YamlDocument) -> Iterator[Problem]:
    body = doc.body
    if not isinstance(body, dict):
        return
    spec = body.get("spec")
    parts = path.split("/")
    if parts[0] == "apps" and len(parts) == 3 and parts[2] == "app.yaml":
        if isinstance(spec, dict):
            yield from _walk(doc, spec.get("defaults"), ("spec", "defaults"))
            yield from _schema_defaults(doc, spec.get("parameters"), ("spec", "parameters"))
    elif (parts[0] == "apps" and len(parts) >= 4 and parts[2] == "manifests") or (
        parts[0] == "sites" and len(parts) == 4 and parts[2] == "vms"
    ):
        yield from _walk(doc, body, ())
    elif parts[0] == "fleets" or (parts[0] == "sites" and len(parts) == 3):
        apps = spec.get("apps") if isinstance(spec, dict) else None
        if isinstance(apps, dict):
            yield from _walk(doc, apps, ("spec", "apps"))
            for name, entry in apps.items():
                patches = entry.get("patches") if isinstance(entry, dict) else None
                if isinstance(patches, list):
                    yield from _patches(doc, patches, ("spec", "apps", name, "patches"))


def _patches(doc: YamlDocument, patches: list[Any], at: tuple[str | int, ...]) -> Iterator[Problem]:
    """Plaintext written into a Secret by a site's patch.

    A JSON patch op ``{op: add, path: /data/WIFI_PSK, value: …}`` names the key in a path,
    which ``_walk`` does not read as a key; and a patch to a ``kind: Secret`` puts
    whatever it writes under ``data``/``stringData`` in the clear, whatever the key's name.
    """
    for index, patch in enumerate(patches):
        if not isinstance(patch, dict):
            continue
        target = patch.get("target")
        secret = isinstance(target, dict) and target.get("kind") == "Secret"
        where = (*at, index)
        merge = patch.get("merge")
        if secret and isinstance(merge, dict):
            for field in ("data", "stringData"):
                values = merge.get(field)
                if isinstance(values, dict) and any(_literal(v) for v in values.values()):
                    yield Problem(doc.mark(*where, "merge", field), _PATCHED)
        ops = patch.get("json")
        if not isinstance(ops, list):
            continue
        for number, op in enumerate(ops):
            if not isinstance(op, dict) or op.get("op") not in ("add", "replace"):
                continue
            pointer = str(op.get("path", ""))
            last = pointer.rsplit("/", 1)[-1].replace("~1", "/").replace("~0", "~")
            value = op.get("value")
            into_data = secret and pointer.split("/")[1:2] in (["data"], ["stringData"])
            literal = _literal(value) or (
                isinstance(value, dict) and any(_literal(v) for v in value.values())
            )
            if literal and (sensitive_name(last) or into_data):
                yield Problem(doc.mark(*where, "json", number, "value"), _PATCHED)


_PATCHED = (
    "this patch writes a literal value into a secret field; the value is plaintext in git. "
    "Put it in an encrypted Secret (sites/<site>/secrets/<name>.sops.yaml) and change it"
)


def scan_config(
    path: str, data: bytes, documents: Sequence[YamlDocument] | None = None
) -> list[Problem]:
    """Secret manifests and literal passwords in one configuration YAML file.

    ``documents``: the file's documents when the caller has parsed ``data`` already.
    """
    if not may_hold_secrets(data):
        return []
    if documents is None:
        try:
            documents = parse_yaml(data, path, multi=True)
        except OutpostError:
            if not path.endswith(".json"):
                return []  # layer 1 of validation reports files that do not parse
            documents = _json_documents(data, path)
    problems: list[Problem] = []
    for doc in documents:
        problems.extend(_secret_manifests(doc))
        problems.extend(_sensitive_values(path, doc))
    return problems


def _json_documents(data: bytes, path: str) -> list[YamlDocument]:
    """A JSON file YAML cannot read (tabs before a key): its value, every line at line 1."""
    import json

    from reconciler.core.loader import Lines

    try:
        body = json.loads(data)
    except (ValueError, RecursionError):
        return []
    return [YamlDocument(path, body, Lines(1))]


def in_config(path: str) -> bool:
    """Configuration YAML (or JSON) outside the encrypted secrets folders."""
    if not path.endswith(_CONFIG_SUFFIXES):
        return False
    if path.startswith("sites/") and path.split("/")[2:3] == ["secrets"]:
        return False
    return path.startswith(CONFIG_DIRS) or "/" not in path
