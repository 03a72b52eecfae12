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
from typing import Any

import pytest

from reconciler.core.labels import without_site_label
from reconciler.core.model import Repository
from reconciler.core.policy import PolicyCache, load_policies
from reconciler.core.policy._facts import site_status
from reconciler.core.policy._load import policy_documents
from reconciler.core.policy._site import check_folder
from reconciler.core.render import _site, render_site, to_json
from reconciler.core.render._placement import placement_key
from reconciler.core.source import WorkdirTree

ROOT = Path(__file__).resolve().parents[2]


def _example(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    for top in ("apps", "fleets", "sites", "policies"):
        shutil.copytree(ROOT / top, root / top)
    # Two stores run the camera app on one GPU each; with the same values at both, and two
    # GPUs per node at one of them, the same filled manifest is placed differently at the
    # two (`place` sets the GPU limit).
    (root / "sites/us-chi-0201/overrides.yaml").write_text(
        "apiVersion: outpost/v1\nkind: SiteOverrides\nmetadata:\n  name: us-chi-0201\n"
        "spec:\n  apps:\n    camera-analytics:\n      values: {cameras: 48}\n"
    )
    # The manifest no longer sets the GPU limit itself: `place` sets it to the node's count.
    manifest = root / "apps/camera-analytics/manifests/inference.yaml"
    text = manifest.read_text()
    limit = "memory: 16Gi\n              nvidia.com/gpu: ${gpus}\n"
    assert text.count(limit) == 1
    manifest.write_text(text.replace(limit, "memory: 16Gi\n"))
    hardware = root / "sites/us-chi-0201/hardware.yaml"
    text = hardware.read_text()
    assert "resource: nvidia.com/gpu, count: 1," in text
    hardware.write_text(text.replace("nvidia.com/gpu, count: 1,", "nvidia.com/gpu, count: 2,"))
    return root


def test_objects_of_one_shape_differ_only_in_the_site_label(tmp_path: Path) -> None:
    repo = Repository(WorkdirTree(_example(tmp_path)))
    seen: dict[object, tuple[str, dict[str, object]]] = {}
    shared = placed = 0
    gpu_shapes: dict[str, object] = {}
    for site_id in repo.site_ids:
        for obj in render_site(repo, site_id).objects:
            if obj.shape is None:
                continue
            view = without_site_label(obj.body, site_id)
            assert view != obj.body  # the site label was there, and is gone from the view
            first = seen.setdefault(obj.shape, (site_id, view))
            if first[0] != site_id:
                shared += 1
                placed += obj.app == "pos"  # placed on a USB node, the same at every store
                assert view == first[1], (obj.key, site_id, first[0])
            if obj.app == "camera-analytics" and obj.key.kind == "Deployment":
                gpu_shapes[site_id] = obj.shape
    assert shared >= 10  # the stores of a fleet do share shapes
    assert placed >= 3
    # one GPU here, two there: the same manifest, placed apart
    assert gpu_shapes.keys() == {"de-ber-0042", "us-chi-0201"}
    assert gpu_shapes["de-ber-0042"] != gpu_shapes["us-chi-0201"]


def test_a_patched_or_self_labelled_object_has_no_shape_and_a_placed_one_names_its_placement(
    tmp_path: Path,
) -> None:
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
        devices = {
            i.name: placement_key(i.app.required_device_types, repo.site(site_id).hardware)
            for i in rendered.apps
            if i.app.required_device_types
        }
        for obj in rendered.objects:
            if obj.app == "node-metrics" and obj.key.kind == "DaemonSet":
                found["labelled"] += 1
                assert obj.shape is None
            if obj.patches:
                found["patched"] += 1
                assert obj.shape is None
            if obj.app in devices and not obj.patches and obj.source is not None:
                found["placed"] += 1
                assert obj.shape is not None
                assert obj.shape[3] == devices[obj.app]
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


def test_the_site_status_is_the_same_with_and_without_shapes(tmp_path: Path) -> None:
    root = _example(tmp_path)
    # a request no one can read, in an object every store renders with one shape
    manifest = root / "apps/node-metrics/manifests/daemonset.yaml"
    text = manifest.read_text()
    assert "requests: {cpu: 20m," in text
    manifest.write_text(text.replace("requests: {cpu: 20m,", "requests: {cpu: twenty,", 1))
    repo = Repository(WorkdirTree(root))
    problems = 0
    for site_id in repo.site_ids:
        rendered = render_site(repo, site_id)
        folder = repo.site(site_id)
        hardware = folder.hardware.doc.body if folder.hardware else {}
        bodies = [o.body for o in rendered.objects]
        shaped = site_status(bodies, hardware, shapes=[o.shape for o in rendered.objects])
        assert shaped == site_status(bodies, hardware), site_id
        problems += len(shaped[1])
        # asked again, every answer comes from what the first asking kept
        assert site_status(bodies, hardware, shapes=[o.shape for o in rendered.objects]) == shaped
    assert problems >= len(repo.site_ids)  # the unreadable request, at every store


_CRONJOB = """\
apiVersion: batch/v1
kind: CronJob
metadata:
  name: pos-cleanup
spec:
  schedule: "0 3 * * *"
  jobTemplate:
    metadata:
      labels: {job: cleanup}
    spec:
      template:
        spec:
          restartPolicy: OnFailure
          containers:
            - name: cleanup
              image: ${images.server}
"""


def _fresh(root: Path, site_id: str) -> str:
    """``site_id`` rendered as by a process that has rendered nothing before."""
    for memo in (_site._CHECKED, _site._FILLED, _site._STAMPED):
        memo.entries.clear()
    return to_json(render_site(Repository(WorkdirTree(root)), site_id))


def test_a_kept_body_restamped_at_another_site_is_what_that_site_renders_afresh(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _example(tmp_path)
    # A CronJob of a device-bound app: its own labels, its jobs' and its pods' are stamped,
    # and its pods placed on the USB node.
    (root / "apps/pos/manifests/cleanup.yaml").write_text(_CRONJOB)
    restamped: list[str] = []
    real = _site._restamp
    monkeypatch.setattr(
        _site,
        "_restamp",
        lambda body, paths, site: restamped.append(site) or real(body, paths, site),
    )
    for memo in (_site._CHECKED, _site._FILLED, _site._STAMPED):
        memo.entries.clear()
    repo = Repository(WorkdirTree(root))
    # Forward, then back: every site after the first of its kind gets kept bodies, the
    # GPU sites (two placements) and the patched ones (de-ber-0042, in-blr-0601) among them.
    order = [*repo.site_ids, *reversed(repo.site_ids)]
    rendered: dict[str, list[str]] = {site_id: [] for site_id in repo.site_ids}
    for site_id in order:
        site = render_site(repo, site_id)
        rendered[site_id].append(to_json(site))
        cleanup = [o.body for o in site.objects if o.key.name == "pos-cleanup"]
        for body in cleanup:
            job = body["spec"]["jobTemplate"]
            for labels in (
                body["metadata"]["labels"],
                job["metadata"]["labels"],
                job["spec"]["template"]["metadata"]["labels"],
            ):
                assert labels["outpost/site"] == site_id
            assert job["spec"]["template"]["spec"]["nodeSelector"] == {"outpost/device.usb": "true"}
    assert len(set(restamped)) >= 8
    for site_id, texts in rendered.items():
        assert texts == [_fresh(root, site_id)] * 2, site_id


def test_a_read_only_render_shares_all_but_the_labels_and_renders_the_same(tmp_path: Path) -> None:
    root = _example(tmp_path)
    (root / "apps/pos/manifests/cleanup.yaml").write_text(_CRONJOB)
    for memo in (_site._CHECKED, _site._FILLED, _site._STAMPED):
        memo.entries.clear()
    repo = Repository(WorkdirTree(root))
    sites = [*repo.site_ids, *reversed(repo.site_ids)]
    shared = {s: render_site(repo, s, shared=True) for s in sites}
    for site_id, rendered in shared.items():
        assert to_json(rendered) == to_json(render_site(repo, site_id)), site_id
    # Objects of one shape (one filled manifest, app, version and placement, unpatched)
    # come from one kept body: the same containers, each site's own labels.
    by_shape: dict[object, list[dict[str, Any]]] = {}
    for rendered in shared.values():
        for obj in rendered.objects:
            if obj.key.name == "pos-cleanup" and obj.shape is not None:
                by_shape.setdefault(obj.shape, []).append(obj.body)
    assert max(map(len, by_shape.values())) >= 3
    for first, *others in by_shape.values():
        job = first["spec"]["jobTemplate"]
        for body in others:
            other = body["spec"]["jobTemplate"]
            assert (
                other["spec"]["template"]["spec"]["containers"]
                is (job["spec"]["template"]["spec"]["containers"])
            )
            assert other["metadata"]["labels"] is not job["metadata"]["labels"]
            assert body["metadata"]["labels"] is not first["metadata"]["labels"]
    # a render that is not read-only shares nothing with them
    first = max(by_shape.values(), key=len)[0]
    job = first["spec"]["jobTemplate"]
    own = render_site(repo, first["metadata"]["labels"]["outpost/site"])
    body = next(o.body for o in own.objects if o.key.name == "pos-cleanup")
    containers = body["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    assert containers == job["spec"]["template"]["spec"]["containers"]
    assert containers is not job["spec"]["template"]["spec"]["containers"]
