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
from collections.abc import Iterator
from typing import Any

from reconciler.core.errors import Mark, OutpostError
from reconciler.core.loader import YamlDocument, parse_yaml
from reconciler.core.secrets._files import Problem

EXAMPLE_KEY_DIRS = ("tests/keys/",)
CONFIG_DIRS = ("apps/", "fleets/", "sites/", "policies/", "deploy/")
_YAML = (".yaml", ".yml")

_PEM_PRIVATE = re.compile(rb"-----BEGIN ((?:[A-Z0-9]+ )*)PRIVATE KEY( BLOCK)?-----")
_AGE_IDENTITY = re.compile(rb"AGE-SECRET-KEY-1[QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L]{58}")
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
    for match in _AGE_IDENTITY.finditer(data):
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
    if not isinstance(body, dict) or body.get("kind") != "Secret":
        return
    for field in ("data", "stringData"):
        values = body.get(field)
        if isinstance(values, dict) and any(v not in (None, "") for v in values.values()):
            yield Problem(
                doc.mark(field),
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


def scan_config(path: str, data: bytes) -> list[Problem]:
    """Secret manifests and literal passwords in one configuration YAML file."""
    if not _MAYBE.search(data.lower()):
        return []
    try:
        documents = parse_yaml(data, path, multi=True)
    except OutpostError:
        return []  # layer 1 of validation reports files that do not parse
    problems: list[Problem] = []
    for doc in documents:
        problems.extend(_secret_manifests(doc))
        problems.extend(_sensitive_values(path, doc))
    return problems


def in_config(path: str) -> bool:
    """Configuration YAML outside the encrypted secrets folders."""
    if not path.endswith(_YAML):
        return False
    if path.startswith("sites/") and path.split("/")[2:3] == ["secrets"]:
        return False
    return path.startswith(CONFIG_DIRS) or "/" not in path
