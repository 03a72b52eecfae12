"""The node's side: decrypt its own secrets in memory, refuse everything else, redact for review."""

from __future__ import annotations

import hashlib
import logging
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from sopsworld import World

from reconciler.core.errors import SecretError
from reconciler.core.secrets import Sops, decrypt_site_secrets, redact, redaction_key
from reconciler.core.source import WorkdirTree

MARK = re.compile(r"^<redacted sha256:[0-9a-f]{12}>$")


def _tree(world: World) -> WorkdirTree:
    return WorkdirTree(world.root)


def _edit(world: World, path: str, old: str, new: str, count: int = 1) -> None:
    file = world.root / path
    text = file.read_text()
    assert old in text
    file.write_text(text.replace(old, new, count))


def test_site_decrypts_its_own_secrets(world: World) -> None:
    secrets = decrypt_site_secrets(_tree(world), "shop-a", world.keys["shop-a"], sops=world.sops)
    assert [(s["metadata"]["namespace"], s["metadata"]["name"]) for s in secrets] == [
        ("pos", "pos-db"),
        ("pos", "wifi-psk"),
    ]
    values = {v for s in secrets for v in s["stringData"].values()}
    assert values == set(world.plaintexts["shop-a"])
    assert all(s["kind"] == "Secret" and "sops" not in s for s in secrets)


def test_break_glass_decrypts_every_site(world: World) -> None:
    for site_id in ("shop-a", "shop-b", "plant-c"):
        secrets = decrypt_site_secrets(_tree(world), site_id, world.break_glass, sops=world.sops)
        assert secrets


def test_a_site_cannot_decrypt_another_sites_secrets(world: World) -> None:
    with pytest.raises(SecretError, match="wrong key") as caught:
        decrypt_site_secrets(_tree(world), "shop-a", world.keys["shop-b"], sops=world.sops)
    message = str(caught.value)
    assert message.startswith("sites/shop-a/secrets/pos-db.sops.yaml:")
    assert world.recipients["shop-b"][:10] in message  # the key it holds
    assert world.recipients["shop-a"][:10] in message  # the key the site should have


def test_another_sites_file_copied_in_is_refused(world: World) -> None:
    """Mix-and-match: shop-b's encrypted file under shop-a decrypts for nobody at shop-a."""
    shutil.copy(
        world.root / "sites/shop-b/secrets/wifi-psk.sops.yaml",
        world.root / "sites/shop-a/secrets/wifi-psk.sops.yaml",
    )
    with pytest.raises(SecretError, match="must be encrypted to exactly") as caught:
        decrypt_site_secrets(_tree(world), "shop-a", world.keys["shop-a"], sops=world.sops)
    assert "sites/shop-a/secrets/wifi-psk.sops.yaml" in str(caught.value)
    assert "keys that must not read it" in str(caught.value)


def test_a_site_without_secrets_needs_no_key(world: World) -> None:
    for path in (world.root / "sites/shop-b/secrets").iterdir():
        path.unlink()
    assert (
        decrypt_site_secrets(_tree(world), "shop-b", world.keys_dir / "none", sops=world.sops) == []
    )


def test_missing_key_file(world: World) -> None:
    with pytest.raises(SecretError, match="does not exist") as caught:
        decrypt_site_secrets(_tree(world), "shop-a", world.keys_dir / "gone.key", sops=world.sops)
    assert "gone.key" in str(caught.value)


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        # moving the Secret to another namespace: readable field, covered by the MAC
        ("namespace: pos", "namespace: kube-system", "MAC does not match"),
        # a flipped ciphertext byte: AES-GCM authentication fails
        (
            "password: ENC[AES256_GCM,data:",
            "password: ENC[AES256_GCM,data:AA",
            "fails authentication",
        ),
        # a damaged data-key block
        (
            "-----BEGIN AGE ENCRYPTED FILE-----\n            YWdl",
            "-----BEGIN AGE ENCRYPTED FILE-----\n            ZWdl",
            "tampered",
        ),
    ],
    ids=["namespace", "ciphertext", "age-block"],
)
def test_tampering_is_caught(world: World, old: str, new: str, expected: str) -> None:
    path = "sites/shop-b/secrets/wifi-psk.sops.yaml"
    _edit(world, path, old, new, count=-1 if "AGE" in old else 1)
    with pytest.raises(SecretError, match=expected) as caught:
        decrypt_site_secrets(_tree(world), "shop-b", world.keys["shop-b"], sops=world.sops)
    assert str(caught.value).startswith(path)


