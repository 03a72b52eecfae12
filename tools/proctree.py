"""A process and its descendants as Linux's /proc shows them: what the benches measure.

Peak memory of a command is the peak over every process it starts (forked workers,
git, a signature worker), sampled while it runs; these read one sample.
"""

from __future__ import annotations

import os


def tree_pids(pid: int) -> list[int]:
    """``pid`` and every process below it (``/proc/PID/task/*/children``)."""
    pids, stack = [], [pid]
    while stack:
        current = stack.pop()
        pids.append(current)
        try:
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as found:
                    stack.extend(int(c) for c in found.read().split())
        except OSError:
            continue
    return pids


def kib(pid: int, path: str, field: str) -> int:
    """The KiB figure of ``field`` (``"Pss:"``, ``"VmHWM:"``) in ``/proc/PID/<path>``; 0 when
    the process is gone."""
    try:
        with open(f"/proc/{pid}/{path}") as lines:
            for line in lines:
                if line.startswith(field):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def pss_kib(pid: int) -> int:
    """Proportional set size: a page shared by k processes counts 1/k (what it costs)."""
    return kib(pid, "smaps_rollup", "Pss:")
