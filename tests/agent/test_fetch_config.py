"""The node's mirror and its config file: real git repositories, real files, no network.

``Mirror`` is the only place the node's git source is written; ``load_config`` the only
reader of ``/etc/outpost/agent.yaml``. Each refusal names the file (or the remote, with
its credentials cut out) and says what was expected.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pygit2
import pytest

from reconciler.core.errors import ConfigError, SourceUnavailable
from reconciler.node.config import load_config
from reconciler.node.fetch import (
    APPLIED_REF,
    CANDIDATE_REF,
    Credentials,
    Mirror,
)
from reconciler.node.fetch import (
    _callbacks as callbacks_with_limits,
)

SIGNATURE = pygit2.Signature("Test", "test@example.com", 1_800_000_000, 0)


def commit(repo: pygit2.Repository, text: str, parents: list[pygit2.Oid] | None = None) -> str:
    blob = repo.create_blob(text.encode())
    builder = repo.TreeBuilder()
    builder.insert("file.txt", blob, pygit2.enums.FileMode.BLOB)
    if parents is None:
        parents = [] if repo.head_is_unborn else [repo.head.target]
    oid = repo.create_commit(None, SIGNATURE, SIGNATURE, text, builder.write(), parents)
    repo.references.create("refs/heads/main", oid, force=True)
    return str(oid)


@pytest.fixture
def source(tmp_path: Path) -> pygit2.Repository:
    return pygit2.init_repository(str(tmp_path / "source"), initial_head="main")


# -- the mirror ---------------------------------------------------------------------------------


def test_fetch_moves_the_candidate_and_keeps_the_history(
    tmp_path: Path, source: pygit2.Repository
) -> None:
    first = commit(source, "one")
    mirror = Mirror(tmp_path / "mirror.git")
    assert mirror.fetch(source.path, "main") == first
    assert mirror.resolve(CANDIDATE_REF) == first
    second = commit(source, "two")
    assert mirror.fetch(source.path, "main") == second
    assert mirror.descends(second, first)
    assert not mirror.descends(first, second)
    assert not mirror.descends("not-a-commit", first)
    assert mirror.has(second) and not mirror.has("0" * 40)
    assert mirror.commit_time(second) == 1_800_000_000
    mirror.pin(APPLIED_REF, first)
    assert Mirror(tmp_path / "mirror.git").resolve(APPLIED_REF) == first


def test_a_force_pushed_history_becomes_the_candidate_for_trust_to_refuse(
    tmp_path: Path, source: pygit2.Repository
) -> None:
    commit(source, "one")
    mirror = Mirror(tmp_path / "mirror.git")
    mirror.fetch(source.path, "main")
    rewritten = commit(source, "rewritten", parents=[])
    assert mirror.fetch(source.path, "main") == rewritten
    assert mirror.resolve(CANDIDATE_REF) == rewritten


def test_a_newer_candidate_from_a_bundle_is_kept(tmp_path: Path, source: pygit2.Repository) -> None:
    first = commit(source, "one")
    mirror = Mirror(tmp_path / "mirror.git")
    mirror.fetch(source.path, "main")
    # A bundle brought a descendant of what the remote still says.
    newer = commit(source, "from the stick")
    mirror.repo.remotes.create_anonymous(source.path).fetch(["+refs/heads/main:refs/x"])
    mirror.pin(CANDIDATE_REF, newer)
    source.references.create("refs/heads/main", pygit2.Oid(hex=first), force=True)
    assert mirror.fetch(source.path, "main") == first
    assert mirror.resolve(CANDIDATE_REF) == newer


def test_a_missing_branch_names_the_remote(tmp_path: Path, source: pygit2.Repository) -> None:
    commit(source, "one")
    mirror = Mirror(tmp_path / "mirror.git")
    with pytest.raises(SourceUnavailable, match=r"source/\.git/ has no branch 'release'$"):
        mirror.fetch(source.path, "release")


def test_credentials_in_a_url_never_reach_the_message(tmp_path: Path) -> None:
    mirror = Mirror(tmp_path / "mirror.git")
    with pytest.raises(SourceUnavailable) as caught:
        mirror.fetch("https://outpost:s3cret-token@127.0.0.1:9/fleet.git", "main")
    message = str(caught.value)
    assert "s3cret-token" not in message
    assert "https://127.0.0.1:9/fleet.git" in message


def test_locks_a_killed_fetch_left_are_cleared(tmp_path: Path, source: pygit2.Repository) -> None:
    commit(source, "one")
    mirror = Mirror(tmp_path / "mirror.git")
    mirror.fetch(source.path, "main")
    stale = [tmp_path / "mirror.git" / "packed-refs.lock"]
    stale.append(tmp_path / "mirror.git" / "refs" / "outpost" / "candidate.lock")
    for lock in stale:
        lock.write_text("")
    again = Mirror(tmp_path / "mirror.git")
    assert not any(lock.exists() for lock in stale)
    assert again.fetch(source.path, "main") == mirror.resolve(CANDIDATE_REF)


def test_a_mirror_path_that_is_not_a_repository_is_temporary(tmp_path: Path) -> None:
    (tmp_path / "mirror.git").mkdir()
    (tmp_path / "mirror.git" / "HEAD").write_text("garbage")
    with pytest.raises(SourceUnavailable, match="cannot open the local mirror"):
        Mirror(tmp_path / "mirror.git")


def test_credentials_are_offered_as_the_remote_allows(tmp_path: Path) -> None:
    """libgit2 calls back with what the remote accepts; the callback is driven directly,
    as no authenticating remote runs here."""
    allowed_ssh = pygit2.enums.CredentialType.SSH_KEY
    allowed_password = pygit2.enums.CredentialType.USERPASS_PLAINTEXT

    def _callbacks(credentials: Credentials | None) -> Any:
        return callbacks_with_limits(credentials, max_bytes=None, max_objects=None)

    # No credentials configured: libgit2 is left to its own default (the callbacks stay,
    # as they also carry the fetch limits).
    with pytest.raises(pygit2.Passthrough):
        _callbacks(None).credentials("https://example.com/fleet.git", None, allowed_password)
    key = tmp_path / "id_ed25519"
    ssh = _callbacks(Credentials(ssh_key_file=key))
    offered = ssh.credentials("ssh://git@example.com/fleet.git", "git", allowed_ssh)
    assert isinstance(offered, pygit2.Keypair)
    assert offered.credential_tuple == ("git", str(key.with_suffix(".pub")), str(key), "")
    token = tmp_path / "git-token"
    token.write_text("t0ken\n")
    https = _callbacks(Credentials(username="outpost-de-ber-0042", password_file=token))
    offered = https.credentials("https://example.com/fleet.git", None, allowed_password)
    assert isinstance(offered, pygit2.UserPass)
    assert offered.credential_tuple == ("outpost-de-ber-0042", "t0ken")
    nothing = _callbacks(Credentials(username="x"))
    with pytest.raises(pygit2.Passthrough):
        nothing.credentials("https://example.com/fleet.git", None, allowed_password)
    missing = _callbacks(Credentials(password_file=tmp_path / "absent"))
    with pytest.raises(ConfigError, match=r"cannot read the git password file .*absent"):
        missing.credentials("https://example.com/fleet.git", None, allowed_password)


# -- the config file ----------------------------------------------------------------------------

GOOD = """\
apiVersion: outpost/v1
kind: AgentConfig
spec:
  site: de-ber-0042
  source:
    url: https://git.example.com/retail/outpost-config.git
    credentials: {username: outpost, passwordFile: git-token, sshKeyFile: id_ed25519}
  trustRoot: allowed_signers
  stateDir: state
  healthDeadline: 1h30m
  staleAfter: 2d
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agent.yaml"
    path.write_text(text)
    return path


