"""Enrollment with real parts: ssh-keygen keys, a signed git repository, age keys and sops.

The right box enrolls and the wrong ones are refused before anything is written; the
request ``outpost site accept`` reads is signed and checked against hardware.yaml; after
accepting, the site's secrets open with the node's new key and not with the old one.
"""

from __future__ import annotations

import json
import os
import pwd
import stat
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pygit2
import pytest
from enroll_world import BOXES, EnrollWorld, build, hardware_text, make_box
from trust_git import Key, make_key

from reconciler.ci.accept import accept_request, set_node_public_key
from reconciler.cli import main
from reconciler.core.enrollment import EnrollmentRefused, open_request, seal_request
from reconciler.core.errors import ConfigError, DocumentError, SecretError
from reconciler.core.model import Repository
from reconciler.core.report import open_envelope, seal
from reconciler.core.secrets import Sops
from reconciler.core.source import WorkdirTree
from reconciler.core.trust import parse_public_key_line
from reconciler.core.validate import validate_tree
from reconciler.node.config import load_config
from reconciler.node.enroll import enroll
from reconciler.node.fetch import CANDIDATE_REF
from reconciler.node.identity import load_identity

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def root_key(tmp_path_factory: pytest.TempPathFactory) -> Key:
    return make_key(tmp_path_factory.mktemp("enroll-keys"), "root")


@pytest.fixture(scope="module")
def sops() -> Sops:
    return Sops()


@pytest.fixture
def world(tmp_path: Path, sops: Sops, root_key: Key) -> EnrollWorld:
    return build(tmp_path, sops, root_key)


def _secret_files(world: EnrollWorld, site: str) -> list[Path]:
    return sorted((world.root / "sites" / site / "secrets").glob("*.sops.yaml"))


def _errors(world: EnrollWorld) -> set[tuple[str, str]]:
    found = validate_tree(WorkdirTree(world.root))
    return {(f.path, f.message) for f in found if f.severity == "error"}


def _decrypts(sops: Sops, path: Path, key: Path) -> bool:
    try:
        sops.decrypt(path.read_bytes(), key_file=key, path=str(path))
    except SecretError:
        return False
    return True


# -- the right box -------------------------------------------------------------------------------


