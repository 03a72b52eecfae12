"""A clean `outpost validate` says what it checked, so "0 errors" is not mistaken for "checked
nothing" (a wrong --repo, an empty checkout)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from reconciler.cli import main

ROOT = Path(__file__).resolve().parents[1]


def counted(root: Path) -> str:
    """The counts, from the directory listing, independent of the code under test."""
    sites = sum(1 for p in (root / "sites").iterdir() if (p / "site.yaml").is_file())
    fleets = sum(1 for p in (root / "fleets").glob("*.yaml"))
    apps = sum(1 for p in (root / "apps").iterdir() if p.is_dir())
    policies = sum(1 for p in (root / "policies").glob("*.yaml") if p.stem != "signers")
    return f"{sites} sites, {fleets} fleets, {apps} apps, {policies} policies"


def test_a_clean_run_says_what_it_checked(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "--repo", str(ROOT)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-2] == "0 error(s), 0 warning(s)"
    assert lines[-1] == f"checked {counted(ROOT)}"


def test_an_empty_checkout_says_it_checked_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    main(["validate", "--repo", str(tmp_path), "--no-policies"])
    assert capsys.readouterr().out.splitlines()[-1] == (
        "checked 0 sites, 0 fleets, 0 apps, no policies"
    )


def test_machine_formats_stay_machine_readable(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "--repo", str(ROOT), "-o", "json", "--no-policies"]) == 0
    assert json.loads(capsys.readouterr().out) == []


def test_one_site_counts_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for folder in ("fleets", "apps", "policies"):
        shutil.copytree(ROOT / folder, tmp_path / folder)
    shutil.copytree(ROOT / "sites/de-muc-0007", tmp_path / "sites/de-muc-0007")
    main(["validate", "--repo", str(tmp_path), "--no-policies"])
    assert capsys.readouterr().out.splitlines()[-1].startswith("checked 1 site, ")