def test_a_config_is_read_with_paths_relative_to_it(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, GOOD))
    assert config.site == "de-ber-0042"
    assert config.source.branch == "main"
    assert config.source.credentials == Credentials(
        username="outpost",
        password_file=tmp_path / "git-token",
        ssh_key_file=tmp_path / "id_ed25519",
    )
    assert config.state_dir == tmp_path / "state"
    assert config.mirror_dir == tmp_path / "state" / "mirror.git"
    assert (config.health_deadline, config.stale_after) == (5400, 2 * 86400)
    assert config.age_key is None and config.bundle_inbox is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            GOOD.replace("kind: AgentConfig", "kind: Site"),
            "expected kind AgentConfig, found 'Site'",
        ),
        (
            GOOD.replace("healthDeadline: 1h30m", "healthDeadline: soon"),
            "agent.yaml:10: spec.healthDeadline: 'soon' does not match",
        ),
        (
            GOOD.replace("healthDeadline: 1h30m", "healthDeadline: 0s"),
            "spec.healthDeadline: '0s' is not a duration like 90s",
        ),
        (
            GOOD.replace("staleAfter: 2d", "staleAfter: 0m"),
            "spec.staleAfter: '0m' is not a duration like 90s",
        ),
        (GOOD.replace("  site: de-ber-0042\n", ""), "'site' is a required property"),
        (GOOD + "  bogus: 1\n", "bogus"),
        ("spec: [unclosed\n", "agent.yaml"),
    ],
    ids=["kind", "pattern", "zero", "zero stale", "no site", "unknown field", "yaml"],
)
def test_a_bad_config_is_refused_by_name(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text))
    assert expected in str(caught.value)


def test_a_missing_config_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read the agent config .*agent\.yaml"):
        load_config(tmp_path / "agent.yaml")
