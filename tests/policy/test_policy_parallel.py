"""A run split across forked workers finds exactly what one process finds, in the same order."""

from __future__ import annotations

import gc
import os
import shutil
from datetime import date
from pathlib import Path

import pytest

from reconciler.core._fork import fork_map, workers_for
from reconciler.core.errors import RenderError
from reconciler.core.model import Repository
from reconciler.core.policy import PolicyCache, validate_policies
from reconciler.core.policy._parallel import _shards
from reconciler.core.source import WorkdirTree

ROOT = Path(__file__).resolve().parents[2]
TODAY = date(2026, 6, 1)


def _broken_fleet(tmp_path: Path) -> Path:
    """The example fleet with a policy violation at many sites and render errors at two."""
    root = tmp_path / "repo"
    for top in ("apps", "fleets", "sites", "policies"):
        shutil.copytree(ROOT / top, root / top)
    manifest = root / "apps/node-metrics/manifests/daemonset.yaml"
    manifest.write_text(
        manifest.read_text().replace("image: ${images.exporter}", "image: prom/exporter:latest")
    )
    for index in (3, 9):
        site = sorted((root / "sites").iterdir())[index]
        (site / "overrides.yaml").write_text(
            "apiVersion: outpost/v1\nkind: SiteOverrides\n"
            f"metadata: {{name: {site.name}}}\nspec:\n  apps:\n    nothing-here: {{}}\n"
        )
    return root


def test_workers_find_what_one_process_finds(tmp_path: Path) -> None:
    root = _broken_fleet(tmp_path)
    one, many = PolicyCache(), PolicyCache()
    alone = validate_policies(Repository(WorkdirTree(root)), today=TODAY, cache=one, workers=1)
    split = validate_policies(Repository(WorkdirTree(root)), today=TODAY, cache=many, workers=2)
    assert split == alone
    assert {f.rule for f in alone} >= {"render", "image-digest", "no-latest-tag"}
    assert any("sites:" in f.message for f in alone)  # aggregated across shards
    # Each worker keeps its own cache: as many checks, a few more evaluations.
    assert one.hits + one.misses == many.hits + many.misses
    assert many.misses >= one.misses


def test_shards_are_contiguous_and_cover_every_site() -> None:
    sites = [f"s{i:03d}" for i in range(23)]
    for workers in (1, 2, 3, 8):
        shards = _shards(sites, workers)
        assert [s for shard in shards for s in shard] == sites
        assert all(shards)
        assert max(map(len, shards)) - min(map(len, shards)) <= 1


def test_fork_map_keeps_order_and_raises_what_a_task_raises() -> None:
    parent = os.getpid()
    results = fork_map(lambda i: (i * i, os.getpid() != parent), 6, 2)
    assert [r[0] for r in results] == [0, 1, 4, 9, 16, 25]
    assert all(r[1] for r in results)  # computed in the workers

    def fails(index: int) -> int:
        if index == 3:
            raise RenderError("shard three is broken")
        return index

    with pytest.raises(RenderError, match="shard three is broken"):
        fork_map(fails, 5, 2)


def test_small_runs_stay_in_this_process() -> None:
    assert workers_for(10, 500) == 1
    parent = os.getpid()
    assert fork_map(lambda i: os.getpid(), 3, 1) == [parent] * 3


def test_fork_map_leaves_the_collector_as_it_found_it() -> None:
    assert gc.isenabled()
    fork_map(lambda i: gc.isenabled(), 2, 2)
    assert gc.isenabled() and gc.get_freeze_count() == 0
    gc.disable()
    try:
        fork_map(lambda i: i, 2, 2)
        assert not gc.isenabled() and gc.get_freeze_count() == 0
    finally:
        gc.enable()


def test_runs_over_the_same_policy_documents_share_one_compiled_set_and_cache(
    tmp_path: Path,
) -> None:
    """A forked validation checks its sites in several runs, each over a Repository of its
    own sharing the parsed policy documents: the policies are compiled once and what one
    run evaluated is not evaluated again by the next."""
    from reconciler.core.loader import load_document
    from reconciler.core.policy import _parallel

    root = _broken_fleet(tmp_path)
    parsed = {
        f"policies/{path.name}": [load_document(path.read_bytes(), f"policies/{path.name}")]
        for path in (root / "policies").glob("*.yaml")
        if path.stem != "signers"
    }
    first = Repository(WorkdirTree(root), parsed=parsed)
    sites = list(first.site_ids)
    found = validate_policies(first, sites[:6], today=TODAY, workers=1)
    (entry,) = _parallel._LOADED
    cache = entry[3]
    misses = cache.misses
    assert misses > 0
    # another run, its own Repository over the same parsed documents (as a worker's runs)
    again = Repository(WorkdirTree(root), parsed=parsed)
    assert validate_policies(again, sites[:6], today=TODAY, workers=1) == found
    assert _parallel._LOADED[0][2] is entry[2]  # the same compiled policies
    assert cache.misses == misses  # every evaluation came from the first run
    # other documents (a fresh read of the tree), or another day: loaded again
    validate_policies(Repository(WorkdirTree(root)), sites[:6], today=TODAY, workers=1)
    assert _parallel._LOADED[0][2] is not entry[2]
    validate_policies(again, sites[:6], today=date(2026, 6, 2), workers=1)
    assert _parallel._LOADED[0][1] == date(2026, 6, 2)
