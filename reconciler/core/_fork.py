"""Independent pieces of one large validation run in forked processes, results in order.

CI validates thousands of sites on a machine with a few cores, and after the
repository is loaded each site's render and policy check depends on nothing but
that loaded state. Forking shares the loaded state with the workers for free
(copy-on-write); only the tasks' small results travel back, pickled. Nothing
here runs on a node: a node renders one site, below any threshold.

Off Linux, or when the work is small, tasks run in this process.
Results come back in task order, so the caller's output is the same either way.
"""

from __future__ import annotations

import gc
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

R = TypeVar("R")
T = TypeVar("T")

_TASK: Callable[[int], Any] | None = None


def workers_for(items: int, minimum: int) -> int:
    """How many processes ``items`` pieces of work deserve: 1 below ``minimum``, or off Linux.

    Only Linux forks a process that has loaded native libraries (libgit2, libyaml,
    the CEL engine) safely; macOS warns that such a child may crash, and Windows
    cannot fork at all. Elsewhere the work runs in this process, as it always did.
    In a worker of ``fork_map`` it is 1 too: that worker is one of the processes already.
    """
    if items < minimum or _IN_WORKER or not sys.platform.startswith("linux"):
        return 1
    return max(1, min(len(os.sched_getaffinity(0)), items))


_COLLECT = True
_IN_WORKER = False  # this process is a worker of fork_map: its tasks run here
_PAUSED = False  # collections are paused in this process only (`paused_collections`)
_FULL_EVERY = 100  # in a worker: a full collection per this many of the middle generation


@contextmanager
def paused_collections() -> Iterator[None]:
    """No cyclic collection in this process meanwhile; workers forked meanwhile collect
    as they would have (what they allocate is theirs to collect).

    For a process that holds a large, long-lived heap and only reads it for a while:
    a full collection would walk all of it to free nothing.
    """
    global _PAUSED
    if not gc.isenabled() or _PAUSED:
        yield
        return
    gc.disable()
    _PAUSED = True
    try:
        yield
    finally:
        _PAUSED = False
        gc.enable()


def contiguous(items: Sequence[T], parts: int) -> list[list[T]]:
    """``items`` cut into at most ``parts`` contiguous runs whose sizes differ by one at most."""
    count = max(1, min(len(items), parts))
    size, extra = divmod(len(items), count)
    runs: list[list[T]] = []
    start = 0
    for index in range(count):
        end = start + size + (1 if index < extra else 0)
        runs.append(list(items[start:end]))
        start = end
    return runs


def tapering(items: Sequence[T], workers: int, parts: int, smallest: int) -> list[list[T]]:
    """``items`` cut into contiguous runs for ``workers`` taking them in order: about
    ``parts`` runs of equal size, then smaller and smaller ones (down to ``smallest``).

    ``fork_map`` hands the next run to whichever worker is free, so the run last started
    decides how long the others wait at the end: a quarter of what is left (divided among
    the workers) at most, never more than the runs before.
    """
    cap = max(1, -(-len(items) // max(1, parts)))
    runs: list[list[T]] = []
    start = 0
    while start < len(items):
        left = len(items) - start
        size = min(cap, max(smallest, -(-left // (2 * max(1, workers)))), left)
        runs.append(list(items[start : start + size]))
        start += size
    return runs


def map_runs(
    task: Callable[[Sequence[T]], list[R]], items: Sequence[T], minimum: int, *, fork: bool = True
) -> list[R]:
    """``task`` over contiguous runs of ``items``, its results joined in the items' order:
    in forked workers (two runs each) when there are ``minimum`` items or more and ``fork``
    (False for work that must stay in this process, such as a commit's git objects)."""
    workers = workers_for(len(items), minimum) if fork else 1
    runs = contiguous(items, 1 if workers <= 1 else workers * 2)
    parts = fork_map(lambda index: task(runs[index]), len(runs), workers)
    return [result for part in parts for result in part]


def _run(index: int) -> Any:
    global _IN_WORKER
    assert _TASK is not None, "a forked worker always inherits its task"
    _IN_WORKER = True
    if _COLLECT and not gc.isenabled():
        gc.enable()  # for what the worker allocates; the inherited heap stays frozen
        # A worker lives for one map, and a full collection walks everything it has built
        # (its caches, the documents of its runs) to free next to nothing: one every
        # _FULL_EVERY collections of the middle generation instead of every 10 (about
        # half a second of CPU at 10,000 sites). Young cycles are collected as before.
        young, middle, _ = gc.get_threshold()
        gc.set_threshold(young, middle, _FULL_EVERY)
    return _TASK(index)


def fork_map(task: Callable[[int], R], count: int, workers: int) -> list[R]:
    """``[task(0), ..., task(count - 1)]``, computed by ``workers`` forked processes.

    ``task`` is inherited by the workers through fork, never pickled, so it may close
    over anything; its results are pickled back. An exception in a task is raised
    here. With one worker (or one task), or in a worker already (a task that maps
    again), everything runs in this process.
    """
    global _TASK, _COLLECT
    if workers <= 1 or count <= 1 or _IN_WORKER:
        return [task(index) for index in range(count)]
    collecting = gc.isenabled()
    _TASK, _COLLECT = task, collecting or _PAUSED
    # The workers' collector never walks the heap they inherit (walking it would
    # copy every page it touches), and this process unpickles results without
    # collections: they are plain containers, rebuilt in bulk.
    gc.disable()
    gc.freeze()
    try:
        import multiprocessing  # here, not above: a run over a few sites never forks
        from concurrent.futures import ProcessPoolExecutor

        context = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(max_workers=min(workers, count), mp_context=context) as pool:
            return list(pool.map(_run, range(count)))
    finally:
        # The results join this process's old objects without a collection walking
        # them (freezing takes every object; unfreezing puts them all in the oldest
        # generation): they are as long-lived as the repository they came with.
        gc.freeze()
        gc.unfreeze()
        if collecting:
            gc.enable()
        _TASK = None
