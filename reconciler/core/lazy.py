"""A package's names imported from their modules when first used (PEP 562 ``__getattr__``).

A node's tick needs a few names of a package (decryption, not key management; the
verifier, not the signers' file tools): importing each module only when one of its names
is first asked for keeps the others out of the process.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any


def lazy_names(package: str, home: Mapping[str, str]) -> Callable[[str], Any]:
    """The module ``__getattr__`` of ``package``: each name of ``home`` (name → module,
    relative to the package) imported on first use and kept in the package's namespace."""

    def __getattr__(name: str) -> Any:
        module = home.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{module}"), name)
        setattr(sys.modules[package], name, value)
        return value

    return __getattr__
