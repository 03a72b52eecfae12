"""A partial run (``--changed-since``) parses only the site.yaml files that can matter,
and finds exactly what reading every site.yaml finds for the sites it checks."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sopsworld import World
from test_check import CASES

from reconciler.core import _fork
from reconciler.core.findings import Finding
from reconciler.core.model import Repository
from reconciler.core.secrets import _check, check_secrets
from reconciler.core.secrets._recipients import recipient_owners
from reconciler.core.source import WorkdirTree

SITES = ("shop-a", "shop-b", "plant-c")


class Counting(WorkdirTree):
    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.reads: Counter[str] = Counter()

    def read(self, path: str, limit: int = 1 << 23) -> bytes:
        self.reads[path] += 1
        return super().read(path, limit)


def _both(world: World, sites: list[str], monkeypatch: pytest.MonkeyPatch) -> tuple[Any, Any]:
    partial = check_secrets(Repository(WorkdirTree(world.root)), sites, sops=world.sops)
    with monkeypatch.context() as patched:
        patched.setattr(
            _check,
            "_recipients",
            lambda repo, selected, files, holders=None: recipient_owners(repo, repo.site_ids),
        )
        every = check_secrets(Repository(WorkdirTree(world.root)), sites, sops=world.sops)
    return partial, every


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("site", SITES)
def test_partial_runs_find_what_full_knowledge_finds(
    world: World, case: str, site: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    CASES[case][0](world)
    partial, every = _both(world, [site], monkeypatch)
    assert partial == every


def _recipient_line(world: World, site: str) -> str:
    text = (world.root / f"sites/{site}/site.yaml").read_text()
    return re.search(r".*recipient.*", text).group(0)  # type: ignore[union-attr]


def test_a_recipient_spelt_with_escapes_is_still_found(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    # shop-b declares shop-a's recipient with its first letters as \x escapes.
    shared = world.recipients["shop-a"]
    escaped = "".join(f"\\x{ord(c):02x}" for c in shared[:6]) + shared[6:]
    path = world.root / "sites/shop-b/site.yaml"
    path.write_text(
        path.read_text().replace(
            _recipient_line(world, "shop-b"), (f'  sops: {{recipient: "{escaped}"}}')
        )
    )
    assert shared.encode() not in path.read_bytes()
    partial, every = _both(world, ["shop-a"], monkeypatch)
    assert partial == every
    assert any("shares its age recipient" in f.message for f in partial)


def test_a_selected_site_without_recipient_still_needs_the_sops_config(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = world.root / "sites/shop-b/site.yaml"
    path.write_text(path.read_text().replace(_recipient_line(world, "shop-b") + "\n", ""))
    (world.root / ".sops.yaml").unlink()
    partial, every = _both(world, ["shop-b"], monkeypatch)
    assert partial == every
    assert any(f.path == ".sops.yaml" for f in partial)


def test_unrelated_sites_are_not_parsed(world: World) -> None:
    tree = Counting(world.root)
    findings: list[Finding] = check_secrets(Repository(tree), ["shop-a"], sops=world.sops)
    assert findings == []
    parsed_elsewhere = [p for p in tree.reads if p.endswith("site.yaml") and "shop-a" not in p]
    # Read once for the byte check; their recipients are not shop-a's, so never parsed.
    assert all(tree.reads[p] == 1 for p in parsed_elsewhere)


def test_the_tree_scan_split_across_workers_finds_the_same(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    for case in ("plaintext file", "pem key", "age key", "password default", "env literal"):
        CASES[case][0](world)
    repo = Repository(WorkdirTree(world.root))
    alone = _check.scan_tree(repo, list(SITES))
    monkeypatch.setattr(_check, "PARALLEL_MIN_FILES", 0)
    workers: list[int] = []
    real = _fork.fork_map
    monkeypatch.setattr(_fork, "fork_map", lambda t, c, n: workers.append(n) or real(t, c, n))
    split = _check.scan_tree(Repository(WorkdirTree(world.root)), list(SITES))
    assert split == alone
    assert len({f.path for f in alone}) >= 4
    assert workers and workers[0] == _fork.workers_for(len(SITES) * 10, 0)


_PIECES = st.one_of(
    st.sampled_from([b"age1", b"age", b"ge1", b"a", b"1", b" ", b"\n", b"A", b"-"]),
    st.text("0123456789abcdefghijklmnopqrstuvwxyz", min_size=50, max_size=70).map(str.encode),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_PIECES, min_size=2, max_size=12))
def test_recipient_runs_are_every_overlapping_run(pieces: list[bytes]) -> None:
    data = b"".join(pieces)
    every = re.compile(rb"(?=(age1[0-9a-z]{58}))")  # tried at every byte: the definition
    assert _check._recipient_runs(data) == every.findall(data)
