"""Validation split across forked workers finds what one process finds, finding for finding."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import pytest
from test_validate_corpus import CASES, build_case

from reconciler.core import _fork, validate
from reconciler.core.errors import Mark
from reconciler.core.findings import Finding
from reconciler.core.policy import policy_check
from reconciler.core.secrets import _check as secrets_checks
from reconciler.core.secrets import secrets_check
from reconciler.core.source import WorkdirTree
from reconciler.core.validate import validate_tree

ROOT = Path(__file__).resolve().parent.parent
PARALLEL = _fork.workers_for(10**6, 0) >= 2  # Linux with two cores or more


def _both_ways(
    root: Path, monkeypatch: pytest.MonkeyPatch, **kwargs: Any
) -> tuple[list[Any], list[Any], list[int]]:
    workers: list[int] = []
    real = _fork.fork_map

    def spy(task: Any, count: int, n: int) -> Any:
        workers.append(n)
        return real(task, count, n)

    monkeypatch.setattr(_fork, "fork_map", spy)
    alone = validate_tree(WorkdirTree(root), **kwargs)
    monkeypatch.setattr(validate, "PARALLEL_MIN_FILES", 0)
    monkeypatch.setattr(secrets_checks, "PARALLEL_MIN_FILES", 0)  # the key scan splits too
    split = validate_tree(WorkdirTree(root), **kwargs)
    return alone, split, workers


@pytest.mark.parametrize("name", CASES)
def test_every_corpus_case_finds_the_same_split(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # With the secrets check, as `outpost validate` runs: some cases are broken only there.
    alone, split, workers = _both_ways(
        build_case(name, tmp_path), monkeypatch, extra=[secrets_check()]
    )
    assert split == alone
    assert alone  # every case is broken somehow
    assert workers[0] == 1
    assert (workers[-1] >= 2) == PARALLEL


def test_policies_on_top_find_the_same_split(monkeypatch: pytest.MonkeyPatch) -> None:
    check = policy_check(today=date(2026, 6, 1))
    alone, split, _ = _both_ways(ROOT, monkeypatch, extra=[check])
    assert split == alone


def test_a_commit_is_loaded_in_this_process(monkeypatch: pytest.MonkeyPatch) -> None:
    class Commit(WorkdirTree):
        @property
        def revision(self) -> str | None:
            return "0" * 40

    workers: list[int] = []
    real = _fork.fork_map
    monkeypatch.setattr(_fork, "fork_map", lambda t, c, n: workers.append(n) or real(t, c, n))
    monkeypatch.setattr(validate, "PARALLEL_MIN_FILES", 0)
    validate_tree(Commit(ROOT))
    assert workers == [1]


def test_site_checks_in_the_loading_workers_find_what_one_process_finds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The policies as `outpost validate` runs them: in the worker that loaded each run of
    # site folders, their parts merged here. A probe finding of no site says the check ran:
    # once in one process, once per part in the workers (the same finding, said once).
    ran: list[bool] = []
    probe = Finding.at(Mark("policies"), "the site checks ran", rule="probe")

    def policies(collapse: bool) -> Any:
        check = policy_check(today=date(2026, 6, 1), collapse=collapse)

        def run(repo: Any, sites: Any) -> Any:
            ran.append(collapse)
            return [*check(repo, sites), probe]

        return run

    alone, split, workers = _both_ways(
        ROOT, monkeypatch, extra=[secrets_check()], site_checks=[policies]
    )
    assert split == alone
    assert probe in alone
    if PARALLEL:
        assert workers[-1] >= 2
        assert ran == [True]  # the split run's parts ran in its workers, not here
    else:
        assert ran == [True, True]
