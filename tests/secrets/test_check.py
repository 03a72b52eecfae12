"""Validation findings, one bad case at a time, each at its file and line."""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sopsworld import World

from reconciler.core.findings import Finding
from reconciler.core.model import Repository
from reconciler.core.secrets import check_secrets, secrets_check
from reconciler.core.secrets._scan import _MAYBE, may_hold_secrets, sensitive_name
from reconciler.core.source import WorkdirTree
from reconciler.core.validate import validate_tree

REPO_ROOT = Path(__file__).resolve().parents[2]


def _check(world: World, key: Path | None = None) -> list[Finding]:
    repo = Repository(WorkdirTree(world.root))
    return check_secrets(repo, list(repo.site_ids), key_file=key, sops=world.sops)


def _line(world: World, path: str, needle: str) -> int:
    for number, line in enumerate((world.root / path).read_text().splitlines(), start=1):
        if needle in line:
            return number
    raise AssertionError(f"{needle!r} not in {path}")


def _write(world: World, path: str, text: str) -> None:
    target = world.root / path
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)


def _sub(world: World, path: str, pattern: str, replacement: str) -> None:
    target = world.root / path
    text, count = re.subn(pattern, replacement, target.read_text(), count=1)
    assert count == 1, pattern
    target.write_text(text)


A_WIFI = "sites/shop-a/secrets/wifi-psk.sops.yaml"
B_WIFI = "sites/shop-b/secrets/wifi-psk.sops.yaml"


def test_a_clean_repository_has_no_findings(world: World) -> None:
    assert _check(world) == []
    assert _check(world, key=world.break_glass) == []


def _plaintext_file(world: World) -> tuple[str, int]:
    path = "sites/shop-a/secrets/plain.sops.yaml"
    _write(world, path, "apiVersion: v1\nkind: Secret\nmetadata: {name: p}\nstringData: {k: v}\n")
    return path, 1


def _plaintext_value(world: World) -> tuple[str, int]:
    _sub(world, A_WIFI, r"user: ENC\[[^\]]*\]", "user: admin")
    return A_WIFI, _line(world, A_WIFI, "user: admin")


def _no_mac(world: World) -> tuple[str, int]:
    _sub(world, A_WIFI, r"\n    mac: ENC\[[^\]]*\]", "")
    return A_WIFI, _line(world, A_WIFI, "sops:")


def _regex(world: World) -> tuple[str, int]:
    _sub(world, A_WIFI, r"encrypted_regex: .*", "encrypted_regex: ^data$")
    return A_WIFI, _line(world, A_WIFI, "encrypted_regex")


def _other_site(world: World) -> tuple[str, int]:
    shutil.copy(world.root / B_WIFI, world.root / "sites/shop-a/secrets/copied.sops.yaml")
    path = "sites/shop-a/secrets/copied.sops.yaml"
    return path, _line(world, path, "age:")


def _no_break_glass(world: World) -> tuple[str, int]:
    path = "sites/shop-a/secrets/site-only.sops.yaml"
    plain = b"apiVersion: v1\nkind: Secret\nmetadata: {name: s}\nstringData: {k: v}\n"
    encrypted = world.sops.encrypt(plain, recipients=[world.recipients["shop-a"]], path=path)
    (world.root / path).write_bytes(encrypted)
    return path, _line(world, path, "age:")


def _stranger(world: World) -> tuple[str, int]:
    path = "sites/shop-a/secrets/stranger.sops.yaml"
    plain = b"apiVersion: v1\nkind: Secret\nmetadata: {name: s}\nstringData: {k: v}\n"
    stranger = "age1zvkyg2lqzraa2lnjvqej32nkuu0ues2s82hzrye869xeexvn73equnujwj"
    recipients = [world.recipients["shop-a"], world.recipients["break-glass"], stranger]
    (world.root / path).write_bytes(world.sops.encrypt(plain, recipients=recipients, path=path))
    return path, _line(world, path, "age:")


def _stray_file(world: World) -> tuple[str, int]:
    path = "sites/shop-a/secrets/wifi.yaml"
    _write(world, path, "apiVersion: v1\nkind: Secret\nstringData: {psk: x}\n")
    return path, 0


def _secret_manifest(world: World) -> tuple[str, int]:
    path = "apps/pos/manifests/db.yaml"
    _write(
        world,
        path,
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n---\n"
        "apiVersion: v1\nkind: Secret\nmetadata: {name: db}\ndata:\n  password: aHVudGVyMg==\n",
    )
    return path, 8


