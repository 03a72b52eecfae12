"""The node's side of thresholds and rotation: its real pipeline on its real mirror.

`reconciler.node.pipeline.NodePipeline.verify` (what the agent's tick calls) over a mirror
fetched from, or fed by bundles of, a repository signed by real ssh-keygen keys:

- a pending policy change holds the node on the newest commit before it, and lets it go
  once a second principal approves;
- a rotation approved by the threshold is recorded in the state directory, and the stolen
  key it retires is refused from then on — also by a node that was offline during the
  rotation and catches up from a USB bundle, and by one that lost its record;
- a rotation approved by the new keys alone is refused.
"""

from __future__ import annotations

import json
import os
from datetime import timedelta
from pathlib import Path

import pytest
from test_trust_thresholds import POLICY, SITE, roots_text, seeded
from trust_git import NOW, Key, Repo, root_line, short

from reconciler.core.errors import VerificationError
from reconciler.fleet.bundle import create_bundle
from reconciler.node.config import AgentConfig, SourceConfig
from reconciler.node.fetch import CANDIDATE_REF, Mirror
from reconciler.node.inbox import import_inbox
from reconciler.node.pipeline import NodePipeline
from reconciler.node.roots import ROOTS_FILE

STORE = "de-ber-0042"


def enrolled(keys: dict[str, Key]) -> str:
    return "\n".join(
        [
            root_line("alice@example.com", keys["root"]),
            root_line("bob@example.com", keys["root2"]),
            root_line("carol@example.com", keys["rsa"]),
        ]
    )


class Node:
    """A node: its config, trust root and mirror; ``sync`` fetches, ``verify`` runs trust."""

    def __init__(self, root: Path, keys: dict[str, Key], *, inbox: bool = False) -> None:
        root.mkdir(parents=True)
        trust = root / "allowed_signers"
        trust.write_text(enrolled(keys) + "\n")
        self.config = AgentConfig(
            path=root / "agent.yaml",
            site=STORE,
            source=SourceConfig(url=None, branch="main", credentials=None),
            bundle_inbox=root / "stick" if inbox else None,
            outbox=None,
            trust_root=trust,
            age_key=None,
            kubeconfig=None,
            state_dir=root / "state",
            health_deadline=60,
            stale_after=3 * 86400,
            field_manager="outpost",
            max_commits=1000,
            metrics_dir=None,
        )
        self.mirror = Mirror(self.config.mirror_dir)
        self.pipeline = NodePipeline(self.config)

    def sync(self, repo: Repo) -> str:
        return self.mirror.fetch(str(repo.path), "main")

    def verify(self, since: str, candidate: str | None = None):  # type: ignore[no-untyped-def]
        head = candidate or self.mirror.resolve(CANDIDATE_REF)
        assert head is not None
        return NodePipeline(self.config).verify(self.mirror, since, head, NOW)


@pytest.fixture
def world(tmp_path: Path, repo: Repo, keys: dict[str, Key]) -> tuple[Repo, str]:
    return repo, seeded(repo, keys)


def test_a_pending_policy_change_holds_the_node_before_it_until_approved(
    tmp_path: Path, world: tuple[Repo, str], keys: dict[str, Key]
) -> None:
    repo, base = world
    site = repo.commit({f"sites/{STORE}/site.yaml": SITE + "# v2\n"}, keys["root"], "site")
    change = repo.commit({"policies/p.yaml": POLICY}, keys["root"], "policy")
    repo.commit({f"sites/{STORE}/site.yaml": SITE + "# v3\n"}, keys["root"], "on top")
    node = Node(tmp_path / "node", keys)
    node.sync(repo)

    verified = node.verify(base)

    assert verified.revision == site
    assert [p.split(":")[0] for p in verified.pending] == [
        f"commit {short(change)} changes policies/p.yaml"
    ]
    assert "waiting for 1 more from bob@example.com, carol@example.com" in verified.pending[0]
    # the same tick again: still pending (re-evaluated, not remembered as refused)
    assert node.verify(base).revision == site

    head = repo.commit({}, keys["root2"], f"Approve {change}")
    node.sync(repo)
    verified = node.verify(base)
    assert (verified.revision, verified.pending) == (head, ())


def test_nothing_before_the_pending_commit_leaves_the_node_where_it_is(
    tmp_path: Path, world: tuple[Repo, str], keys: dict[str, Key]
) -> None:
    repo, base = world
    repo.commit({"policies/p.yaml": POLICY}, keys["root"], "policy")
    node = Node(tmp_path / "node", keys)
    node.sync(repo)

    verified = node.verify(base)

    assert verified.revision == base and verified.pending


def rotated(repo: Repo, keys: dict[str, Key]) -> tuple[str, str]:
    """alice's key is stolen: bob and carol rotate to (bob, carol, dave)."""
    rotation = repo.commit(
        {"policies/root-signers": roots_text(keys, "bob", "carol", "dave")}, keys["root2"], "rot"
    )
    approval = repo.commit({}, keys["rsa"], f"Approve {rotation}")
    return rotation, approval


def evil(repo: Repo, keys: dict[str, Key]) -> str:
    return repo.commit({f"sites/{STORE}/site.yaml": SITE + "# evil\n"}, keys["root"], "evil")


