"""outpost diff: the index of which files feed which sites, per-site diffs, the CLI's exit codes."""

from __future__ import annotations

import re
from pathlib import Path

import pygit2
import pytest
import yaml
from render_world import (
    commit_all,
    commit_repo,
    example_files,
    replace_files,
    workdir_repo,
    write_files,
)

from reconciler.ci.diff import (
    affected_sites,
    changed_paths,
    changed_paths_between_commits,
    diff,
    format_json,
    format_markdown,
    format_text,
)
from reconciler.cli import main

FLEET = "fleets/retail-eu.yaml"


@pytest.fixture(scope="module")
def fleet_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example fleet in a git repository of its own, one commit."""
    root = tmp_path_factory.mktemp("fleet")
    replace_files(root, example_files())
    commit_all(root, "example fleet")
    return root


def members_running_fleet_version(files: dict[str, bytes], fleet: str, app: str) -> set[str]:
    """Read straight from the YAML, independent of the code under test."""
    result = set()
    for path, data in files.items():
        if re.fullmatch(r"sites/[^/]+/site\.yaml", path):
            spec = yaml.safe_load(data)["spec"]
            if fleet in spec.get("fleets", []) and app not in (spec.get("apps") or {}):
                result.add(path.split("/")[1])
    return result


def bump(text: str, app: str, new: str) -> tuple[str, str]:
    match = re.search(rf"^(\s+{app}: {{version: )([0-9.]+)", text, re.M)
    assert match, f"{app} not found"
    return text[: match.start(2)] + new + text[match.end(2) :], match.group(2)


def images(files: dict[str, bytes], app: str, version: str) -> dict[str, str]:
    return yaml.safe_load(files[f"apps/{app}/app.yaml"])["spec"]["versions"][version]["images"]


def test_a_version_bump_in_one_fleet_lists_exactly_its_sites(fleet_repo: Path, tmp_path: Path):
    files = example_files()
    text = files[FLEET].decode()
    versions = sorted(yaml.safe_load(files["apps/pos/app.yaml"])["spec"]["versions"])
    current = bump(text, "pos", "0")[1]
    target = next(v for v in versions if v != current)
    new_text, _ = bump(text, "pos", target)

    root = tmp_path / "repo"
    replace_files(root, files)
    base = commit_all(root, "base")
    write_files(root, {FLEET: new_text})
    head = commit_all(root, f"pos {target} for retail-eu")

    git = pygit2.Repository(str(root))
    changed = changed_paths_between_commits(git, base, head)
    assert changed == {FLEET}
    result = diff(commit_repo(root, base), commit_repo(root, head), changed=changed)

    expected = members_running_fleet_version(files, "retail-eu", "pos")
    assert expected and len(expected) < len(workdir_repo(root).site_ids)
    assert {s.site for s in result.sites} == expected
    assert set(result.rendered) == {
        p.split("/")[1]
        for p in files
        if p.endswith("/site.yaml") and "retail-eu" in yaml.safe_load(files[p])["spec"]["fleets"]
    }
    old_images, new_images = images(files, "pos", current), images(files, "pos", target)
    for site in result.sites:
        assert site.status == "changed" and not site.secrets
        deployments = [o for o in site.objects if "/Deployment/pos/" in o.key]
        assert deployments and all(o.change == "changed" for o in site.objects)
        text = "".join(o.diff for o in deployments)
        for key in old_images:
            if old_images[key] != new_images[key]:
                assert f"-        image: {old_images[key]}" in text
                assert f"+        image: {new_images[key]}" in text
    assert not result.errors

    # The working tree against the base commit finds the same change.
    work = diff(commit_repo(root, base), workdir_repo(root))
    assert work.sites == result.sites and work.changed_paths == (FLEET,)

    markdown = format_markdown(result)
    assert markdown.count("<details>") < len(result.sites) or len(result.sites) == 1
    for site in expected:
        assert site in markdown
    assert f"{len(expected)} site(s) change" in format_text(result)
    assert '"changed": true' in format_json(result)


def test_no_change_lists_nothing(fleet_repo: Path):
    result = diff(commit_repo(fleet_repo, "HEAD"), workdir_repo(fleet_repo))
    assert not result.changed and result.rendered == ()
    assert "No site's slice changes" in format_markdown(result)


def test_index_maps_paths_to_sites(fleet_repo: Path):
    repo = workdir_repo(fleet_repo)
    everyone = set(repo.site_ids)
    assert affected_sites(["sites/plant-lyon/vms/hmi.yaml"], repo) == {
        "plant-lyon": {"sites/plant-lyon/vms/hmi.yaml"}
    }
    assert affected_sites(["policies/signers.yaml", "README.md", "reconciler/x.py"], repo) == {}
    assert set(affected_sites(["policies/host-access.yaml"], repo)) == everyone
    assert set(affected_sites(["schemas/site.schema.json"], repo)) == everyone
    assert set(affected_sites(["apps/historian/manifests/historian.yaml"], repo)) == {
        "plant-lyon",
        "plant-ostrava",
    }
    eu = set(affected_sites([FLEET], repo))
    assert eu and all(s.startswith("de-") for s in eu)
    assert set(affected_sites(["fleets/nobody.yaml", "apps/nobody/app.yaml"], repo)) == set()


def test_an_edit_to_one_site_renders_only_that_site(fleet_repo: Path, tmp_path: Path):
    root = tmp_path / "repo"
    replace_files(root, example_files())
    base = commit_all(root, "base")
    path = root / "sites/plant-lyon/vms/hmi.yaml"
    path.write_text(path.read_text().replace("cpu: 2", "cpu: 4"))
    result = diff(commit_repo(root, base), workdir_repo(root))
    assert result.rendered == ("plant-lyon",)
    (site,) = result.sites
    (change,) = site.objects
    assert change.key == "kubevirt.io/v1/VirtualMachine/vms/hmi"
    assert "-          cores: 2\n+          cores: 4\n" in change.diff
    assert change.origin == "sites/plant-lyon/vms/hmi.yaml:1"


def test_added_and_removed_sites_and_secrets(tmp_path: Path):
    root = tmp_path / "repo"
    files = example_files()
    replace_files(root, files)
    base = commit_all(root, "base")
    for path in [p for p in files if p.startswith("sites/us-nyc-0310/")]:
        (root / path).unlink()
    for path in [p for p in files if p.startswith("sites/us-chi-0201/")]:
        target = root / path.replace("us-chi-0201", "us-chi-0202")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(files[path].replace(b"us-chi-0201", b"us-chi-0202"))
    secret = root / "sites/de-ber-0042/secrets/wifi-psk.sops.yaml"
    secret.write_bytes(secret.read_bytes().replace(b"lastmodified:", b"lastmodified:  "))
    result = diff(commit_repo(root, base), workdir_repo(root))
    by_site = {s.site: s for s in result.sites}
    assert by_site["us-nyc-0310"].status == "removed"
    assert all(o.change == "removed" for o in by_site["us-nyc-0310"].objects)
    assert by_site["us-chi-0202"].status == "added"
    (secret_change,) = by_site["de-ber-0042"].secrets
    assert secret_change.change == "changed" and not by_site["de-ber-0042"].objects
    assert "ENC[" not in format_text(result) + format_markdown(result) + format_json(result)


def test_changed_paths_compares_bytes(tmp_path: Path):
    a, b = tmp_path / "a", tmp_path / "b"
    write_files(a, {"sites/x/site.yaml": "a", "fleets/f.yaml": "f", "README.md": "r"})
    write_files(b, {"sites/x/site.yaml": "b", "apps/p/app.yaml": "p", "README.md": "s"})
    assert changed_paths(workdir_repo(a).tree, workdir_repo(b).tree) == {
        "sites/x/site.yaml",
        "fleets/f.yaml",
        "apps/p/app.yaml",
    }


def test_cli_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    root = tmp_path / "repo"
    replace_files(root, example_files())
    commit_all(root, "base")
    assert main(["diff", "--base", "HEAD", "--repo", str(root)]) == 0
    fleet = root / FLEET
    fleet.write_text(fleet.read_text().replace("currency: EUR", "currency: USD"))
    assert main(["diff", "--base", "HEAD", "--repo", str(root), "-o", "markdown"]) == 1
    out = capsys.readouterr().out
    assert "-  CURRENCY: EUR" in out and "+  CURRENCY: USD" in out
    commit_all(root, "usd")
    assert main(["diff", "--base", "HEAD~1", "--head", "HEAD", "--repo", str(root)]) == 1
    manifest = root / "apps/pos/manifests/configmap.yaml"
    manifest.write_text(manifest.read_text() + '\n# ${nope}\n  X: "${nope}"\n')
    assert main(["diff", "--base", "HEAD", "--repo", str(root)]) == 2
    assert "unknown placeholder ${nope}" in capsys.readouterr().out
    assert main(["diff", "--base", "no-such-rev", "--repo", str(root)]) == 2


def test_cli_render(tmp_path: Path, capsys: pytest.CaptureFixture[str], fleet_repo: Path):
    assert main(["render", "plant-lyon", "--repo", str(fleet_repo)]) == 0
    from_tree = capsys.readouterr().out
    assert main(["render", "plant-lyon", "--repo", str(fleet_repo), "--rev", "HEAD"]) == 0
    from_commit = capsys.readouterr().out
    head = str(pygit2.Repository(str(fleet_repo)).head.target)
    assert from_commit == from_tree.replace(
        "# outpost render: site plant-lyon\n",
        f"# outpost render: site plant-lyon\n# revision: {head}\n",
    )
    assert main(["render", "plant-lyon", "--repo", str(fleet_repo), "-o", "json"]) == 0
    assert '"kind": "VirtualMachine"' in capsys.readouterr().out
    assert main(["render", "nowhere", "--repo", str(fleet_repo)]) == 2
    assert "no site.yaml" in capsys.readouterr().err


def test_a_change_from_1_to_true_is_a_change(tmp_path: Path):
    from reconciler.ci.diff import site_diff
    from reconciler.core.errors import Mark
    from reconciler.core.model import SiteId
    from reconciler.core.render import ObjectKey, RenderedObject, RenderedSite

    def site(value: object) -> RenderedSite:
        body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "x": value}
        obj = RenderedObject(ObjectKey.of(body), body, Mark("m.yaml", 1))
        return RenderedSite(SiteId("s"), None, (obj,), (), {}, (), ())

    assert site_diff("s", site(1), site(1)) is None
    changed = site_diff("s", site(1), site(True))
    assert changed is not None and "-x: 1\n+x: true\n" in changed.objects[0].diff
