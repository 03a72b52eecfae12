"""What a bundle's trip needs: `bundle create --trust` refuses what the plant would refuse,
and `images --since` lists what the change needs mirrored into the plant's registry."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from airgap_world import PLANT, History, Key, allowed_signers

from reconciler.cli import main

HMI = f"sites/{PLANT}/vms/hmi.yaml"
OLD_DISK = "a0ef79f0e1369e3987a3048342bad12f67d0458fe761edc5a59d66fbb4431170"
NEW_DISK = "b" * 64


@pytest.fixture
def trust(tmp_path: Path, keys: dict[str, Key]) -> Path:
    path = tmp_path / "allowed_signers"
    path.write_bytes(allowed_signers(keys["ops"]))
    return path


def create(history: History, trust: Path, out: Path, since: str) -> int:
    return main(
        ["bundle", "create", "--site", PLANT, "--since", since, "--trust", str(trust),
         "--repo", str(history.repo.path), str(out)]
    )  # fmt: skip


def test_a_bundle_the_plant_would_take_is_written(
    history: History, trust: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "b-c.bundle"
    assert create(history, trust, out, history.a) == 0
    assert out.is_file() and "wrote" in capsys.readouterr().out


def test_a_commit_the_plant_does_not_trust_writes_nothing(
    history: History,
    trust: Path,
    tmp_path: Path,
    keys: dict[str, Key],
    capsys: pytest.CaptureFixture[str],
) -> None:
    rogue = history.repo.change_plant("Ostrava: publish every 10 ms", 10, keys["rogue"])
    out = tmp_path / "c-d.bundle"
    assert create(history, trust, out, history.c) == 1
    err = capsys.readouterr().err
    assert "the plant would refuse this bundle, so it was not written" in err
    assert rogue[:7] in err
    assert list(tmp_path.glob("c-d.bundle*")) == []
    # without --trust the bundle is written, as before: the plant's agent would refuse it
    assert main(["bundle", "create", "--site", PLANT, "--since", history.c,
                 "--repo", str(history.repo.path), str(out)]) == 0  # fmt: skip


def test_a_slice_the_plant_would_refuse_writes_nothing(
    history: History, trust: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hardware = f"sites/{PLANT}/hardware.yaml"
    text = (history.repo.path / hardware).read_text()
    history.repo.commit(
        "Ostrava: a typo", {hardware: text.replace("arch: amd64", "arch: amd65", 1)}
    )
    out = tmp_path / "c-d.bundle"
    assert create(history, trust, out, history.c) == 1
    err = capsys.readouterr().err
    assert "slice does not pass its checks" in err and f"{hardware}:" in err
    assert not out.exists()


def test_an_unreadable_trust_file_is_an_error(
    history: History, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert create(history, tmp_path / "missing", tmp_path / "x.bundle", history.a) == 2
    assert "cannot read the trust file" in capsys.readouterr().err


def test_images_since_lists_only_what_the_change_adds(
    history: History, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = str(history.repo.path)
    # B..C changes a publish interval: nothing new to mirror
    assert main(["images", PLANT, "--repo", repo, "--since", history.b, "--rev", history.c]) == 0
    assert capsys.readouterr().out == ""
    text = (history.repo.path / HMI).read_text()
    d = history.repo.commit("Ostrava: new HMI disk", {HMI: text.replace(OLD_DISK, NEW_DISK)})
    assert main(["images", PLANT, "--repo", repo, "--since", history.c, "--rev", d]) == 0
    assert capsys.readouterr().out == f"registry.example.com/vm/win7e-hmi@sha256:{NEW_DISK}\n"
    assert (
        main(["images", PLANT, "--repo", repo, "--since", history.c, "--rev", d, "-o", "json"]) == 0
    )
    document = json.loads(capsys.readouterr().out)
    assert document["since"] == history.c
    assert [i["digest"] for i in document["images"]] == [f"sha256:{NEW_DISK}"]
    # everything, without --since
    assert main(["images", PLANT, "--repo", repo, "--rev", d]) == 0
    assert len(capsys.readouterr().out.splitlines()) > 1
