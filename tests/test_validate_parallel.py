"""Validation split across forked workers finds what one process finds, finding for finding."""

from __future__ import annotations

import shutil
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from test_validate_corpus import CASES, build_case

from reconciler.ci.validate import gatherers
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
        build_case(name, tmp_path), monkeypatch, extra=[secrets_check()], gather=gatherers()
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


@pytest.mark.parametrize(
    "recipient",
    [
        "12",
        "[age1, age2]",
        "{key: age1}",
        '"age1notarecipient"',
        '"9999-12-31T23:59:59Z"',
        '"' + "age1" + "q" * 5000 + '"',
    ],
)
def test_a_hostile_recipient_gathered_in_the_workers_is_the_finding_one_process_gives(
    recipient: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A site.yaml's ``spec.sops.recipient`` of the wrong type, not an age recipient, a
    date, or 5,000 characters: read where the workers load the site (`gather_site_keys`),
    it gives the finding at the recipient's line that one process gives, and no exception."""
    repo = tmp_path / "repo"
    for folder in ("sites", "fleets", "apps", "policies"):
        shutil.copytree(ROOT / folder, repo / folder)
    shutil.copyfile(ROOT / ".sops.yaml", repo / ".sops.yaml")
    site = repo / "sites" / "de-ber-0042" / "site.yaml"
    text = site.read_text()
    start = text.index("recipient: ") + len("recipient: ")
    site.write_text(text[:start] + recipient + text[text.index("}", text.index('"', start + 1)) :])
    alone, split, _ = _both_ways(repo, monkeypatch, extra=[secrets_check()], gather=gatherers())
    assert split == alone
    [found] = [f for f in alone if f.path == "sites/de-ber-0042/site.yaml" and f.rule == "secrets"]
    assert found.line == 16
    assert "not an age X25519 recipient" in found.message