def test_a_rotation_is_recorded_and_the_stolen_key_refused_afterwards(
    tmp_path: Path, world: tuple[Repo, str], keys: dict[str, Key]
) -> None:
    repo, base = world
    rotation, approval = rotated(repo, keys)
    node = Node(tmp_path / "node", keys)
    node.sync(repo)

    assert node.verify(base).revision == approval
    record = json.loads((node.config.state_dir / ROOTS_FILE).read_text())
    assert [(s["effective"], s["rotation"]) for s in record["steps"]] == [(approval, rotation)]

    stolen = evil(repo, keys)
    node.sync(repo)
    with pytest.raises(VerificationError) as refused:
        node.verify(approval)  # the node applied the approval; the next range starts there
    assert f"commit {short(stolen)}: signed by an unknown key" in refused.value.message
    assert f"policies/root-signers at {short(rotation)}" in refused.value.message

    # The record lost: derived again from the enrolled root, never the enrolled root itself.
    (node.config.state_dir / ROOTS_FILE).unlink()
    with pytest.raises(VerificationError, match="signed by an unknown key"):
        node.verify(approval)
    assert (node.config.state_dir / ROOTS_FILE).is_file()
    # And a record for another enrolled root is not believed either.
    (node.config.state_dir / ROOTS_FILE).write_text(json.dumps({"enrolled": "x", "steps": []}))
    with pytest.raises(VerificationError, match="signed by an unknown key"):
        node.verify(approval)


@pytest.mark.parametrize("damage", ["fifo", "truncated", "a step that is not a commit"])
def test_a_damaged_record_is_set_aside_and_derived_again_never_read_as_no_rotation(
    tmp_path: Path, world: tuple[Repo, str], keys: dict[str, Key], damage: str
) -> None:
    """Safe direction for trust-roots.json: a record that cannot be read costs a walk of the
    verified history, never a step back to the enrolled root (whose alice key was stolen)."""
    repo, base = world
    _, approval = rotated(repo, keys)
    node = Node(tmp_path / "node", keys)
    node.sync(repo)
    assert node.verify(base).revision == approval
    path = node.config.state_dir / ROOTS_FILE
    good = path.read_text()

    def damaged() -> None:
        path.unlink()
        if damage == "fifo":
            os.mkfifo(path)  # a plain open() would wait for a writer forever
        elif damage == "truncated":
            path.write_text(good[:40])
        else:
            path.write_text(good.replace(approval, "HEAD~1"))

    damaged()
    verified = node.verify(base)  # the warning goes to the tick's status
    assert verified.revision == approval
    [note] = verified.notes
    assert note.startswith(f"{path}: ") and "; expected " in note
    assert "derived again from the verified history" in note
    assert os.path.lexists(path.with_name(ROOTS_FILE + ".corrupt"))
    assert path.read_text() == good  # written again, the same steps

    stolen = evil(repo, keys)
    node.sync(repo)
    damaged()
    with pytest.raises(VerificationError) as refused:
        node.verify(approval)
    assert f"commit {short(stolen)}: signed by an unknown key" in refused.value.message


def test_a_node_offline_during_the_rotation_catches_up_from_a_bundle(
    tmp_path: Path, world: tuple[Repo, str], keys: dict[str, Key]
) -> None:
    repo, base = world
    plant = Node(tmp_path / "plant", keys, inbox=True)
    stick = plant.config.bundle_inbox
    assert stick is not None
    stick.mkdir()
    desk = tmp_path / "desk"

    create_bundle(repo.path, STORE, None, "HEAD", desk / "a.bundle", now=NOW)
    (desk / "a.bundle").rename(stick / "a.bundle")
    (desk / "a.bundle.manifest.json").rename(stick / "a.bundle.manifest.json")
    [first] = import_inbox(plant.mirror, stick, now=NOW)
    assert first.outcome == "imported"
    # offline now; meanwhile the fleet rotates away from alice, and alice's key signs more
    rotated(repo, keys)
    stolen = evil(repo, keys)
    create_bundle(repo.path, STORE, base, "HEAD", desk / "b.bundle", now=NOW + timedelta(hours=1))
    (desk / "b.bundle").rename(stick / "b.bundle")
    (desk / "b.bundle.manifest.json").rename(stick / "b.bundle.manifest.json")
    [second] = import_inbox(plant.mirror, stick, now=NOW + timedelta(hours=1))
    assert second.outcome == "imported", second

    with pytest.raises(VerificationError) as refused:
        plant.verify(base)
    assert f"commit {short(stolen)}: signed by an unknown key" in refused.value.message


def test_a_rotation_approved_by_the_new_keys_alone_is_refused_by_the_node(
    tmp_path: Path, world: tuple[Repo, str], keys: dict[str, Key]
) -> None:
    repo, base = world
    rotation = repo.commit(
        {"policies/root-signers": roots_text(keys, "alice", "dave")}, keys["root"], "mine now"
    )
    approval = repo.commit({}, keys["pos2"], f"Approve {rotation}")
    node = Node(tmp_path / "node", keys)
    node.sync(repo)

    with pytest.raises(VerificationError) as refused:
        node.verify(base)

    assert f"commit {short(approval)}: signed by an unknown key" in refused.value.message
    assert (
        not (node.config.state_dir / ROOTS_FILE).exists()
        or json.loads((node.config.state_dir / ROOTS_FILE).read_text())["steps"] == []
    )