def _pem_key(world: World) -> tuple[str, int]:
    path = "deploy/notes.md"
    block = (
        "-----BEGIN OPENSSH "
        + "PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----\n"
    )
    _write(world, path, "# notes\n\nkey for the node:\n" + block)
    return path, 4


def _age_key(world: World) -> tuple[str, int]:
    path = "README.md"
    _write(world, path, "hello\n" + world.keys["shop-a"].read_text())
    return path, _line(world, path, "AGE-SECRET-KEY-1")


def _password_default(world: World) -> tuple[str, int]:
    path = "apps/pos/app.yaml"
    _write(
        world,
        path,
        "apiVersion: outpost/v1\nkind: App\nmetadata: {name: pos}\nspec:\n"
        "  parameters:\n    type: object\n    properties:\n"
        "      adminPassword: {type: string, default: changeme}\n"
        "      apiTokenSecretName: {type: string, default: pos-api}\n",
    )
    return path, 8


def _fleet_value(world: World) -> tuple[str, int]:
    path = "fleets/shops.yaml"
    text = (world.root / path).read_text()
    text += "  apps:\n    pos: {version: 1.0.0, values: {currency: EUR, dbPassword: s3cret, apiToken: '${token}'}}\n"
    (world.root / path).write_text(text)
    return path, _line(world, path, "dbPassword")


def _env_literal(world: World) -> tuple[str, int]:
    path = "apps/pos/manifests/deploy.yaml"
    _write(
        world,
        path,
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nspec:\n  template:\n    spec:\n"
        "      containers:\n        - name: c\n          env:\n"
        "            - {name: LOG_LEVEL, value: debug}\n"
        "            - name: DB_PASSWORD\n              value: hunter2\n"
        "            - {name: API_TOKEN, valueFrom: {secretKeyRef: {name: t, key: token}}}\n",
    )
    return path, 12


def _shared_recipient(world: World) -> tuple[str, int]:
    path = "sites/shop-b/site.yaml"
    _sub(world, path, world.recipients["shop-b"], world.recipients["shop-a"])
    return path, _line(world, path, "recipient")


def _bad_recipient(world: World) -> tuple[str, int]:
    path = "sites/shop-b/site.yaml"
    recipient = world.recipients["shop-b"]
    # Change the last character to another one: the bech32 checksum no longer holds.
    broken = recipient[:-1] + ("x" if recipient[-1] != "x" else "y")
    _sub(world, path, recipient, broken)
    return path, _line(world, path, "recipient")


def _no_recipient(world: World) -> tuple[str, int]:
    path = "sites/shop-b/site.yaml"
    _sub(world, path, r"  sops: \{recipient: \"[a-z0-9]+\"\}\n", "")
    return path, _line(world, path, "spec:")


def _stale_config(world: World) -> tuple[str, int]:
    path = ".sops.yaml"
    text = (world.root / path).read_text()
    target = "  - path_regex: ^sites/shop-b/"
    start = text.index(target)
    bg_line = text.index(world.recipients["break-glass"], start)
    line_start = text.rfind("\n", 0, bg_line) + 1
    line_end = text.index("\n", bg_line) + 1
    (world.root / path).write_text(text[:line_start] + text[line_end:])
    return path, _line(world, path, target.strip())


def _age_key_lower_case(world: World) -> tuple[str, int]:
    path = "README.md"
    _write(world, path, "hello\n" + world.keys["shop-a"].read_text().lower())
    return path, _line(world, path, "age-secret-key-1")


def _sops_top_level(world: World) -> tuple[str, int]:
    """A field sops leaves readable (it encrypts data and stringData only)."""
    _sub(world, A_WIFI, r"\nsops:", "\nnotes: the psk is the store's phone number\nsops:")
    return A_WIFI, _line(world, A_WIFI, "notes:")


def _sops_annotation(world: World) -> tuple[str, int]:
    _sub(
        world, A_WIFI, r"\nmetadata:\n", "\nmetadata:\n    annotations: {adminPassword: hunter2}\n"
    )
    return A_WIFI, _line(world, A_WIFI, "annotations:")


