"""The JSON Schemas of every document kind: loaded once, compiled once.

The schemas in ``schemas/`` are the contract of the repository format. They are
installed with the package as ``reconciler._schemas`` (see pyproject), so a
node validates its slice with the same contract CI used.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from reconciler.errors import ConfigError

_REPO_SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"


def _schema_dir() -> Any:
    if (_REPO_SCHEMAS / "site.schema.json").is_file():
        return _REPO_SCHEMAS
    try:
        packaged = resources.files("reconciler._schemas")
        if packaged.joinpath("site.schema.json").is_file():
            return packaged
    except (ModuleNotFoundError, TypeError):
        pass
    raise ConfigError(
        "the Outpost JSON Schemas are not installed (expected reconciler/_schemas or "
        f"{_REPO_SCHEMAS}); reinstall the package"
    )


@cache
def _registry() -> tuple[Any, dict[str, Any]]:
    from referencing import Registry, Resource

    by_file: dict[str, Any] = {}
    resources_: list[tuple[str, Any]] = []
    for entry in sorted(_schema_dir().iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".schema.json"):
            continue
        schema = json.loads(entry.read_text(encoding="utf-8"))
        by_file[entry.name] = schema
        resource = Resource.from_contents(schema)
        resources_.append((schema.get("$id", entry.name), resource))
    return Registry().with_resources(resources_), by_file


@cache
def validator(kind: str) -> Any:
    """A compiled Draft 2020-12 validator for one document kind (``Site`` → site.schema.json)."""
    from jsonschema import Draft202012Validator

    registry, by_file = _registry()
    schema = by_file.get(f"{kind.lower()}.schema.json")
    if schema is None:
        raise ConfigError(f"no schema for kind {kind!r} (expected {kind.lower()}.schema.json)")
    return Draft202012Validator(
        schema, registry=registry, format_checker=Draft202012Validator.FORMAT_CHECKER
    )
