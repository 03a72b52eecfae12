"""An air-gapped plant gets promotions in its bundles, like any other signed commit.

Bundle → inbox → mirror → `NodePipeline` (verify, desired, gate): the plant's gated wave
awaits a promotion; the promoter's signed record arrives on the next stick and opens it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from airgap_world import NOW, History, Key, drop, make_key
from test_node_pipeline import node  # noqa: F401  (the fixture: the plant installed at A)

from reconciler.core.schedule import RolloutRecord, record_path
from reconciler.node.config import AgentConfig
from reconciler.node.fetch import CANDIDATE_REF, Mirror
from reconciler.node.inbox import import_inbox
from reconciler.node.pipeline import NodePipeline

GATED = """  waves:
    - {name: canary, sites: [plant-lyon]}
    - {name: all, gate: {healthy: 100, minSoak: 1h}}
"""


def _stick(history: History, config: AgentConfig, mirror: Mirror, since: str, out: Path) -> str:
    history.repo.bundle(out, since)
    assert config.bundle_inbox is not None
    drop(out, config.bundle_inbox)
    [result] = import_inbox(mirror, config.bundle_inbox, now=NOW)
    assert result.outcome == "imported", result
    return mirror.resolve(CANDIDATE_REF)


def _gate(
    config: AgentConfig, mirror: Mirror, applied: str, candidate: str, now: datetime
) -> object:
    pipeline = NodePipeline(config, check_policies=False)
    verified = pipeline.verify(mirror, applied, candidate, NOW)
    desired = pipeline.desired(mirror, candidate, checks=False)
    return pipeline.gate(mirror, verified, desired, now)


def test_a_promotion_on_the_next_stick_opens_the_plants_gated_wave(
    node: tuple[AgentConfig, Mirror],  # noqa: F811  (the fixture imported above)
    history: History,
    tmp_path: Path,
) -> None:
    config, mirror = node
    (tmp_path / "keys").mkdir()
    promoter: Key = make_key(tmp_path / "keys", "promoter")
    path = history.repo.path / "fleets/plants.yaml"
    text = path.read_text()
    head, rest = text.split("  waves:\n", 1)
    gated = head + GATED + rest[rest.index("  # operations") :]
    signers = (history.repo.path / "policies/signers.yaml").read_text()
    public = Path(f"{promoter.private}.pub").read_text().strip()
    signers += f'    - name: promoter\n      keys: ["{public}"]\n      paths: [rollouts/**]\n'
    change = history.repo.commit(
        "plants: gate the rollout on the canary",
        {"fleets/plants.yaml": gated, "policies/signers.yaml": signers},
    )
    candidate = _stick(history, config, mirror, history.a, tmp_path / "desk" / "1.bundle")
    assert candidate == change
    waiting = _gate(config, mirror, history.a, candidate, NOW)
    assert not waiting.allowed and "awaits promotion of wave 'all'" in waiting.reason  # type: ignore[attr-defined]
    assert waiting.until is None  # type: ignore[attr-defined]  # only a new commit opens it

    opened = datetime.fromtimestamp(history.repo.clock + 600, UTC)
    record = RolloutRecord("Promotion", "plants", change, (("all", opened),))
    promoted = history.repo.commit(
        "rollout plants: open wave 'all'",
        {record_path("plants", change): record.to_yaml()},
        key=promoter,
    )
    candidate = _stick(history, config, mirror, change, tmp_path / "desk" / "2.bundle")
    assert candidate == promoted
    later = NOW + timedelta(hours=2)  # the soak since this node first saw the change
    gate = _gate(config, mirror, history.a, candidate, later)
    assert "awaits promotion" not in gate.reason  # type: ignore[attr-defined]
    # opened: now only the plant's own window holds it
    assert gate.allowed or "outside update window" in gate.reason, gate  # type: ignore[attr-defined]
