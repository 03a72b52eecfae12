"""The promoter's key may write rollout records and nothing else (real keys, real git).

Every node verifies its range with the same `core.trust` rules and the same
`policies/signers.yaml` of the parent commit, so the verdict below is every node's.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.core.schedule import RolloutRecord, record_path
from tests.promote.promote_world import World, make_world
from tests.trust.trust_git import BASE_TS, NOW


@pytest.fixture
def world(tmp_path: Path) -> World:
    return make_world(tmp_path, 3, when=BASE_TS)


def _record(world: World) -> tuple[str, str]:
    from datetime import UTC, datetime

    change = world.repo.head()
    record = RolloutRecord(
        "Promotion", "retail", change, (("early", datetime.fromtimestamp(BASE_TS + 600, UTC)),)
    )
    return record_path("retail", change), record.to_yaml()


def test_the_promoter_writes_a_promotion_record(world: World) -> None:
    base = world.repo.head()
    path, text = _record(world)
    sha = world.repo.commit({path: text}, world.promoter, "open wave early")
    result = world.repo.verify(world.trust, since=base, now=NOW)
    assert result.ok, result.error
    verdict = result.verdict_for(sha)
    assert verdict is not None and verdict.principal == "promoter" and not verdict.root


@pytest.mark.parametrize(
    ("what", "path", "edit"),
    [
        ("an app version", "apps/pos/app.yaml", lambda t: t.replace("1.1.0", "6.6.6")),
        ("a site", "sites/st-00001/site.yaml", lambda t: t.replace("Europe/Berlin", "UTC")),
        ("a fleet's waves", "fleets/retail.yaml", lambda t: t.replace("gate:", "x-gate:")),
        ("its own scope", "policies/signers.yaml", lambda t: t.replace("rollouts/**", "**")),
        ("a policy", "policies/no-latest.yaml", lambda t: "kind: Policy\n"),
    ],
)
def test_the_promoter_is_refused_outside_rollouts(
    world: World, what: str, path: str, edit: object
) -> None:
    base = world.repo.head()
    target = world.repo.path / path
    text = target.read_text() if target.exists() else ""
    record_path_, record = _record(world)
    sha = world.repo.commit({path: edit(text), record_path_: record}, world.promoter, what)  # type: ignore[operator]
    result = world.repo.verify(world.trust, since=base, now=NOW)
    assert not result.ok
    verdict = result.verdict_for(sha)
    assert verdict is not None and not verdict.ok
    assert path in verdict.reason and "promoter" in verdict.reason, verdict.reason
