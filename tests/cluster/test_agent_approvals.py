"""A node on the real control plane keeps a threshold-pending policy change pending.

The real agent (fixtures shared with test_agent.py): the signed example fleet, the store
de-muc-0007, a clock inside its window, and a trust root with two root principals. After
``spec.thresholds`` asks for two of them on ``policies/**``:

- a policy change signed by one root waits; the store change committed *before* it is
  applied, the one committed *after* it is not; status and metrics say whose approval is
  missing, and the next tick says the same (pending is not refused);
- a second principal's empty "Approve" commit on top: the next tick applies everything.
"""

# The fixtures come from test_agent.py by import, so pytest finds them by name; the test
# functions then take them as arguments, which ruff reads as redefinitions.
# ruff: noqa: F811

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from test_agent import (  # noqa: F401  (fixtures used by name)
    IN_WINDOW,
    SITE,
    T0,
    Clock,
    clean_site,
    fleet,
    node,
    read,
    status_of,
    store_node,
)
from test_agent_trust import note, store_note

from reconciler.node.agent import Agent
from tools.signedfleet import SignedFleet, make_key
from tools.testcluster import Cluster

pytestmark = pytest.mark.cluster


def test_a_threshold_pending_policy_change_waits_for_a_second_principal(
    tmp_path: Path, fleet: SignedFleet, cluster: Cluster, node: Callable[..., Agent]
) -> None:
    second = make_key(tmp_path / "keys2", "ops-root-2")
    line = " ".join(second.with_suffix(".pub").read_text().split()[:2])
    with fleet.allowed_signers.open("a") as trust:
        trust.write(f'ops-root-2@example.com namespaces="git" {line}\n')
    fleet.edit(
        "policies/signers.yaml",
        lambda t: t + "  thresholds:\n    - paths: ['policies/**']\n      approvals: 2\n",
    )
    fleet.commit("policies need two root principals", when=T0 + timedelta(minutes=30))
    agent = node(Clock(IN_WINDOW))
    assert agent.tick().outcome == "applied"

    before = note(fleet, "before the policy", 1)
    (fleet.path / "policies" / "README.md").write_text("Policies need two signatures.\n")
    policy = fleet.commit("policies: a note", when=T0 + timedelta(hours=2))
    note(fleet, "after the policy", 3)

    report = agent.tick()

    assert report.outcome == "applied", report
    assert report.applied == before
    assert store_note(cluster) == "before the policy"
    assert report.pending == fleet.head()
    [waiting] = report.approvals
    assert waiting.startswith(f"commit {policy[:7]} changes policies/README.md")
    assert "has 1 (ops-root@example.com); waiting for 1 more from ops-root-2@example.com" in waiting
    status = status_of(tmp_path)
    assert status["approvalsPending"] == [waiting]
    assert status["pending"]["reason"].startswith("waiting for approvals: ")
    metrics = (tmp_path / "state" / "outpost.prom").read_text()
    assert f'outpost_approvals_pending_commits{{site="{SITE}"}} 1' in metrics

    again = agent.tick()  # re-evaluated, not remembered as refused
    assert again.outcome == "pending-approval", again
    assert again.applied == before and status_of(tmp_path)["refused"] == []

    approval = fleet.commit(f"Approve {policy}", when=T0 + timedelta(hours=4), key=second)
    report = agent.tick()
    assert report.outcome == "applied", report
    assert report.applied == approval
    assert report.approvals == []
    assert store_note(cluster) == "after the policy"
