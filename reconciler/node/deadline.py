"""Run one step of the node's tick in a forked child, ended when it outlives its deadline.

The CEL interpreter holds the GIL and checks no signal while it runs, so neither a
thread's timeout nor SIGALRM can stop an expression that runs too long; ending a
process can. Policies are costed before each evaluation (``core.cel_cost``) — this is
the backstop for whatever the estimate misses, so that the node's tick stays bounded:
the step runs in a child forked for it (it inherits the loaded repository, nothing is
pickled in), the result comes back through a pipe, and a child still running at the
deadline is killed and the step fails with a ``PolicyError`` (the commit is refused and
recorded; drift is still corrected).

Off Linux (no safe fork with native libraries loaded) the step runs in this process.
"""

from __future__ import annotations

import multiprocessing
import sys
from collections.abc import Callable
from typing import Any, TypeVar

from reconciler.core.errors import OutpostError, PolicyError

T = TypeVar("T")


def call_with_deadline(step: Callable[[], T], seconds: float, what: str) -> T:
    """``step()``, or ``PolicyError`` if it has not returned after ``seconds``."""
    if not sys.platform.startswith("linux"):
        return step()
    context = multiprocessing.get_context("fork")
    reader, writer = context.Pipe(duplex=False)

    def child() -> None:
        outcome: tuple[str, Any]
        try:
            outcome = ("value", step())
        except OutpostError as exc:
            outcome = ("outpost", exc)
        except BaseException as exc:  # carried back as text: the parent raises it
            outcome = ("other", f"{type(exc).__name__}: {exc}")
        try:
            writer.send(outcome)
        except Exception as exc:  # an unpicklable result is a defect, said so
            writer.send(("other", f"cannot return the result of {what}: {exc}"))

    process = context.Process(target=child, daemon=True)
    process.start()
    writer.close()
    try:
        if not reader.poll(seconds):
            process.kill()
            raise PolicyError(
                f"{what} did not finish within {seconds:g} s and was stopped; a policy "
                "expression is probably too costly for this slice"
            )
        try:
            kind, value = reader.recv()
        except EOFError:
            raise PolicyError(
                f"{what} ended without a result (exit code {process.exitcode})"
            ) from None
    finally:
        reader.close()
        process.join(timeout=5)
    if kind == "value":
        result: T = value
        return result
    if kind == "outpost":
        raise value
    raise RuntimeError(str(value))
