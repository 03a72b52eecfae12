"""Serialising a rendered site: the same bytes on every run and every machine.

Keys are sorted, objects come in the slice's order, and YAML is written by
PyYAML's pure-Python emitter (not libyaml's, whose line breaking may differ by
build) with a line width wide enough that long strings never fold. Multi-line
strings use the literal block style, so a ConfigMap's file reads as a file in
``outpost render`` and in diffs.
"""

from __future__ import annotations

import json
from typing import Any

import yaml

from reconciler.core.render._types import RenderedSite

_WIDTH = 1 << 16


class _Dumper(yaml.SafeDumper):
    """SafeDumper with literal blocks for multi-line strings."""


_CDumper: type[Any] = type("_CDumper", (getattr(yaml, "CSafeDumper", yaml.SafeDumper),), {})


def _str(dumper: Any, value: str) -> yaml.ScalarNode:
    if "\x85" in value:
        # PyYAML's pure emitter writes NEL raw in quoted and block scalars, where a reader
        # takes it for a line break; the double-quoted style escapes it as \N.
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style='"')  # type: ignore[no-any-return]
    if "\n" in value:
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|")  # type: ignore[no-any-return]
    return dumper.represent_scalar("tag:yaml.org,2002:str", value)  # type: ignore[no-any-return]


_Dumper.add_representer(str, _str)
_CDumper.add_representer(str, _str)


def dump_yaml(body: Any, *, fast: bool = False) -> str:
    """One object as YAML, keys sorted.

    ``fast`` uses libyaml's emitter when installed (about 20 times quicker); the
    diff uses it for the objects that change. The canonical bytes (``to_yaml``,
    golden files) always come from the pure-Python emitter.
    """
    text: str = yaml.dump(
        body,
        Dumper=_CDumper if fast else _Dumper,
        sort_keys=True,
        default_flow_style=False,
        allow_unicode=True,
        width=_WIDTH,
        explicit_start=False,
    )
    return text


def to_yaml(rendered: RenderedSite) -> str:
    """The slice as a YAML stream (``kubectl apply -f -`` reads it).

    A comment header names the site, the revision (when rendered from a
    commit), the encrypted secrets the node adds and the node labels: those
    are part of the slice but not objects anyone should apply from this text.
    """
    header = [f"# outpost render: site {rendered.site}"]
    if rendered.revision:
        header.append(f"# revision: {rendered.revision}")
    for ref in rendered.secret_refs:
        header.append(f"# secret {ref.key} from {ref.path} (encrypted; decrypted on the node)")
    for node, labels in sorted(rendered.node_labels.items()):
        pairs = ", ".join(f"{k}={v}" for k, v in sorted(labels.items()))
        header.append(f"# node {node} labels: {pairs}")
    docs = ["---\n" + dump_yaml(obj.body) for obj in rendered.objects]
    return "\n".join(header) + "\n" + "".join(docs)


def as_data(rendered: RenderedSite) -> dict[str, Any]:
    """The slice as plain data: objects with their keys and origins, secrets, node labels."""
    return {
        "site": rendered.site,
        "revision": rendered.revision,
        "objects": [
            {
                "key": str(obj.key),
                "app": obj.app,
                "origin": str(obj.origin),
                "patches": [str(m) for m in obj.patches],
                "object": obj.body,
            }
            for obj in rendered.objects
        ],
        "secrets": [
            {"key": str(r.key), "path": r.path, "sha256": r.sha256} for r in rendered.secret_refs
        ],
        "nodeLabels": {node: dict(labels) for node, labels in rendered.node_labels.items()},
        "apps": [
            {"name": a.name, "version": a.version, "namespace": a.namespace} for a in rendered.apps
        ],
        "sources": list(rendered.sources),
    }


def to_json(rendered: RenderedSite) -> str:
    """The slice as JSON (``as_data``), keys sorted, two-space indent."""
    return json.dumps(as_data(rendered), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