def _patch_plaintext(world: World) -> tuple[str, int]:
    path = "sites/shop-a/overrides.yaml"
    _write(
        world,
        path,
        "apiVersion: outpost/v1\nkind: SiteOverrides\nmetadata: {name: shop-a}\nspec:\n"
        "  apps:\n    pos:\n      patches:\n"
        "        - target: {kind: Secret, name: wifi}\n"
        "          json:\n"
        "            - {op: add, path: /data/WIFI_PSK, value: hunter2}\n",
    )
    return path, 10


def _json_secret(world: World) -> tuple[str, int]:
    path = "apps/pos/manifests/db.json"
    _write(
        world,
        path,
        '{\n\t"apiVersion": "v1",\n\t"kind": "Secret",\n\t"metadata": {"name": "db"},\n'
        '\t"data": {"conn": "aHVudGVyMg=="}\n}\n',
    )
    return path, 5


CASES: dict[str, tuple[Callable[[World], tuple[str, int]], str]] = {
    "age key in lower case": (_age_key_lower_case, "an age private key (AGE-SECRET-KEY-1…)"),
    "sops top-level field": (_sops_top_level, "top-level field 'notes' is not encrypted"),
    "sops annotation": (_sops_annotation, "metadata.annotations.adminPassword holds a value"),
    "patch into a Secret": (_patch_plaintext, "this patch writes a literal value into a secret"),
    "Secret in JSON": (_json_secret, "a Kubernetes Secret with data outside"),
    "plaintext file": (_plaintext_file, "PLAINTEXT secret"),
    "plaintext value": (_plaintext_value, "stringData.user is NOT encrypted"),
    "mac removed": (_no_mac, "sops.mac is missing"),
    "encrypted_regex": (_regex, "sops.encrypted_regex is '^data$'"),
    "another site's key": (
        _other_site,
        "a secret of site 'shop-a' is encrypted to site 'shop-b''s key",
    ),
    "another site's file": (_other_site, "not encrypted to site 'shop-a''s recipient"),
    "no break-glass": (_no_break_glass, "not encrypted to the break-glass recipient"),
    "stranger": (_stranger, "neither site 'shop-a''s recipient nor a break-glass"),
    "stray file": (_stray_file, "only encrypted <name>.sops.yaml files"),
    "secret manifest": (_secret_manifest, "a Kubernetes Secret with data outside"),
    "pem key": (_pem_key, "a OPENSSH private key is committed"),
    "age key": (_age_key, "an age private key (AGE-SECRET-KEY-1…) is committed"),
    "password default": (_password_default, "parameter 'adminPassword' has a literal default"),
    "fleet value": (_fleet_value, "'dbPassword' holds a literal value"),
    "env literal": (_env_literal, "'DB_PASSWORD' is set to a literal value"),
    "shared recipient": (_shared_recipient, "shares its age recipient"),
    "bad recipient": (_bad_recipient, "spec.sops.recipient is not an age X25519 recipient"),
    "no recipient": (_no_recipient, "has 1 secret file(s) but no spec.sops.recipient"),
    "stale .sops.yaml": (_stale_config, "the rule for site 'shop-b' does not match the tree"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_finding(world: World, case: str) -> None:
    make, message = CASES[case]
    path, line = make(world)
    findings = _check(world)
    matching = [f for f in findings if message in f.message]
    assert matching, f"no finding with {message!r}; got {[str(f.message) for f in findings]}"
    assert (matching[0].path, matching[0].line) == (path, line)
    assert matching[0].rule == "secrets"
    for value in [*world.all_plaintext(), "hunter2", "s3cret", "changeme", "aHVudGVyMg=="]:
        assert not any(value in f.message for f in findings)


def test_fleet_placeholders_and_secret_names_are_not_findings(world: World) -> None:
    _fleet_value(world)
    _password_default(world)
    messages = " ".join(f.message for f in _check(world))
    assert "apiToken" not in messages
    assert "apiTokenSecretName" not in messages


def test_example_keys_under_tests_keys_are_allowed(world: World) -> None:
    _write(world, "tests/keys/age/shop-a.key", world.keys["shop-a"].read_text())
    assert _check(world) == []


def test_tampering_is_found_only_with_a_key(world: World) -> None:
    """Without a key the MAC cannot be checked; CI's break-glass key can, and names the file."""
    _sub(world, B_WIFI, "namespace: pos", "namespace: kube-system")
    assert _check(world) == []
    findings = _check(world, key=world.break_glass)
    assert [(f.path, f.site) for f in findings] == [(B_WIFI, "shop-b")]
    assert "MAC does not match" in findings[0].message
    # a site key checks only the files it can open
    assert _check(world, key=world.keys["shop-a"]) == []
    assert len(_check(world, key=world.keys["shop-b"])) == 1


def test_missing_key_for_mac_checks_is_a_finding(world: World) -> None:
    findings = _check(world, key=world.keys_dir / "absent.key")
    assert len(findings) == 1 and "does not exist" in findings[0].message


def test_narrowed_sites_read_only_their_folders(world: World) -> None:
    _plaintext_value(world)  # shop-a
    repo = Repository(WorkdirTree(world.root))
    assert check_secrets(repo, ["shop-b"], sops=world.sops) == []
    assert check_secrets(repo, ["shop-a"], sops=world.sops)


def test_wired_into_validate_tree(world: World) -> None:
    _plaintext_value(world)
    findings = validate_tree(WorkdirTree(world.root), extra=[secrets_check(world.break_glass)])
    secrets_findings = [f for f in findings if f.rule == "secrets"]
    assert [f.path for f in secrets_findings] == [A_WIFI]


@pytest.mark.parametrize(
    ("name", "sensitive"),
    [
        ("password", True),
        ("adminPassword", True),
        ("DB_PASSWORD", True),
        ("wifi_psk", True),
        ("apiKey", True),
        ("api_key", True),
        ("privateKey", True),
        ("clientSecret", True),
        ("authToken", True),
        ("passphrase", True),
        ("credentials", True),
        ("passwordSecretName", False),
        ("existingSecret", False),
        ("tokenTTL", False),
        ("secretKeyRef", False),
        ("passwordFile", False),
        ("currency", False),
        ("key", False),
        ("keyboardLayout", False),
        ("tokens", False),
    ],
)
def test_sensitive_names(name: str, sensitive: bool) -> None:
    assert sensitive_name(name) is sensitive


def test_the_example_fleet_is_clean_and_intact(tmp_path: Path) -> None:
    """This repository's own example fleet: encrypted right, MACs intact (break-glass key)."""
    repo = Repository(WorkdirTree(REPO_ROOT))
    key = tmp_path / "break-glass.key"  # a checkout leaves the example key readable by all
    key.write_bytes((REPO_ROOT / "tests/keys/age/break-glass.key").read_bytes())
    key.chmod(0o600)
    findings = check_secrets(repo, list(repo.site_ids), key_file=key)
    assert findings == []
    assert all(repo.tree.files(f"sites/{site}/secrets") for site in repo.site_ids)


def test_a_sops_config_for_a_large_fleet_is_read_and_one_past_its_limit_is_named(
    world: World,
) -> None:
    """One creation rule a site: 10,000 sites write a .sops.yaml of about 3 MB, which
    must validate like a small one; past the limit it is a finding naming the file."""
    from reconciler.core.secrets._recipients import MAX_SOPS_CONFIG_BYTES

    config = world.root / ".sops.yaml"
    original = config.read_text()
    filler = "".join(
        f"  - path_regex: ^sites/other-{n}/secrets/.*\\.sops\\.yaml$\n"
        f"    encrypted_regex: ^(data|stringData)$\n"
        f"    age: age1{'q' * 58}\n"
        for n in range(12_000)
    )
    assert "creation_rules:\n" in original
    config.write_text(original.replace("creation_rules:\n", "creation_rules:\n" + filler, 1))
    assert config.stat().st_size > 2 * (1 << 20) - (
        1 << 19
    )  # past the 1 MiB any other document gets
    assert _check(world) == []

    with config.open("a") as out:
        out.write("#" * MAX_SOPS_CONFIG_BYTES + "\n")
    findings = _check(world)
    assert [(f.path, "limit" in f.message) for f in findings] == [(".sops.yaml", True)], findings


_WORDS = st.sampled_from(
    ["secret", "Pass", "pwd", "PSK", "token", "credential", "apikey", "API-Key", "private_key",
     "accesskey", "auth-key", "key", "publicKey", "api key", "privat-key", "sec ret", "tokn"]
)  # fmt: skip


@given(st.lists(st.one_of(_WORDS, st.text(max_size=12)), max_size=8))
def test_the_quick_look_for_secret_words_agrees_with_the_expression(parts: list[str]) -> None:
    data = " ".join(parts).encode("utf-8", "surrogatepass")
    assert may_hold_secrets(data) == bool(_MAYBE.search(data.lower()))
