"""Properties of rendering: deterministic, the same from a commit as from its checkout,
faithful serialisation, and an edit to one site's folder changes no other site's slice."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pygit2
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from render_world import (
    commit_all,
    commit_repo,
    example_files,
    replace_files,
    tiny_files,
    workdir_repo,
    write_files,
)

from reconciler.ci.diff import diff
from reconciler.core.errors import OutpostError
from reconciler.core.render import RenderedSite, render_site, to_json, to_yaml

EXAMPLE = example_files()
SITES = sorted({p.split("/")[1] for p in EXAMPLE if p.startswith("sites/")})
GIT_SETTINGS = settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def slice_of(rendered: RenderedSite) -> str:
    """Everything of a rendering except the revision it was read from."""
    data = json.loads(to_json(rendered))
    data.pop("revision")
    return json.dumps(data, sort_keys=True)


def render_all(repo) -> dict[str, str]:
    result = {}
    for site in repo.site_ids:
        try:
            result[site] = slice_of(render_site(repo, site))
        except OutpostError as exc:
            result[site] = f"error: {exc}"
    return result


# -- an edit somewhere in one site's folder ------------------------------------------------------

tokens = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=0, max_size=8
) | st.sampled_from(["2", "true", "null", "4Gi", "edge-9", "[a, b]", "{x: 1}", '"${x}"'])


@st.composite
def site_edits(draw: st.DrawFn) -> tuple[str, dict[str, bytes]]:
    """A site, and new contents for one file of its folder (or a new file in it)."""
    site = draw(st.sampled_from(SITES))
    paths = sorted(p for p in EXAMPLE if p.startswith(f"sites/{site}/"))
    kind = draw(st.sampled_from(["value", "append", "new-vm", "delete"]))
    if kind == "new-vm":
        cpu = draw(st.integers(min_value=1, max_value=8))
        vm = (
            "apiVersion: outpost/v1\nkind: VirtualMachine\nmetadata: {name: extra}\n"
            f"spec: {{cpu: {cpu}, memory: 1Gi, disks: [{{name: d, volume: {{size: 1Gi}}}}]}}\n"
        )
        return site, {f"sites/{site}/vms/extra.yaml": vm.encode()}
    path = draw(st.sampled_from(paths))
    text = EXAMPLE[path].decode()
    if kind == "delete":
        return site, {path: b""}
    if kind == "append":
        return site, {
            path: (text + draw(st.sampled_from(["# note\n", "\n", "extra: 1\n"]))).encode()
        }
    lines = text.splitlines(keepends=True)
    candidates = [i for i, line in enumerate(lines) if ": " in line]
    index = draw(st.sampled_from(candidates))
    head = lines[index].split(": ", 1)[0]
    lines[index] = f"{head}: {draw(tokens)}\n"
    return site, {path: "".join(lines).encode()}


def apply_edit(root: Path, edit: dict[str, bytes]) -> None:
    for path, data in edit.items():
        if data == b"":
            (root / path).unlink()
        else:
            write_files(root, {path: data})


BASELINE: dict[str, str] = {}


def baseline() -> dict[str, str]:
    if not BASELINE:
        with tempfile.TemporaryDirectory() as tmp:
            replace_files(Path(tmp), EXAMPLE)
            BASELINE.update(render_all(workdir_repo(Path(tmp))))
    return BASELINE


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(site_edits())
def test_an_edit_to_one_site_changes_no_other_site(edit: tuple[str, dict[str, bytes]]):
    site, change = edit
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        replace_files(root, EXAMPLE)
        apply_edit(root, change)
        after = render_all(workdir_repo(root))
        before = baseline()
        for other in SITES:
            if other != site:
                assert after[other] == before[other], f"editing {site} changed {other}"


@GIT_SETTINGS
@given(site_edits())
def test_a_commit_renders_like_its_checkout_and_diff_lists_only_the_edited_site(
    edit: tuple[str, dict[str, bytes]],
):
    site, change = edit
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "repo"
        replace_files(root, EXAMPLE)
        base = commit_all(root, "base")
        apply_edit(root, change)
        head = commit_all(root, "edit")
        checkout = Path(tmp) / "checkout"
        pygit2.clone_repository(str(root), str(checkout))
        from_commit = render_all(commit_repo(root, head))
        from_checkout = render_all(workdir_repo(checkout))
        assert from_commit == from_checkout
        result = diff(commit_repo(root, base), commit_repo(root, head))
        assert set(result.rendered) <= {site}
        assert {s.site for s in result.sites} | {e.site for e in result.errors} <= {site}


# -- the tiny fleet with arbitrary values --------------------------------------------------------


def quoted(text: str) -> str:
    """``text`` as a YAML double-quoted scalar (escapes for anything unprintable)."""
    dumped = yaml.safe_dump(text, default_style='"', width=1 << 16)
    return dumped.removesuffix("\n").removesuffix("...").strip()


texts = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=30)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(greeting=texts, replicas=st.integers(min_value=1, max_value=3), port=st.integers(0, 65535))
def test_rendering_is_deterministic_and_yaml_round_trips(
    tmp_path_factory, greeting: str, replicas: int, port: int
):
    root = tmp_path_factory.mktemp("tiny")
    site = (
        tiny_files()["sites/s1/site.yaml"]
        + '  apps:\n    web:\n      version: "1.0.0"\n      values:\n'
        + f"        greeting: {quoted(greeting)}\n        replicas: {replicas}\n"
        + f"        tls: {{port: {port}}}\n"
    )
    write_files(root, tiny_files({"sites/s1/site.yaml": site}))
    first = render_site(workdir_repo(root), "s1")
    second = render_site(workdir_repo(root), "s1")
    assert to_yaml(first) == to_yaml(second)
    assert to_json(first) == to_json(second)
    documents = list(yaml.safe_load_all(to_yaml(first)))
    assert documents == [obj.body for obj in first.objects]
    config = first.object("v1/ConfigMap/web/web-config")
    assert config is not None
    assert config.body["data"]["GREETING"] == f"{greeting}, s1!"
    assert config.body["data"]["PORT"] == f"{port}/tcp"
    deployment = first.object("apps/v1/Deployment/web/web")
    assert deployment is not None and deployment.body["spec"]["replicas"] == replicas