def test_plaintext_value_next_to_encrypted_ones_is_refused(world: World) -> None:
    path = "sites/shop-b/secrets/wifi-psk.sops.yaml"
    text = (world.root / path).read_text()
    (world.root / path).write_text(re.sub(r"user: ENC\[[^\]]*\]", "user: admin", text))
    with pytest.raises(SecretError, match="user is NOT encrypted") as caught:
        decrypt_site_secrets(_tree(world), "shop-b", world.keys["shop-b"], sops=world.sops)
    assert re.match(rf"{path}:\d+: ", str(caught.value))


def test_removed_mac_is_refused_before_sops_runs(world: World) -> None:
    path = "sites/shop-b/secrets/wifi-psk.sops.yaml"
    text = (world.root / path).read_text()
    (world.root / path).write_text(re.sub(r"\n    mac: ENC\[[^\]]*\]", "", text))
    with pytest.raises(SecretError, match=r"sops\.mac is missing"):
        decrypt_site_secrets(_tree(world), "shop-b", world.keys["shop-b"], sops=Sops(Path("/x")))


def test_stray_file_in_secrets_folder_is_refused(world: World) -> None:
    (world.root / "sites/shop-b/secrets/notes.txt").write_text("todo\n")
    with pytest.raises(SecretError, match=r"only encrypted <name>\.sops\.yaml"):
        decrypt_site_secrets(_tree(world), "shop-b", world.keys["shop-b"], sops=world.sops)


def _fake_sops(tmp_path: Path, body: str) -> Path:
    script = tmp_path / "fake-sops"
    script.write_text("#!/bin/sh\n" + body + "\n")
    script.chmod(0o755)
    return script


def test_sops_missing(world: World) -> None:
    missing = Sops(world.keys_dir / "no-such-sops")
    with pytest.raises(SecretError, match="cannot run") as caught:
        decrypt_site_secrets(_tree(world), "shop-b", world.keys["shop-b"], sops=missing)
    assert "sites/shop-b/secrets/wifi-psk.sops.yaml" in str(caught.value)


def test_sops_failing(world: World, tmp_path: Path) -> None:
    failing = Sops(_fake_sops(tmp_path, 'echo "something broke" >&2; exit 3'))
    with pytest.raises(SecretError, match=r"sops failed to decrypt \(exit 3\): something broke"):
        decrypt_site_secrets(_tree(world), "shop-b", world.keys["shop-b"], sops=failing)


def test_sops_hanging_is_stopped(world: World, tmp_path: Path) -> None:
    hanging = Sops(_fake_sops(tmp_path, "exec sleep 60"), timeout=0.5)
    with pytest.raises(SecretError, match="did not finish"):
        decrypt_site_secrets(_tree(world), "shop-b", world.keys["shop-b"], sops=hanging)


