"""outpost diff at fleet scale: identical changes grouped in text too, --site, --summary."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from render_world import commit_all, example_files, replace_files

from reconciler.cli import main

FLEET = "fleets/retail-eu.yaml"
MUNICH = "sites/de-muc-0007/overrides.yaml"


def retail_eu(files: dict[str, bytes]) -> list[str]:
    """The fleet's members, read straight from the YAML."""
    return sorted(
        path.split("/")[1]
        for path, data in files.items()
        if re.fullmatch(r"sites/[^/]+/site\.yaml", path)
        and "retail-eu" in yaml.safe_load(data)["spec"].get("fleets", [])
    )


@pytest.fixture
def change(tmp_path: Path) -> tuple[Path, list[str]]:
    """A fleet-wide currency change, and one store that also gets a note of its own."""
    files = example_files()
    root = tmp_path / "repo"
    replace_files(root, files)
    commit_all(root, "base")
    fleet = root / FLEET
    fleet.write_text(fleet.read_text().replace("currency: EUR", "currency: USD"))
    (root / MUNICH).write_text(
        "apiVersion: outpost/v1\nkind: SiteOverrides\nmetadata:\n  name: de-muc-0007\nspec:\n"
        "  apps:\n    pos:\n      patches:\n        - target: {kind: ConfigMap, name: pos-config}\n"
        '          merge: {data: {STORE_NOTE: "refit"}}\n'
    )
    commit_all(root, "USD for retail-eu; a note for Munich")
    return root, retail_eu(files)


def run(capsys: pytest.CaptureFixture[str], root: Path, *extra: str) -> tuple[int, str]:
    code = main(["diff", "--base", "HEAD~1", "--head", "HEAD", "--repo", str(root), *extra])
    return code, capsys.readouterr().out


def test_text_groups_sites_that_change_alike(
    change: tuple[Path, list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    root, members = change
    assert len(members) >= 3
    code, out = run(capsys, root)
    assert code == 1
    assert f"2 distinct change(s) across {len(members)} site(s)" in out
    alike = [m for m in members if m != "de-muc-0007"]
    heading = next(line for line in out.splitlines() if "same change" in line)
    assert heading.startswith(f"=== sites {alike[0]}, ")
    assert f"— {len(alike)} sites, same change; diff of {alike[0]}" in heading
    assert "=== site de-muc-0007 (changed)" in out
    # the shared change is printed once for the group and once in Munich's own diff
    assert out.count("+  CURRENCY: USD") == 2
    assert "STORE_NOTE" in out


def test_site_narrows_the_diff(
    change: tuple[Path, list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    root, members = change
    other = next(m for m in members if m != "de-muc-0007")
    code, out = run(capsys, root, "--site", other, "--site", "de-muc-0007")
    assert code == 1
    assert "2 site(s) change; 2 site(s) rendered" in out
    assert {line.split()[2] for line in out.splitlines() if line.startswith("=== site")} == {
        other,
        "de-muc-0007",
    }
    code, out = run(capsys, root, "--site", "no-such-site")
    assert code == 0 and "0 site(s) change; 0 site(s) rendered" in out


def test_summary_has_no_diffs(
    change: tuple[Path, list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    root, members = change
    code, out = run(capsys, root, "--summary")
    assert code == 1
    assert "CURRENCY" not in out and "===" not in out
    lines = out.splitlines()
    assert len(lines) == 4  # the summary, the group count, one line per group
    assert f"{len(members) - 1} sites, same change" in lines[2]

    _, markdown = run(capsys, root, "--summary", "-o", "markdown")
    assert "| de-muc-0007 | changed |" in markdown and "<details>" not in markdown

    _, text = run(capsys, root, "--summary", "-o", "json")
    data = json.loads(text)
    assert len(data["groups"]) == 2 and sum(len(g) for g in data["groups"]) == len(members)
    assert all("diff" not in obj for site in data["sites"] for obj in site["objects"])
    assert "changedPaths" in data
