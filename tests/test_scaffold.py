"""``outpost site new``: the scaffold takes what the fleet agrees on, writes nothing that looks
real but is not (placeholders fail validation until replaced, a guessed zone is marked), and
says what to do next."""

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


def test_new_store_follows_its_fleet_and_validates_once_its_placeholders_are_filled(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["site", "new", "de-dre-0301", "--fleet", "retail-eu", "--repo", str(repo)]) == 0
    printed = capsys.readouterr().out
    site_text = (repo / "sites/de-dre-0301/site.yaml").read_text()
    site = yaml.safe_load(site_text)
    fleet = yaml.safe_load((repo / "fleets/retail-eu.yaml").read_text())
    for key, value in fleet["spec"]["selector"].get("matchLabels", {}).items():
        assert site["metadata"]["labels"][key] == value
    assert site["spec"]["timezone"] == "Europe/Berlin"
    assert "timezone: Europe/Berlin  # GUESSED" in site_text
    hardware_path = repo / "sites/de-dre-0301/hardware.yaml"
    hardware = yaml.safe_load(hardware_path.read_text())
    node = hardware["spec"]["nodes"][0]
    assert "usb" in {d["type"] for d in node["devices"]}  # pos needs the scanner
    # what only the site knows is a placeholder, not a made-up value that looks real
    assert node["name"] == node["identity"]["machineId"] == "REPLACE-ME"
    assert "Next steps:" in printed and "outpost secrets init-site de-dre-0301" in printed
    assert "hardware.yaml:7" in printed

    assert main(["validate", "--repo", str(repo), "--no-policies"]) == 1
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if "error:" in line]
    assert lines and all("[placeholder]" in line for line in lines)  # said once, clearly
    assert "sites/de-dre-0301/hardware.yaml:8: error: placeholder REPLACE-ME" in out

    filled = (
        hardware_path.read_text()
        .replace("name: REPLACE-ME", "name: edge-1", 1)
        .replace("machineId: REPLACE-ME", "machineId: 0f3c9a1b2d4e5f60718293a4b5c6d7e8", 1)
        .replace("serial: REPLACE-ME", "serial: CZC1234567", 1)
        .replace("vendor: REPLACE-ME, product: REPLACE-ME", 'vendor: "05e0", product: "1200"', 1)
    )
    hardware_path.write_text(filled)
    assert main(["validate", "--repo", str(repo), "--no-policies"]) == 0


def test_a_given_time_zone_is_not_marked_as_a_guess(repo: Path) -> None:
    args = ["site", "new", "de-dre-0303", "--fleet", "retail-eu", "--timezone", "Europe/Berlin"]
    assert main([*args, "--repo", str(repo)]) == 0
    assert "GUESSED" not in (repo / "sites/de-dre-0303/site.yaml").read_text()


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
