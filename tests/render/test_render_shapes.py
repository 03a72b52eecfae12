"""``RenderedObject.shape``: objects of one shape differ only in the site label render stamps,
so the policy check computes what it sees of them, and its digest, once for all sites.

The example fleet's stores share apps and versions; every site is rendered and the shapes
are checked against what they promise, and the policy check gives the same findings with
and without them."""

from __future__ import annotations

import dataclasses
import shutil
from datetime import date
from pathlib import Path

from reconciler.core.labels import without_site_label
from reconciler.core.model import Repository
from reconciler.core.policy import PolicyCache, load_policies
from reconciler.core.policy._load import policy_documents
from reconciler.core.policy._site import check_folder
from reconciler.core.render import render_site
from reconciler.core.source import WorkdirTree

ROOT = Path(__file__).resolve().parents[2]


def _example(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    for top in ("apps", "fleets", "sites", "policies"):
        shutil.copytree(ROOT / top, root / top)
    return root


def test_objects_of_one_shape_differ_only_in_the_site_label(tmp_path: Path) -> None:
    repo = Repository(WorkdirTree(_example(tmp_path)))
    seen: dict[object, tuple[str, dict[str, object]]] = {}
    shared = 0
    for site_id in repo.site_ids:
        for obj in render_site(repo, site_id).objects:
            if obj.shape is None:
                continue
            view = without_site_label(obj.body, site_id)
            assert view != obj.body  # the site label was there, and is gone from the view
            first = seen.setdefault(obj.shape, (site_id, view))
            if first[0] != site_id:
                shared += 1
                assert view == first[1], (obj.key, site_id, first[0])
    assert shared >= 10  # the stores of a fleet do share shapes


def test_a_patched_placed_or_self_labelled_object_has_no_shape(tmp_path: Path) -> None:
    root = _example(tmp_path)
    manifest = root / "apps/node-metrics/manifests/daemonset.yaml"
    text = manifest.read_text()
    assert "  labels:\n" in text
    manifest.write_text(
        text.replace("  labels:\n", "  labels:\n    outpost/site: de-ber-0042\n", 1)
    )
    repo = Repository(WorkdirTree(root))
    found = {"labelled": 0, "patched": 0, "placed": 0}
    for site_id in repo.site_ids:
        rendered = render_site(repo, site_id)
        devices = {i.name for i in rendered.apps if i.app.required_device_types}
        for obj in rendered.objects:
            if obj.app == "node-metrics" and obj.key.kind == "DaemonSet":
                found["labelled"] += 1
                assert obj.shape is None
            if obj.patches:
                found["patched"] += 1
                assert obj.shape is None
            if obj.app in devices:
                found["placed"] += 1
                assert obj.shape is None
    assert all(found.values()), found


def test_the_policy_check_finds_the_same_with_and_without_shapes(tmp_path: Path) -> None:
    root = _example(tmp_path)
    # a violation every store renders: the node exporter's image by tag
    manifest = root / "apps/node-metrics/manifests/daemonset.yaml"
    manifest.write_text(
        manifest.read_text().replace("image: ${images.exporter}", "image: prom/exporter:latest")
    )
    repo = Repository(WorkdirTree(root))
    documents, _ = policy_documents(repo)
    policies = load_policies(documents, today=date(2026, 6, 1))
    with_shapes, without = PolicyCache(), PolicyCache()
    flagged = 0
    for site_id in repo.site_ids:
        rendered = render_site(repo, site_id)
        bare = dataclasses.replace(
            rendered, objects=tuple(dataclasses.replace(o, shape=None) for o in rendered.objects)
        )
        folder = repo.site(site_id)
        mine: dict[int, tuple[object, bytes]] = {}
        theirs: dict[int, tuple[object, bytes]] = {}
        found = check_folder(policies, rendered, folder, cache=with_shapes, digests=mine)
        plain = check_folder(policies, bare, folder, cache=without, digests=theirs)
        assert found == plain
        flagged += any(f.rule == "no-latest-tag" for f in found)
        # the Kubernetes schema check gets the same bodies and digests either way
        assert [mine[id(o.body)] for o in rendered.objects] == [
            theirs[id(o.body)] for o in bare.objects
        ]
    assert flagged >= 5
