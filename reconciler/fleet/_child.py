"""The command line of a fresh interpreter that runs one function of this copy of the package.

The collector's helper processes (the signature workers, a change's schedule)
are started this way rather than with `multiprocessing`: a plain child process
with pipes carries nothing of the serving process (threads, sockets, database
connections, memory) and needs no ``resource_tracker`` process beside it.
The package's own directory comes first on the child's path, so the child runs
the same code as its parent whatever the environment says.
"""

from __future__ import annotations

import sys
from pathlib import Path

import reconciler

__all__ = ["python_running"]


def python_running(module: str, function: str, *args: str) -> list[str]:
    """``python -c`` calling ``module.function()``; ``args`` are its ``sys.argv[1:]``."""
    root = str(Path(reconciler.__file__).resolve().parents[1])
    boot = f"import sys; sys.path.insert(0, {root!r}); from {module} import {function} as f; f()"
    return [sys.executable, "-c", boot, *args]
