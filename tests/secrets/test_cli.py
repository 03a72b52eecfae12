"""``outpost secrets`` end to end: exit codes, output, and no plaintext on stdout or stderr."""

from __future__ import annotations

import io
import stat
import sys
from pathlib import Path

import pytest
from sopsworld import SITE, World

from reconciler.cli import main


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_init_site_cli(world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = world.root / "sites/shop-d"
    folder.mkdir()
    (folder / "site.yaml").write_text(
        SITE.format(site_id="shop-d", segment="retail", type="store", fleet="shops")
    )
    key = tmp_path / "shop-d.key"
    code, out, _ = _run(
        ["secrets", "init-site", "shop-d", "--key-out", str(key), "--repo", str(world.root)], capsys
    )
    assert code == 0
    assert "updated sites/shop-d/site.yaml" in out and "updated .sops.yaml" in out
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    code, _, err = _run(
        [
            "secrets",
            "init-site",
            "shop-d",
            "--key-out",
            str(world.root / "k.key"),
            "--repo",
            str(world.root),
        ],
        capsys,
    )
    assert code == 1 and "already has recipient" in err


def test_key_out_inside_repository_is_refused(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = _run(
        [
            "secrets",
            "keygen",
            "--key-out",
            str(world.root / "fleets/bg.key"),
            "--repo",
            str(world.root),
        ],
        capsys,
    )
    assert code == 1 and "inside the repository" in err
    assert not (world.root / "fleets/bg.key").exists()


def test_encrypt_show_check_rotate(
    world: World,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OUTPOST_AGE_KEY_FILE", raising=False)
    repo = ["--repo", str(world.root)]
    plaintext = b"apiVersion: v1\nkind: Secret\nmetadata: {name: cam, namespace: vision}\nstringData: {rtsp: pa55-Word-42}\n"
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(plaintext)))
    code, out, _ = _run(["secrets", "encrypt", "shop-b", *repo], capsys)
    assert (code, out.strip()) == (0, "wrote sites/shop-b/secrets/cam.sops.yaml")

    code, out, _ = _run(
        ["secrets", "show", "shop-b", "--key", str(world.keys["shop-b"]), *repo], capsys
    )
    assert code == 0 and "rtsp: <redacted sha256:" in out and "pa55-Word-42" not in out

    code, out, _ = _run(
        ["secrets", "check", str(world.root), "--key", str(world.break_glass)], capsys
    )
    assert code == 0 and "0 error(s)" in out

    code, out, err = _run(
        ["secrets", "rotate-site", "shop-b", "--key-out", str(tmp_path / "b2.key"), *repo], capsys
    )
    assert code == 1 and "--old-key" in err
    monkeypatch.setenv("OUTPOST_AGE_KEY_FILE", str(world.break_glass))
    code, out, _ = _run(
        ["secrets", "rotate-site", "shop-b", "--key-out", str(tmp_path / "b2.key"), *repo], capsys
    )
    assert code == 0 and "change the secret values too" in out
    code, out, err = _run(
        ["secrets", "show", "shop-b", "--key", str(world.keys["shop-b"]), *repo], capsys
    )
    assert code == 1 and "wrong key" in err
    for text in (out, err):
        assert "pa55-Word-42" not in text


def test_encrypt_refuses_a_plaintext_file_inside_the_repository(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    inside = world.root / "plain.yaml"
    inside.write_text("apiVersion: v1\nkind: Secret\nmetadata: {name: x}\nstringData: {k: v}\n")
    code, _, err = _run(
        ["secrets", "encrypt", "shop-a", "--from", str(inside), "--repo", str(world.root)], capsys
    )
    assert code == 1 and "inside the repository" in err


def test_check_reports_findings_with_exit_1(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    (world.root / "sites/shop-a/secrets/oops.yaml").write_text("x: 1\n")
    code, out, _ = _run(["secrets", "check", str(world.root), "-o", "github"], capsys)
    assert code == 1
    assert "::error file=sites/shop-a/secrets/oops.yaml" in out
