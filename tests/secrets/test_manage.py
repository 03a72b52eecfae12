"""init-site, rotate-site, sync and encrypt on a working tree, with real sops and real keys."""

from __future__ import annotations

import difflib
import logging
import os
import stat
import subprocess
from pathlib import Path

import pytest
import yaml
from sopsworld import SITE, World

from reconciler.core.errors import SecretError
from reconciler.core.secrets import (
    Sops,
    decrypt_site_secrets,
    encrypt_secret,
    find_sops,
    init_site,
    inspect,
    keygen,
    rotate_site,
    sync_site,
)
from reconciler.core.source import WorkdirTree


def _site_yaml(world: World, site_id: str) -> str:
    return (world.root / "sites" / site_id / "site.yaml").read_text()


def _recipients(world: World, path: str) -> set[str]:
    return set(inspect((world.root / path).read_bytes(), path).recipients)


def test_init_site_records_the_recipient_and_nothing_else(world: World) -> None:
    original = SITE.format(site_id="shop-a", segment="retail", type="store", fleet="shops")
    diff = [
        line
        for line in difflib.unified_diff(
            original.splitlines(), _site_yaml(world, "shop-a").splitlines(), lineterm="", n=0
        )
        if line[:1] in "+-" and line[:3] not in ("+++", "---")
    ]
    assert diff == [f'+  sops: {{recipient: "{world.recipients["shop-a"]}"}}']
    key = world.keys["shop-a"]
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert world.recipients["shop-a"] in key.read_text()


def test_sops_config_has_one_rule_per_site(world: World) -> None:
    config = yaml.safe_load((world.root / ".sops.yaml").read_text())
    rules = {r["path_regex"]: r for r in config["creation_rules"]}
    assert set(rules) == {
        rf"^sites/{s}/secrets/.*\.sops\.yaml$" for s in ("shop-a", "shop-b", "plant-c")
    }
    rule = rules[r"^sites/shop-a/secrets/.*\.sops\.yaml$"]
    assert rule["encrypted_regex"] == "^(data|stringData)$"
    assert rule["age"] == [world.recipients["shop-a"], world.recipients["break-glass"]]


def test_plain_sops_follows_the_generated_config(world: World) -> None:
    """An operator who runs sops by hand in the repository gets the same recipients."""
    target = world.root / "sites/shop-b/secrets/by-hand.sops.yaml"
    target.write_text("apiVersion: v1\nkind: Secret\nmetadata: {name: h}\nstringData: {k: v}\n")
    env = {"SOPS_DISABLE_VERSION_CHECK": "1", "HOME": "/nonexistent", "PATH": os.environ["PATH"]}
    subprocess.run(
        [str(find_sops()), "encrypt", "-i", "secrets/by-hand.sops.yaml"],
        cwd=world.root / "sites/shop-b",  # sops finds .sops.yaml upwards, matches relative to it
        env=env,
        check=True,
    )
    assert _recipients(world, "sites/shop-b/secrets/by-hand.sops.yaml") == {
        world.recipients["shop-b"],
        world.recipients["break-glass"],
    }
    assert inspect(target.read_bytes(), "x").ok


def test_init_site_refusals(world: World, tmp_path: Path) -> None:
    with pytest.raises(SecretError, match="already has recipient"):
        init_site(world.root, "shop-a", tmp_path / "again.key")
    folder = world.root / "sites/new-site"
    folder.mkdir()
    (folder / "site.yaml").write_text(
        SITE.format(site_id="new-site", segment="retail", type="store", fleet="shops")
    )
    with pytest.raises(SecretError, match="inside the repository"):
        init_site(world.root, "new-site", world.root / "sites/new-site/age.key")
    with pytest.raises(SecretError, match="refusing to overwrite"):
        init_site(world.root, "new-site", world.keys["shop-a"])
    assert "sops" not in (folder / "site.yaml").read_text()
    assert not (world.root / "sites/new-site/age.key").exists()


def test_key_destination_in_another_git_tree_is_refused(world: World, tmp_path: Path) -> None:
    other = tmp_path / "other-clone"
    (other / ".git").mkdir(parents=True)
    with pytest.raises(SecretError, match="git working tree"):
        keygen(other / "k.key", world.root, created=None)


def test_rotation_keeps_secrets_readable_by_the_new_key_only(world: World, tmp_path: Path) -> None:
    tree = WorkdirTree(world.root)
    before = decrypt_site_secrets(tree, "shop-a", world.keys["shop-a"], sops=world.sops)
    old_recipient = world.recipients["shop-a"]
    new_key = tmp_path / "shop-a.new.key"
    result = rotate_site(
        world.root, "shop-a", new_key, old_key=world.keys["shop-a"], sops=world.sops
    )
    assert result.old_recipient == old_recipient and result.recipient != old_recipient
    assert set(result.written) >= {
        "sites/shop-a/secrets/wifi-psk.sops.yaml",
        "sites/shop-a/secrets/pos-db.sops.yaml",
        "sites/shop-a/site.yaml",
        ".sops.yaml",
    }
    after = decrypt_site_secrets(WorkdirTree(world.root), "shop-a", new_key, sops=world.sops)
    assert after == before
    with pytest.raises(SecretError, match="wrong key"):
        decrypt_site_secrets(
            WorkdirTree(world.root), "shop-a", world.keys["shop-a"], sops=world.sops
        )
    # the old key cannot open the new files even by going around our pre-check
    for path in (
        "sites/shop-a/secrets/wifi-psk.sops.yaml",
        "sites/shop-a/secrets/pos-db.sops.yaml",
    ):
        with pytest.raises(SecretError):
            world.sops.decrypt(
                (world.root / path).read_bytes(), key_file=world.keys["shop-a"], path=path
            )
        assert _recipients(world, path) == {result.recipient, world.recipients["break-glass"]}
    assert old_recipient not in _site_yaml(world, "shop-a")
    assert old_recipient not in (world.root / ".sops.yaml").read_text()
    assert result.recipient in (world.root / ".sops.yaml").read_text()
    # other sites are untouched
    assert decrypt_site_secrets(
        WorkdirTree(world.root), "shop-b", world.keys["shop-b"], sops=world.sops
    )