def test_the_right_box_enrolls(world: EnrollWorld) -> None:
    options = world.options(world.box("shop-a"), site="shop-a")
    done = enroll(options, now=NOW)
    head = world.git.head()
    assert (done.node.site, done.node.node, done.floor) == ("shop-a", "edge-1", head)

    config = load_config(done.config)
    assert (config.site, config.floor, config.first_apply) == ("shop-a", head, "immediate")
    assert config.trust_root.read_bytes() == world.trust_root.read_bytes()
    assert config.identity_key == done.identity_key and config.age_key == done.age_key
    assert config.source.url == "https://git.example.com/config.git"

    # keys 0600, owned by the agent's user (we run as root here: chowned)
    nobody = pwd.getpwnam("nobody")
    for key in (done.identity_key, done.age_key):
        info = key.stat()
        assert stat.S_IMODE(info.st_mode) == 0o600, key
        if os.geteuid() == 0:
            assert (info.st_uid, info.st_gid) == (nobody.pw_uid, nobody.pw_gid), key
    assert (
        load_identity(done.identity_key).public_key.blob
        == parse_public_key_line(done.public_key).blob
    )

    # the trust root's fingerprints are ssh-keygen's own
    listed = subprocess.run(
        ["ssh-keygen", "-l", "-f", f"{world.root_key.private}.pub"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()[1]
    assert done.trust_keys == (f"root@example.com {listed}",)

    # the request: signed by the new node key, naming this box and the site's new recipient
    request = open_request(done.request.read_bytes(), str(done.request))
    assert (request.site, request.node) == ("shop-a", "edge-1")
    assert (request.machine_id, request.serial) == (BOXES["shop-a"][1], BOXES["shop-a"][2])
    assert request.public_key.line() == done.public_key
    assert request.age_recipient == done.age_recipient
    assert request.floor == head
    from reconciler.core.secrets import key_file_recipients

    assert key_file_recipients(done.age_key) == (done.age_recipient,)


def test_the_request_verifies_with_ssh_keygen(world: EnrollWorld, tmp_path: Path) -> None:
    """An independent check of the SSHSIG: OpenSSH's own verifier, namespace outpost-enroll."""
    done = enroll(world.options(world.box("shop-a")), now=NOW)
    wire = json.loads(done.request.read_text())
    (tmp_path / "payload").write_text(wire["payload"])
    (tmp_path / "sig").write_text(wire["signature"])
    (tmp_path / "signers").write_text(f"node {done.public_key}\n")
    checked = subprocess.run(
        [
            "ssh-keygen",
            "-Y",
            "verify",
            "-f",
            str(tmp_path / "signers"),
            "-I",
            "node",
            "-n",
            "outpost-enroll",
            "-s",
            str(tmp_path / "sig"),
        ],
        stdin=(tmp_path / "payload").open("rb"),
        capture_output=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stderr


def test_a_bundle_enrolls_like_a_checkout(world: EnrollWorld, tmp_path: Path) -> None:
    bundle = tmp_path / "full.bundle"
    world.git.git("bundle", "create", str(bundle), "main")
    box = world.box("plant-c")
    done = enroll(
        world.options(box, repo=None, bundle=bundle, source_url=None, bundle_inbox=tmp_path),
        now=NOW,
    )
    assert (done.node.site, done.floor) == ("plant-c", world.git.head())
    assert load_config(done.config).bundle_inbox == tmp_path
    # the node's mirror holds the enrolled history, not as a candidate: the next
    # incremental bundle finds its prerequisites there
    mirror = done.config.parent.parent / "state" / "mirror.git"

    def git(*args: str) -> subprocess.CompletedProcess[str]:
        # the mirror belongs to the agent's user (nobody here): say it is safe to read as root
        command = ["git", "-c", "safe.directory=*", "--git-dir", str(mirror), *args]
        return subprocess.run(command, capture_output=True, text=True, check=False)

    assert git("rev-parse", "refs/outpost/floor").stdout.strip() == done.floor
    assert git("rev-parse", "--verify", "-q", CANDIDATE_REF).returncode != 0
    world.commit("the plant's next change")
    step = tmp_path / "step.bundle"
    world.git.git("bundle", "create", str(step), f"{done.floor}..main")
    checked = git("bundle", "verify", str(step))
    assert checked.returncode == 0, checked.stderr
    if os.geteuid() == 0:
        assert (mirror / "HEAD").stat().st_uid == pwd.getpwnam("nobody").pw_uid


def test_the_cli_prints_the_trust_roots_fingerprints(
    world: EnrollWorld, capsys: pytest.CaptureFixture[str]
) -> None:
    box = world.box("shop-b")
    base = world.tmp / "cli"
    code = main(
        ["node", "enroll", "--repo", str(world.root), "--trust-root", str(world.trust_root),
         "--config-dir", str(base / "etc"), "--state-dir", str(base / "state"),
         "--user", "nobody", "--source-url", "https://git.example.com/c.git",
         "--machine-id-file", str(box.machine_id_file), "--serial-file", str(box.serial_file)]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0, out
    import hashlib

    assert hashlib.sha256(world.trust_root.read_bytes()).hexdigest() in out
    assert world.root_key.fingerprint in out
    assert "shop-b/edge-1" in out


# -- the wrong boxes ------------------------------------------------------------------------------


def _nothing_written(world: EnrollWorld, name: str = "node") -> None:
    assert not (world.tmp / name).exists() or not any((world.tmp / name).rglob("*"))


def test_a_box_registered_for_another_store_is_refused(world: EnrollWorld) -> None:
    """The Munich box plugged in at Hamburg: it matches shop-b, the person stands in shop-a."""
    options = world.options(world.box("shop-b"), site="shop-a")
    with pytest.raises(EnrollmentRefused, match=r"registered for shop-b/edge-1.*not for shop-a"):
        enroll(options, now=NOW)
    _nothing_written(world)


def test_a_serial_of_another_store_with_a_foreign_machine_id_is_refused(
    world: EnrollWorld,
) -> None:
    box = make_box(world.tmp / "swapped", "d4" * 16, BOXES["shop-b"][2])
    with pytest.raises(EnrollmentRefused, match=r"not exactly the one registered as shop-b/edge-1"):
        enroll(world.options(box), now=NOW)
    _nothing_written(world)


def test_a_box_no_store_registers_is_refused(world: EnrollWorld) -> None:
    box = make_box(world.tmp / "stranger", "e5" * 16, "NOBODY-1")
    with pytest.raises(EnrollmentRefused, match=r"no site's hardware.yaml.*registers this box"):
        enroll(world.options(box), now=NOW)
    _nothing_written(world)


def test_a_box_two_stores_register_is_refused(world: EnrollWorld) -> None:
    machine_id = BOXES["shop-a"][1]
    (world.root / "sites/shop-b/hardware.yaml").write_text(
        hardware_text("shop-b", "edge-1", machine_id, BOXES["shop-a"][2])
    )
    world.commit("shop-b registers shop-a's box too")
    with pytest.raises(EnrollmentRefused, match=r"matches 2 nodes"):
        enroll(world.options(world.box("shop-a")), now=NOW)


def test_the_cli_exits_1_for_a_refused_box(
    world: EnrollWorld, capsys: pytest.CaptureFixture[str]
) -> None:
    box = make_box(world.tmp / "stranger", "e5" * 16, None)
    code = main(
        ["node", "enroll", "--repo", str(world.root), "--trust-root", str(world.trust_root),
         "--config-dir", str(world.tmp / "x"), "--source-url", "https://h/c.git",
         "--machine-id-file", str(box.machine_id_file), "--serial-file", str(box.serial_file)]
    )  # fmt: skip
    assert code == 1
    assert "refused: no site's hardware.yaml" in capsys.readouterr().err


def test_a_repository_the_trust_root_does_not_sign_is_refused(
    world: EnrollWorld, tmp_path: Path
) -> None:
    other = make_key(tmp_path, "other")
    wrong = tmp_path / "wrong_signers"
    wrong.write_text(f"ops@example.com {other.public_line}\n")
    with pytest.raises(EnrollmentRefused, match=r"not signed by a signer of the trust root"):
        enroll(world.options(world.box("shop-a"), trust_root=wrong), now=NOW)
    _nothing_written(world)


def test_an_enrolled_node_is_not_enrolled_again(world: EnrollWorld) -> None:
    options = world.options(world.box("shop-a"))
    enroll(options, now=NOW)
    with pytest.raises(ConfigError, match=r"already exists: this node is enrolled"):
        enroll(options, now=NOW)


def test_a_missing_or_blank_machine_id_is_an_error(world: EnrollWorld) -> None:
    box = make_box(world.tmp / "blank", "uninitialized", None)
    with pytest.raises(ConfigError, match=r"not a machine id"):
        enroll(world.options(box), now=NOW)


# -- site accept --------------------------------------------------------------------------------


def test_accept_records_the_keys_and_re_encrypts_to_the_node(
    world: EnrollWorld, sops: Sops
) -> None:
    done = enroll(world.options(world.box("shop-a")), now=NOW)
    errors_before = _errors(world)
    old_key = world.secrets.keys["shop-a"]
    files = _secret_files(world, "shop-a")
    assert files and all(_decrypts(sops, f, old_key) for f in files)

    accepted = accept_request(world.root, done.request, key=world.secrets.break_glass)
    assert set(accepted.written) >= {
        "sites/shop-a/hardware.yaml",
        "sites/shop-a/site.yaml",
        ".sops.yaml",
        *(str(f.relative_to(world.root)) for f in files),
    }
    repo = Repository(WorkdirTree(world.root))
    node = repo.site("shop-a").hardware.nodes[0]  # type: ignore[union-attr]
    assert node["publicKey"] == done.public_key
    assert repo.site("shop-a").site.sops_recipient == done.age_recipient
    # the comment people wrote survives the edit
    assert "# the store's one box" in (world.root / "sites/shop-a/hardware.yaml").read_text()
    for path in files:
        assert _decrypts(sops, path, done.age_key)
        assert not _decrypts(sops, path, old_key)
        assert _decrypts(sops, path, world.secrets.break_glass)  # break-glass kept
    # the other sites are untouched and the tree still validates
    assert all(
        _decrypts(sops, f, world.secrets.keys["shop-b"]) for f in _secret_files(world, "shop-b")
    )
    assert _errors(world) <= errors_before  # (the small world has no apps or policies)
    # a report signed by the node key opens with the keys now in hardware.yaml
    report = seal(
        {"kind": "SiteStatus", "site": "shop-a", "time": "2026-12-01T12:00:00Z"},
        load_identity(done.identity_key).private_key,
    )
    keys = [parse_public_key_line(str(node["publicKey"]))]
    assert open_envelope(report, keys).site == "shop-a"


def test_accept_needs_a_key_for_a_site_with_secrets(world: EnrollWorld) -> None:
    done = enroll(world.options(world.box("shop-a")), now=NOW)
    before = (world.root / "sites/shop-a/site.yaml").read_text()
    with pytest.raises(SecretError, match=r"give --key"):
        accept_request(world.root, done.request, key=None)
    assert (world.root / "sites/shop-a/site.yaml").read_text() == before


def test_a_tampered_request_is_refused(world: EnrollWorld, tmp_path: Path) -> None:
    done = enroll(world.options(world.box("shop-a")), now=NOW)
    wire = json.loads(done.request.read_text())
    payload = json.loads(wire["payload"])
    before = (world.root / "sites/shop-b/hardware.yaml").read_text()

    # the payload changed after signing (pointed at another store)
    payload["site"] = "shop-b"
    forged = dict(wire, payload=json.dumps(payload, sort_keys=True, separators=(",", ":")))
    path = tmp_path / "forged.json"
    path.write_text(json.dumps(forged))
    with pytest.raises(EnrollmentRefused, match=r"does not verify.*altered"):
        accept_request(world.root, path, key=world.secrets.break_glass)

    # another key signed it: the signature is not by the key the request carries
    other = enroll(world.options(world.box("shop-b", "box2"), "node2"), now=NOW)
    mixed = dict(wire, signature=json.loads(other.request.read_text())["signature"])
    path.write_text(json.dumps(mixed))
    with pytest.raises(EnrollmentRefused, match=r"not by the key the request carries"):
        accept_request(world.root, path, key=world.secrets.break_glass)
    assert (world.root / "sites/shop-b/hardware.yaml").read_text() == before

    # not JSON at all
    path.write_text("hello")
    with pytest.raises(EnrollmentRefused, match=r"not JSON"):
        accept_request(world.root, path, key=world.secrets.break_glass)


def test_a_validly_signed_request_from_the_wrong_machine_is_refused(
    world: EnrollWorld, tmp_path: Path
) -> None:
    """Signed correctly by its own key, but its machine id is not shop-a's box."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from reconciler.core.secrets._age import generate

    data = seal_request(
        site="shop-a",
        node="edge-1",
        machine_id="f6" * 16,
        serial=BOXES["shop-a"][2],
        private_key=Ed25519PrivateKey.generate(),
        comment="impostor",
        age_recipient=generate().recipient,
        floor=world.git.head(),
        time=NOW,
    )
    path = tmp_path / "impostor.json"
    path.write_bytes(data)
    with pytest.raises(EnrollmentRefused, match=r"machine id f6f6.*not the registered box"):
        accept_request(world.root, path, key=world.secrets.break_glass)


def test_the_cli_accepts_and_prints_the_git_commands(
    world: EnrollWorld, capsys: pytest.CaptureFixture[str]
) -> None:
    done = enroll(world.options(world.box("shop-b")), now=NOW)
    code = main(
        ["site", "accept", str(done.request), "--repo", str(world.root),
         "--key", str(world.secrets.break_glass)]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0, out
    assert "git -C" in out and "commit -S" in out and "sites/shop-b/hardware.yaml" in out


def test_a_replaced_box_rotates_the_keys_and_the_old_ones_stop_counting(
    world: EnrollWorld, sops: Sops
) -> None:
    first = enroll(world.options(world.box("shop-a")), now=NOW)
    accept_request(world.root, first.request, key=world.secrets.break_glass)
    world.commit("enroll shop-a/edge-1")
    # the box dies; its replacement is registered in a signed commit, then enrolls
    (world.root / "sites/shop-a/hardware.yaml").write_text(
        set_node_public_key(
            hardware_text("shop-a", "edge-1", "a7" * 16, "CZC0000A7"),
            "sites/shop-a/hardware.yaml",
            "edge-1",
            first.public_key,
        )
    )
    world.commit("shop-a/edge-1 replaced: new board")
    new_box = make_box(world.tmp / "replacement", "a7" * 16, "CZC0000A7")
    second = enroll(world.options(new_box, "node2"), now=NOW)
    accepted = accept_request(world.root, second.request, key=world.secrets.break_glass)
    assert accepted.old_public_key == first.public_key
    assert accepted.old_recipient == first.age_recipient
    node = Repository(WorkdirTree(world.root)).site("shop-a").hardware.nodes[0]  # type: ignore[union-attr]
    assert node["publicKey"] == second.public_key
    for path in _secret_files(world, "shop-a"):
        assert _decrypts(sops, path, second.age_key)
        assert not _decrypts(sops, path, first.age_key)
    old_report = seal(
        {"kind": "SiteStatus", "site": "shop-a", "time": "2026-12-01T12:00:00Z"},
        load_identity(first.identity_key).private_key,
    )
    from reconciler.core.report import ReportUnverified

    with pytest.raises(ReportUnverified):
        open_envelope(old_report, [parse_public_key_line(str(node["publicKey"]))])


# -- the hardware.yaml edit ---------------------------------------------------------------------


KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBPfAYU+E1HvFQKloMCodwDJPJJZwT0bUCCq22kOp9d0 n@s"


def test_the_key_goes_after_the_identity_and_replaces_an_old_one() -> None:
    text = (
        hardware_text("s", "edge-1", "a1" * 16, "X")
        + "    - name: edge-2\n      identity: {machineId: "
        + "b2" * 16
        + "}\n      arch: amd64\n      cpu: 2\n      memory: 1Gi\n"
    )
    once = set_node_public_key(text, "h.yaml", "edge-2", KEY)
    assert once.count("publicKey") == 1
    assert once.index("publicKey") > once.index("name: edge-2")
    twice = set_node_public_key(once, "h.yaml", "edge-2", KEY.replace("n@s", "new"))
    assert twice.count("publicKey") == 1 and "new" in twice


def test_a_node_that_is_not_there_is_named() -> None:
    with pytest.raises(DocumentError, match=r"no node named 'edge-9'"):
        set_node_public_key(hardware_text("s", "edge-1", "a1" * 16, None), "h.yaml", "edge-9", KEY)


def test_the_floor_must_be_in_the_checkout(world: EnrollWorld, tmp_path: Path) -> None:
    done = enroll(world.options(world.box("shop-a")), now=NOW)
    # a fresh clone of a different history: same files, other commits
    other = tmp_path / "other"
    pygit2.clone_repository(str(world.root), str(other))
    (other / "README").write_text("x")
    subprocess.run(["git", "-C", str(other), "add", "README"], check=True)
    subprocess.run(
        ["git", "-C", str(other), "-c", "user.name=x", "-c", "user.email=x@x",
         "commit", "-q", "--amend", "--no-gpg-sign", "-m", "rewritten"],
        check=True,
    )  # fmt: skip
    subprocess.run(["git", "-C", str(other), "remote", "remove", "origin"], check=True)
    subprocess.run(
        ["git", "-C", str(other), "reflog", "expire", "--expire=now", "--all"], check=True
    )
    subprocess.run(["git", "-C", str(other), "gc", "-q", "--prune=now"], check=True)
    with pytest.raises(EnrollmentRefused, match=r"which this checkout does not have"):
        accept_request(other, done.request, key=world.secrets.break_glass)


# -- small parts ----------------------------------------------------------------------------------


def test_firmware_placeholder_serials_are_no_serial(tmp_path: Path) -> None:
    from reconciler.node.enroll import read_machine

    box = make_box(tmp_path, "ab" * 16, "To Be Filled By O.E.M.")
    assert read_machine(box.machine_id_file, box.serial_file) == ("ab" * 16, None)
    box.serial_file.unlink()
    assert read_machine(box.machine_id_file, box.serial_file) == ("ab" * 16, None)
    box.machine_id_file.unlink()
    with pytest.raises(ConfigError, match=r"systemd-machine-id-setup"):
        read_machine(box.machine_id_file, box.serial_file)


def test_the_agent_config_carries_every_source_and_loads(tmp_path: Path) -> None:
    from reconciler.node.enroll import EnrollOptions, agent_yaml

    options = EnrollOptions(
        config_dir=tmp_path,
        trust_root=tmp_path / "t",
        source_url="https://git.example.com/c.git",
        password_file=tmp_path / "git-token",
        feed_url="https://cdn.example.com/outpost/",
        bundle_inbox=tmp_path / "inbox",
        report_url="https://hq.example.com/api/v1/reports",
        kubeconfig=tmp_path / "kubeconfig",
        state_dir=tmp_path / "state",
        first_apply="gated",
    )
    text = agent_yaml(options, "shop-a", "ab" * 20, tmp_path / "t", tmp_path / "k", tmp_path / "a")
    (tmp_path / "agent.yaml").write_text(text)
    config = load_config(tmp_path / "agent.yaml")
    assert config.source.credentials is not None
    assert config.source.credentials.password_file == tmp_path / "git-token"
    assert config.feed is not None and config.feed.url == "https://cdn.example.com/outpost/"
    assert config.report is not None and config.bundle_inbox == tmp_path / "inbox"
    assert (config.first_apply, config.floor) == ("gated", "ab" * 20)


def test_enrollment_needs_a_source_and_one_repository(tmp_path: Path) -> None:
    from reconciler.node.enroll import EnrollOptions

    box = make_box(tmp_path / "box", "ab" * 16, None)
    base = {"config_dir": tmp_path / "etc", "trust_root": tmp_path / "t"}
    common = {"machine_id_file": box.machine_id_file, "serial_file": box.serial_file}
    with pytest.raises(ConfigError, match=r"--source-url"):
        enroll(EnrollOptions(**base, **common, repo=tmp_path), now=NOW)  # type: ignore[arg-type]
    (tmp_path / "t").write_text("")
    with pytest.raises(ConfigError):
        enroll(  # an empty trust root names no signer
            EnrollOptions(**base, **common, repo=tmp_path, source_url="https://h/c"),  # type: ignore[arg-type]
            now=NOW,
        )


def test_a_second_node_of_a_site_shares_the_site_key(world: EnrollWorld, sops: Sops) -> None:
    """Two boxes at one store: the second enrolls with the first one's site key, so accepting
    it records its node key and re-encrypts nothing (no key needed)."""
    two_nodes = hardware_text("shop-a", "edge-1", BOXES["shop-a"][1], BOXES["shop-a"][2]) + (
        "    - name: edge-2\n"
        f"      identity: {{machineId: {'a8' * 16}, serial: CZC0000A8}}\n"
        "      arch: amd64\n      cpu: 4\n      memory: 8Gi\n"
    )
    (world.root / "sites/shop-a/hardware.yaml").write_text(two_nodes)
    world.commit("shop-a gets a second box")
    first = enroll(world.options(world.box("shop-a")), now=NOW)
    accept_request(world.root, first.request, key=world.secrets.break_glass)
    world.commit("enroll shop-a/edge-1")

    second_box = make_box(world.tmp / "second", "a8" * 16, "CZC0000A8")
    second = enroll(world.options(second_box, "node2", age_key=first.age_key), now=NOW)
    assert second.age_recipient == first.age_recipient
    assert stat.S_IMODE(second.age_key.stat().st_mode) == 0o600
    accepted = accept_request(world.root, second.request, key=None)
    assert accepted.written == ("sites/shop-a/hardware.yaml",)
    nodes = Repository(WorkdirTree(world.root)).site("shop-a").hardware.nodes  # type: ignore[union-attr]
    assert [n["publicKey"] for n in nodes] == [first.public_key, second.public_key]
    for path in _secret_files(world, "shop-a"):
        assert _decrypts(sops, path, second.age_key)
