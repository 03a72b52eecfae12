"""``outpost site new``: the scaffold validates as written and takes what the fleet agrees on."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from reconciler.cli import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    target = tmp_path / "repo"
    target.mkdir()
    for folder in ("sites", "fleets", "apps", "policies"):
        shutil.copytree(ROOT / folder, target / folder)
    shutil.copyfile(ROOT / ".sops.yaml", target / ".sops.yaml")
    return target


def test_new_store_validates_and_follows_its_fleet(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["site", "new", "de-dre-0301", "--fleet", "retail-eu", "--repo", str(repo)]) == 0
    site = yaml.safe_load((repo / "sites/de-dre-0301/site.yaml").read_text())
    fleet = yaml.safe_load((repo / "fleets/retail-eu.yaml").read_text())
    for key, value in fleet["spec"]["selector"].get("matchLabels", {}).items():
        assert site["metadata"]["labels"][key] == value
    assert site["spec"]["timezone"] == "Europe/Berlin"
    hardware = yaml.safe_load((repo / "sites/de-dre-0301/hardware.yaml").read_text())
    device_types = {d["type"] for d in hardware["spec"]["nodes"][0]["devices"]}
    assert "usb" in device_types  # pos needs the scanner
    assert isinstance(hardware["spec"]["nodes"][0]["identity"]["machineId"], str)
    capsys.readouterr()
    assert main(["validate", str(repo), "--no-policies"]) == 0


def test_timezone_can_be_given(repo: Path) -> None:
    args = [
        "site",
        "new",
        "au-mel-0502",
        "--fleet",
        "retail-apac",
        "--timezone",
        "Australia/Melbourne",
        "--repo",
        str(repo),
    ]
    assert main(args) == 0
    site = yaml.safe_load((repo / "sites/au-mel-0502/site.yaml").read_text())
    assert site["spec"]["timezone"] == "Australia/Melbourne"


@pytest.mark.parametrize(
    ("site_id", "fleet", "needle"),
    [
        ("de-ber-0042", "retail-eu", "already exists"),
        ("de-dre-0302", "retail-xx", "fleet 'retail-xx' does not exist"),
        ("De_Dre", "retail-eu", "is not valid"),
        ("../etc", "retail-eu", "is not valid"),
    ],
)
def test_refusals(
    repo: Path, capsys: pytest.CaptureFixture[str], site_id: str, fleet: str, needle: str
) -> None:
    assert main(["site", "new", site_id, "--fleet", fleet, "--repo", str(repo)]) == 2
    assert needle in capsys.readouterr().err
    assert not (repo / "sites" / site_id / "hardware.yaml").exists() or site_id == "de-ber-0042"