def test_rotation_with_the_break_glass_key_after_a_node_is_lost(
    world: World, tmp_path: Path
) -> None:
    world.keys["shop-b"].unlink()  # the node and its key are gone
    new_key = tmp_path / "shop-b.new.key"
    rotate_site(world.root, "shop-b", new_key, old_key=world.break_glass, sops=world.sops)
    secrets = decrypt_site_secrets(WorkdirTree(world.root), "shop-b", new_key, sops=world.sops)
    assert {v for s in secrets for v in s["stringData"].values()} == set(world.plaintexts["shop-b"])


def test_rotation_writes_nothing_when_a_secret_cannot_be_decrypted(
    world: World, tmp_path: Path
) -> None:
    snapshot = {p: p.read_bytes() for p in world.root.rglob("*") if p.is_file()}
    with pytest.raises(SecretError, match="wrong key"):
        rotate_site(
            world.root, "shop-a", tmp_path / "n.key", old_key=world.keys["shop-b"], sops=world.sops
        )
    assert {p: p.read_bytes() for p in world.root.rglob("*") if p.is_file()} == snapshot
    assert not (tmp_path / "n.key").exists()
    with pytest.raises(SecretError, match="--old-key"):
        rotate_site(world.root, "shop-a", tmp_path / "n.key", old_key=None, sops=world.sops)


def test_sync_after_a_break_glass_change(world: World, tmp_path: Path) -> None:
    second = keygen(tmp_path / "bg2.key", world.root, created=None)
    fleet = world.root / "fleets/shops.yaml"
    fleet.write_text(fleet.read_text().replace('recipients: ["', f'recipients: ["{second}", "'))
    written = sync_site(world.root, "shop-a", world.break_glass, sops=world.sops)
    assert set(written) == {
        "sites/shop-a/secrets/wifi-psk.sops.yaml",
        "sites/shop-a/secrets/pos-db.sops.yaml",
        ".sops.yaml",
    }
    assert decrypt_site_secrets(
        WorkdirTree(world.root), "shop-a", tmp_path / "bg2.key", sops=world.sops
    )
    assert sync_site(world.root, "shop-a", world.break_glass, sops=world.sops) == ()


def test_encrypt_refusals(world: World) -> None:
    with pytest.raises(SecretError, match="already exists"):
        world.add_secret("shop-a", "wifi-psk")
    with pytest.raises(SecretError, match="already encrypted"):
        encrypt_secret(
            world.root,
            "shop-a",
            (world.root / "sites/shop-a/secrets/wifi-psk.sops.yaml").read_bytes(),
            name="copy",
            sops=world.sops,
        )
    with pytest.raises(SecretError, match="kind: Secret"):
        encrypt_secret(world.root, "shop-a", b"apiVersion: v1\nkind: ConfigMap\n", sops=world.sops)
    with pytest.raises(SecretError, match="string values"):
        encrypt_secret(
            world.root,
            "shop-a",
            b"apiVersion: v1\nkind: Secret\nmetadata: {name: n}\nstringData: {port: 5432}\n",
            sops=world.sops,
        )


def test_manage_commands_leave_no_plaintext_behind(
    world: World, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    world.add_secret("plant-c", "mqtt-passwords", namespace="plant-data")
    rotate_site(
        world.root, "plant-c", tmp_path / "c2.key", old_key=world.keys["plant-c"], sops=world.sops
    )
    sync_site(world.root, "shop-b", world.break_glass, sops=world.sops)
    files = [p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()]
    for value in world.all_plaintext():
        assert value not in caplog.text
        assert not any(value.encode() in data for data in files)


def test_encrypt_error_messages_do_not_echo_plaintext(world: World, tmp_path: Path) -> None:
    failing = Sops(tmp_path / "fake")
    (tmp_path / "fake").write_text(
        "#!/bin/sh\ncat >/dev/null; echo 'bad value `hunter2-secret` at line 3' >&2; exit 1\n"
    )
    (tmp_path / "fake").chmod(0o755)
    with pytest.raises(SecretError) as caught:
        encrypt_secret(
            world.root,
            "shop-a",
            b"apiVersion: v1\nkind: Secret\nmetadata: {name: n}\nstringData: {k: hunter2-secret}\n",
            sops=failing,
        )
    assert "hunter2" not in str(caught.value)
    assert "sops failed to encrypt (exit 1)" in str(caught.value)
