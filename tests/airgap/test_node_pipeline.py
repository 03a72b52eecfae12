"""A bundle-carried commit goes through the node's real pipeline like a fetched one.

Bundle → inbox → mirror, then `reconciler.node.pipeline.NodePipeline` (what the agent's tick
calls): trust over (applied, candidate] from the node's own allowed_signers, then render,
validation, policies and secret decryption of the plant's slice at the candidate.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from airgap_world import NOW, PLANT, REPO_ROOT, History, Key, allowed_signers, drop

from reconciler.core.errors import VerificationError
from reconciler.node.config import AgentConfig, SourceConfig
from reconciler.node.fetch import APPLIED_REF, CANDIDATE_REF, Mirror
from reconciler.node.inbox import import_inbox
from reconciler.node.pipeline import NodePipeline


def _private_key(root: Path) -> Path:
    """The plant's example key, copied to mode 0600: a checkout leaves it readable by all."""
    key = root / f"{PLANT}.key"
    key.write_bytes((REPO_ROOT / "tests" / "keys" / "age" / f"{PLANT}.key").read_bytes())
    key.chmod(0o600)
    return key


def node_config(root: Path, keys: dict[str, Key]) -> AgentConfig:
    trust = root / "allowed_signers"
    root.mkdir(parents=True, exist_ok=True)
    trust.write_bytes(allowed_signers(keys["ops"]))
    return AgentConfig(
        path=root / "agent.yaml",
        site=PLANT,
        source=SourceConfig(url=None, branch="main", credentials=None),
        bundle_inbox=root / "stick",
        outbox=root / "stick" / "outbox",
        trust_root=trust,
        age_key=_private_key(root),
        kubeconfig=None,
        state_dir=root / "state",
        health_deadline=60,
        stale_after=3 * 86400,
        field_manager="outpost",
        max_commits=1000,
        metrics_dir=None,
    )


def gateway_interval(objects: tuple[object, ...]) -> str:
    for obj in objects:
        assert isinstance(obj, dict)
        if obj["kind"] == "ConfigMap" and "opcua" in obj["metadata"]["name"]:
            return str(obj["data"])
    raise AssertionError("no OPC UA gateway ConfigMap in the slice")


@pytest.fixture
def node(tmp_path: Path, keys: dict[str, Key], history: History) -> tuple[AgentConfig, Mirror]:
    config = node_config(tmp_path / "node", keys)
    mirror = Mirror(config.mirror_dir)
    out = tmp_path / "desk"
    history.repo.bundle(out / "install.bundle", None, history.a)
    assert config.bundle_inbox is not None
    drop(out / "install.bundle", config.bundle_inbox)
    [installed] = import_inbox(mirror, config.bundle_inbox, now=NOW)
    assert installed.outcome == "imported"
    mirror.pin(APPLIED_REF, history.a)
    return config, mirror


def test_a_bundle_brings_the_plant_from_a_to_c_through_the_node_pipeline(
    node: tuple[AgentConfig, Mirror], history: History, tmp_path: Path
) -> None:
    config, mirror = node
    history.repo.bundle(tmp_path / "desk" / "a-c.bundle", history.a)
    assert config.bundle_inbox is not None
    drop(tmp_path / "desk" / "a-c.bundle", config.bundle_inbox)

    [result] = import_inbox(mirror, config.bundle_inbox, now=NOW)
    assert result.outcome == "imported"
    candidate = mirror.resolve(CANDIDATE_REF)
    assert candidate == history.c

    pipeline = NodePipeline(config)
    verified = pipeline.verify(mirror, history.a, candidate, NOW)
    assert (verified.revision, verified.commits) == (history.c, 2)
    desired = pipeline.desired(mirror, candidate)
    before = pipeline.desired(mirror, history.a)

    assert "1000" in gateway_interval(desired.objects)
    assert "500" in gateway_interval(before.objects)
    assert any(o["kind"] == "VirtualMachine" for o in desired.objects)
    assert any(o["kind"] == "Secret" for o in desired.objects)  # decrypted in memory


def test_a_bundle_with_a_commit_signed_by_an_unknown_key_is_refused_by_the_pipeline(
    node: tuple[AgentConfig, Mirror], history: History, tmp_path: Path, keys: dict[str, Key]
) -> None:
    config, mirror = node
    rogue = history.repo.change_plant("Ostrava: publish every 10 ms", 10, keys["rogue"])
    history.repo.bundle(tmp_path / "desk" / "a-d.bundle", history.a)
    assert config.bundle_inbox is not None
    drop(tmp_path / "desk" / "a-d.bundle", config.bundle_inbox)

    [result] = import_inbox(mirror, config.bundle_inbox, now=NOW)
    assert result.outcome == "imported"

    with pytest.raises(VerificationError) as refused:
        NodePipeline(config).verify(mirror, history.a, rogue, NOW)
    assert rogue[:7] in str(refused.value)
    assert mirror.resolve(APPLIED_REF) == history.a


def test_a_node_whose_key_is_not_the_sites_recipient_yet_waits_for_acceptance(
    node: tuple[AgentConfig, Mirror], history: History, tmp_path: Path
) -> None:
    """A freshly enrolled node holds a new site key that the repository does not name until
    its enrollment is accepted: a temporary wait (retried every tick), not a refused commit."""
    from dataclasses import replace

    from reconciler.core.errors import TemporaryError
    from reconciler.core.secrets._age import generate, key_file_text
    from reconciler.node.pipeline import AwaitingAcceptance

    config, mirror = node
    fresh = tmp_path / "fresh.key"
    fresh.write_text(key_file_text(generate(), created=None))
    fresh.chmod(0o600)  # a key readable by others is refused before it is tried
    pipeline = NodePipeline(replace(config, age_key=fresh))
    with pytest.raises(AwaitingAcceptance, match=r"enrollment has not been accepted yet") as caught:
        pipeline.desired(mirror, history.a)
    assert isinstance(caught.value, TemporaryError)
    assert str(fresh) in str(caught.value)
