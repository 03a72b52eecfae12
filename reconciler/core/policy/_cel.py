"""The CEL binding (the ``common-expression-language`` distribution), imported without its CLI.

The package's ``__init__`` imports its own interactive command line (typer, rich,
prompt_toolkit, pygments) before the Rust extension it wraps: about 0.24 s of every
process that compiles one expression, a quarter of ``outpost validate``'s start-up on
a small repository and most of a node's policy step. Here the package is registered
without running that ``__init__``, and only the extension (``cel.cel``) and its
function library (``cel.stdlib``) are imported. The registered package exposes what
``from .cel import *`` gives it (``compile``, ``Context``, ``evaluate``...), so code
that writes ``import cel`` afterwards sees the same names; ``cel.cli`` still imports
on demand.

Imported only when a policy is compiled or evaluated, never at start-up.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any


def engine() -> ModuleType:
    """The extension module ``cel.cel`` (``compile``, ``Context``), loaded once."""
    loaded = sys.modules.get("cel.cel")
    if loaded is not None:
        return loaded
    if "cel" not in sys.modules:
        spec = importlib.util.find_spec("cel")
        if spec is None or spec.submodule_search_locations is None:
            raise ImportError(
                "the CEL binding is not installed (pip install common-expression-language)"
            )
        package = importlib.util.module_from_spec(spec)  # its __init__ is not run
        sys.modules["cel"] = package
        try:
            extension = importlib.import_module("cel.cel")
        except BaseException:
            del sys.modules["cel"]
            raise
        package.__dict__.update({k: v for k, v in vars(extension).items() if not k.startswith("_")})
        return extension
    return importlib.import_module("cel.cel")


def stdlib_functions() -> dict[str, Callable[..., Any]]:
    """cel's extended library (join, split, sets.*, math.*), or nothing in a binding without it."""
    engine()
    try:
        module = importlib.import_module("cel.stdlib")
    except ImportError:
        return {}
    functions: dict[str, Callable[..., Any]] = dict(module.STDLIB_FUNCTIONS)
    return functions
