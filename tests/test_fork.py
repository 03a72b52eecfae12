"""`_fork`'s handling of the cyclic collector: paused in the parent, tuned in workers."""

from __future__ import annotations

import gc
import sys

import pytest

from reconciler.core._fork import fork_map, paused_collections

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="forked workers: Linux only")


def _collector(_: int) -> tuple[bool, int]:
    return gc.isenabled(), gc.get_threshold()[2]


def test_paused_collections_pause_this_process_only() -> None:
    assert gc.isenabled()
    with paused_collections():
        assert not gc.isenabled()
        workers = fork_map(_collector, 2, 2)
        assert not gc.isenabled()  # the map does not resume what was paused around it
        with paused_collections():  # nested: the outer pause stays in force
            pass
        assert not gc.isenabled()
    assert gc.isenabled()
    # The workers collect, a full collection once per 100 of the middle generation.
    assert workers == [(True, 100), (True, 100)]


def test_paused_collections_resume_after_an_error() -> None:
    with pytest.raises(ValueError), paused_collections():
        raise ValueError("boom")
    assert gc.isenabled()


def test_a_process_that_does_not_collect_keeps_its_workers_from_collecting() -> None:
    gc.disable()
    try:
        assert fork_map(_collector, 2, 2) == [(False, gc.get_threshold()[2])] * 2
        assert not gc.isenabled()
    finally:
        gc.enable()


def _pids(run: object) -> list[tuple[int, int]]:
    import os

    assert isinstance(run, list)
    return [(item, os.getpid()) for item in run]


@pytest.mark.parametrize(("count", "fork"), [(99, True), (100, True), (5_000, True), (100, False)])
def test_map_runs_keeps_the_order_and_forks_only_past_its_minimum(count: int, fork: bool) -> None:
    import os

    from reconciler.core._fork import map_runs

    items = list(range(count))
    results = map_runs(_pids, items, 100, fork=fork)
    assert [item for item, _ in results] == items  # every item once, in order
    pids = {pid for _, pid in results}
    cores = len(os.sched_getaffinity(0))
    if count < 100 or not fork or cores == 1:
        assert pids == {os.getpid()}
    else:  # forked workers, at most one per core (one may have taken every run)
        assert os.getpid() not in pids and 1 <= len(pids) <= cores