def test_sops_runs_with_a_minimal_environment(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stray SOPS_*/AWS variables of the caller must not reach sops."""
    dump = tmp_path / "env.txt"
    monkeypatch.setenv("SOPS_AGE_RECIPIENTS", world.recipients["shop-b"])
    monkeypatch.setenv("SOPS_AGE_KEY", "AGE-SECRET-KEY-1XXXX")
    monkeypatch.setenv("AWS_PROFILE", "prod")
    spy = Sops(_fake_sops(tmp_path, f"env > {dump}; exit 1"))
    with pytest.raises(SecretError):
        decrypt_site_secrets(_tree(world), "shop-b", world.keys["shop-b"], sops=spy)
    names = {line.split("=", 1)[0] for line in dump.read_text().splitlines()}
    assert "SOPS_AGE_RECIPIENTS" not in names
    assert "SOPS_AGE_KEY" not in names
    assert "AWS_PROFILE" not in names
    assert {"SOPS_AGE_KEY_FILE", "SOPS_DISABLE_VERSION_CHECK"} <= names


def test_stray_recipients_in_environment_do_not_reach_encryption(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOPS_AGE_RECIPIENTS", world.recipients["shop-b"])
    world.add_secret("shop-a", "extra")
    secrets = decrypt_site_secrets(_tree(world), "shop-a", world.keys["shop-a"], sops=world.sops)
    assert len(secrets) == 3
    with pytest.raises(SecretError, match="wrong key"):
        decrypt_site_secrets(_tree(world), "shop-a", world.keys["shop-b"], sops=world.sops)


def test_decrypts_from_a_commit(world: World) -> None:
    """The node reads a verified commit through pygit2, not a checkout."""
    import pygit2

    from reconciler.core.source import CommitTree

    subprocess.run(["git", "init", "-q", str(world.root)], check=True)
    subprocess.run(["git", "-C", str(world.root), "add", "-A"], check=True)
    subprocess.run(
        [
            "git",
            "-C",
            str(world.root),
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@e",
            "commit",
            "-qm",
            "init",
        ],
        check=True,
    )
    tree = CommitTree(pygit2.Repository(str(world.root)), "HEAD")
    secrets = decrypt_site_secrets(tree, "plant-c", world.keys["plant-c"], sops=world.sops)
    assert secrets[0]["metadata"]["name"] == "historian-credentials"


def test_nothing_leaks_to_disk_or_logs(
    world: World,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    tree = _tree(world)
    for site_id in ("shop-a", "shop-b", "plant-c"):
        decrypt_site_secrets(tree, site_id, world.keys[site_id], sops=world.sops)
    with pytest.raises(SecretError) as wrong:
        decrypt_site_secrets(tree, "shop-a", world.keys["shop-b"], sops=world.sops)
    _edit(world, "sites/shop-b/secrets/wifi-psk.sops.yaml", "namespace: pos", "namespace: x")
    with pytest.raises(SecretError) as tampered:
        decrypt_site_secrets(tree, "shop-b", world.keys["shop-b"], sops=world.sops)
    captured = capsys.readouterr()
    texts = [caplog.text, captured.out, captured.err, str(wrong.value), str(tampered.value)]
    files = [p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()]
    assert world.all_plaintext()
    for value in world.all_plaintext():
        assert not any(value in text for text in texts), "plaintext in a log line or message"
        assert not any(value.encode() in data for data in files), "plaintext on disk"


def test_redaction(world: World) -> None:
    secrets = decrypt_site_secrets(_tree(world), "shop-a", world.keys["shop-a"], sops=world.sops)
    key = redaction_key(world.keys["shop-a"], "shop-a")
    secret = secrets[0]
    shown = redact(secret, key)
    assert shown["metadata"] == secret["metadata"]
    assert all(MARK.match(v) for v in shown["stringData"].values())
    assert not any(v in str(shown) for v in world.plaintexts["shop-a"])
    # the same value gives the same mark, so a diff is quiet when nothing changed
    assert redact(secret, key) == shown
    # a changed value changes its mark, and only its mark
    changed = {**secret, "stringData": {**secret["stringData"], "password": "other"}}
    after = redact(changed, key)
    assert after["stringData"]["password"] != shown["stringData"]["password"]
    assert after["stringData"]["user"] == shown["stringData"]["user"]
    # keyed: not the plain hash of the value (a PIN could be brute-forced from that)
    value = secret["stringData"]["password"]
    assert hashlib.sha256(value.encode()).hexdigest()[:12] not in shown["stringData"]["password"]
    assert redact(secret, redaction_key(world.keys["shop-b"], "shop-a")) != shown
    # data (base64) and stringData of the same bytes at the same place show the same mark
    import base64

    as_data = {
        **secret,
        "stringData": {},
        "data": {"password": base64.b64encode(value.encode()).decode()},
    }
    assert redact(as_data, key)["data"]["password"] == shown["stringData"]["password"]
