"""The ``cel`` binding without its command line.

The ``common-expression-language`` package's ``__init__`` imports its own command line
(typer, rich, prompt_toolkit) before the compiled extension: about 0.2 s and several
MB in every process that evaluates a policy, for a tool Outpost never runs. `cel_module`
imports the package's parts Outpost uses — the extension (``cel.cel``) and its
standard library (``cel.stdlib``) — under an empty ``cel`` package, with the
extension's names on it as the package's own ``__init__`` would put them. After that
``import cel`` anywhere in the process is this package; an import of ``cel.cli`` still
works (the package keeps its ``__path__``).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import sys
from types import ModuleType


def cel_module() -> ModuleType:
    """The ``cel`` package, its extension's names on it, without ``cel.cli``."""
    loaded = sys.modules.get("cel")
    if loaded is not None:
        return loaded
    spec = importlib.util.find_spec("cel")
    if spec is None or spec.submodule_search_locations is None:
        return importlib.import_module("cel")  # not the package we know: its own way
    package = importlib.util.module_from_spec(spec)  # the package, its __init__ not run
    sys.modules["cel"] = package
    try:
        extension = importlib.import_module("cel.cel")
        exported = getattr(extension, "__all__", None)
        names = exported if exported is not None else dir(extension)
        for name in names:
            if not name.startswith("_"):
                setattr(package, name, getattr(extension, name))
    except BaseException:
        del sys.modules["cel"]
        sys.modules.pop("cel.cel", None)
        raise
    with contextlib.suppress(ImportError):  # an older binding has no stdlib
        importlib.import_module("cel.stdlib")
    return package
