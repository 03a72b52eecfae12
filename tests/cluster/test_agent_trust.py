"""The agent keeps its floor through any loss, and a USB stick cannot hang or redirect it.

The real agent on the real control plane (as in test_agent.py, whose fixtures these tests
share): a signed copy of the example fleet, the store de-muc-0007, a clock inside its window.

- state.json truncated, then deleted, between ticks: the node still knows what it runs,
  still corrects drift, and refuses an older, unrelated signed history force-pushed to the
  remote; with the mirror gone too, the cluster's inventory still knows; with that gone,
  ``spec.trust.floor`` still bounds what is accepted;
- the remote moved back to an ancestor: status, metrics and logs say how far behind;
- a FIFO named ``*.bundle``, a FIFO manifest and a symlinked ``processed/`` on the stick:
  the tick returns, the good bundle is applied, nothing is written outside the inbox;
- a truncated status.json: ``outpost agent status`` exits 2 naming it; the next tick
  rewrites it.
"""

# The fixtures come from test_agent.py by import, so pytest finds them by name; the test
# functions then take them as arguments, which ruff reads as redefinitions.
# ruff: noqa: F811

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from keykit import private_age_key
from test_agent import (  # noqa: F401  (fixtures used by name)
    IN_WINDOW,
    ROOT,
    SITE,
    T0,
    Clock,
    clean_site,
    fleet,
    make_agent,
    node,
    read,
    status_of,
    store_node,
    write_config,
)

from reconciler.fleet.bundle import create_bundle
from reconciler.node.agent import Agent, TickReport
from tools.signedfleet import SignedFleet
from tools.testcluster import Cluster

pytestmark = pytest.mark.cluster


def note(fleet: SignedFleet, text: str, hours: int) -> str:
    """A signed commit that changes the store's POS configuration: STORE_NOTE = text."""
    fleet.write(
        f"sites/{SITE}/overrides.yaml",
        "apiVersion: outpost/v1\nkind: SiteOverrides\nmetadata:\n"
        f"  name: {SITE}\nspec:\n  apps:\n    pos:\n      patches:\n"
        "        - target: {kind: ConfigMap, name: pos-config}\n"
        f'          merge: {{data: {{STORE_NOTE: "{text}"}}}}\n',
    )
    return fleet.commit(f"Munich: {text}", when=T0 + timedelta(hours=hours))


def store_note(cluster: Cluster) -> str | None:
    config_map = read(cluster, "configmap", "pos", "pos-config")
    assert config_map is not None
    value: str | None = config_map["data"].get("STORE_NOTE")
    return value


def force_unrelated_history(fleet: SignedFleet, hours: int) -> str:
    """Replace main with a new signed root commit of the same files: an older, unrelated
    history, signed by the real root key (what a compromised server could replay)."""
    fleet.git("checkout", "-q", "--orphan", "replayed")
    replayed = fleet.commit("an older world", when=T0 - timedelta(hours=hours))
    fleet.git("branch", "-q", "-f", "main", replayed)
    fleet.git("checkout", "-q", "main")
    return replayed


def test_losing_state_json_never_lowers_the_floor(
    tmp_path: Path, fleet: SignedFleet, cluster: Cluster, node: Callable[..., Agent]
) -> None:
    clock = Clock(IN_WINDOW)
    agent = node(clock)
    first = agent.tick()
    assert first.outcome == "applied", first
    second = note(fleet, "refit 2027", 1)
    assert agent.tick().applied == second
    state_file = tmp_path / "state" / "state.json"

    # Truncated: the node still knows what runs, and still corrects drift.
    state_file.write_bytes(state_file.read_bytes()[:40])
    cluster.kubectl("delete", "service", "pos-server", "-n", "pos")
    report = agent.tick()
    assert report.outcome == "unchanged", report
    assert report.applied == second
    assert report.corrected == 1
    assert read(cluster, "service", "pos", "pos-server") is not None
    assert status_of(tmp_path)["applied"]["revision"] == second
    assert any("recovered the applied revision" in w for w in report.warnings)

    # Deleted, and the remote force-pushed to an older, unrelated signed history.
    state_file.unlink()
    replayed = force_unrelated_history(fleet, hours=1)
    report = agent.tick()
    assert report.outcome == "refused", report
    assert report.applied == second
    assert f"does not descend from the last applied commit {second[:7]}" in str(
        report.pending_reason
    )
    assert report.pending == replayed
    assert store_note(cluster) == "refit 2027"

    # The mirror gone as well: the cluster's inventory still knows what runs.
    state_file.unlink()
    subprocess.run(["rm", "-rf", str(tmp_path / "state" / "mirror.git")], check=True)
    report = agent.tick()
    assert report.applied == second
    assert report.outcome == "unchanged"
    assert any(f"this site runs {second[:12]}, which the source has not brought" in w
               for w in report.warnings)  # fmt: skip
    assert store_note(cluster) == "refit 2027"
    assert status_of(tmp_path)["applied"]["revision"] == second


def test_the_enrolled_floor_bounds_a_node_that_lost_everything(
    tmp_path: Path, fleet: SignedFleet, cluster: Cluster, node: Callable[..., Agent]
) -> None:
    floor = fleet.head()
    agent = node(Clock(IN_WINDOW), extra=f"  trust: {{floor: {floor}}}\n")
    assert agent.tick().applied == floor
    # Everything the node had is gone: state, mirror, and the inventory in the cluster.
    subprocess.run(["rm", "-rf", str(tmp_path / "state")], check=True)
    cluster.kubectl(
        "delete", "configmap", "outpost-inventory", "-n", "outpost-system", "--ignore-not-found"
    )
    replayed = force_unrelated_history(fleet, hours=2)
    report = agent.tick()
    assert report.outcome == "refused", report
    assert report.pending == replayed
    assert (
        f"candidate {replayed[:12]} does not descend from the enrolled floor {floor[:12]} "
        "(spec.trust.floor in" in str(report.pending_reason)
    )
    assert read(cluster, "deployment", "pos", "pos-server") is not None


def test_a_source_that_moved_back_is_reported(
    tmp_path: Path,
    fleet: SignedFleet,
    cluster: Cluster,
    node: Callable[..., Agent],
    caplog: pytest.LogCaptureFixture,
) -> None:
    agent = node(Clock(IN_WINDOW))
    first = agent.tick().applied
    assert first is not None
    note(fleet, "one", 1)
    latest = note(fleet, "two", 2)
    assert agent.tick().applied == latest
    fleet.git("reset", "-q", "--hard", first)  # force-pushed back to an older signed commit

    with caplog.at_level(logging.WARNING, logger="outpost.agent"):
        report = agent.tick()

    assert report.outcome == "unchanged", report
    assert report.applied == latest
    expected = "the source's main is 2 commits behind what this site runs"
    assert any(w.startswith(expected) for w in report.warnings), report.warnings
    status = status_of(tmp_path)
    assert status["sourceBehind"] == {"commits": 2, "revision": first}
    assert any(expected in w for w in status["warnings"])
    metrics = (tmp_path / "state" / "outpost.prom").read_text()
    assert f'outpost_source_behind_commits{{site="{SITE}"}} 2' in metrics
    assert any(r.msg == "source behind" and r.__dict__["behind"] == 2 for r in caplog.records)
    assert store_note(cluster) == "two"
    # Forward again: the warning goes.
    fleet.git("reset", "-q", "--hard", latest)
    assert agent.tick().source_behind == 0
    assert status_of(tmp_path)["sourceBehind"] is None


def inbox_agent(tmp_path: Path, fleet: SignedFleet, cluster: Cluster, clock: Clock) -> Agent:
    config = tmp_path / "plant.yaml"
    config.write_text(
        "apiVersion: outpost/v1\nkind: AgentConfig\nspec:\n"
        f"  site: {SITE}\n"
        f"  bundleInbox: {tmp_path / 'stick'}\n"
        f"  trustRoot: {fleet.allowed_signers}\n"
        f"  ageKey: {private_age_key(SITE, tmp_path)}\n"
        f"  kubeconfig: {cluster.kubeconfig}\n"
        f"  stateDir: {tmp_path / 'state'}\n"
        "  healthDeadline: 60s\n"
    )
    return make_agent(config, clock)


def tick_within(agent: Agent, seconds: float = 240) -> TickReport:
    """One tick in a thread: a hang is a failure, not a stuck suite."""
    reports: list[TickReport] = []
    thread = threading.Thread(target=lambda: reports.append(agent.tick()), daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        for entry in (agent.config.bundle_inbox or Path("/nonexistent")).rglob("*"):
            if entry.is_fifo():
                os.close(os.open(entry, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail(f"the tick did not return within {seconds:.0f} s (hung on the inbox)")
    return reports[0]


def test_a_hostile_stick_cannot_hang_or_redirect_the_node(
    tmp_path: Path, fleet: SignedFleet, cluster: Cluster, clean_site: None
) -> None:
    stick = tmp_path / "stick"
    stick.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    os.mkfifo(stick / "a-fifo.bundle")
    (stick / "processed").symlink_to(outside)
    good = create_bundle(fleet.path, SITE, None, "HEAD", stick / "b-fleet.bundle", now=IN_WINDOW)
    os.mkfifo(stick / "c-other.bundle.manifest.json")
    (stick / "c-other.bundle").write_bytes((stick / "b-fleet.bundle").read_bytes())

    report = tick_within(inbox_agent(tmp_path, fleet, cluster, Clock(IN_WINDOW)))

    assert report.outcome == "applied", report
    assert report.applied == good.to
    assert read(cluster, "deployment", "pos", "pos-server") is not None
    warnings = "\n".join(report.warnings)
    assert "bundle a-fifo.bundle refused: a-fifo.bundle is a FIFO (named pipe)" in warnings
    assert "c-other.bundle.manifest.json is a FIFO (named pipe)" in warnings
    assert f"processed/ in the inbox is a symbolic link (to {outside}), not a folder" in warnings
    assert list(outside.iterdir()) == []
    assert (stick / "b-fleet.bundle").is_file()  # stays in the inbox, not moved through the link
    assert (stick / "rejected" / "a-fifo.bundle").is_fifo()


def status_cli(state: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "reconciler.cli", "agent", "status", "--state-dir", str(state)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_truncated_status_json_is_an_error_until_the_next_tick_rewrites_it(
    tmp_path: Path, node: Callable[..., Agent]
) -> None:
    agent = node(Clock(IN_WINDOW))
    applied = agent.tick().applied
    status = tmp_path / "state" / "status.json"
    status.write_bytes(status.read_bytes()[:100])

    broken = status_cli(tmp_path / "state")
    assert broken.returncode == 2
    assert f"{status}: not JSON (" in broken.stderr
    assert "expected a JSON object of kind SiteStatus" in broken.stderr
    assert "Traceback" not in broken.stderr

    agent.tick()
    fixed = status_cli(tmp_path / "state")
    assert fixed.returncode == 0, fixed.stderr
    assert applied is not None and f"applied:    {applied[:12]}" in fixed.stdout
    data: dict[str, Any] = json.loads(status.read_text())
    assert data["applied"]["revision"] == applied


def test_a_commit_that_failed_its_health_check_is_not_retried_after_state_loss(
    tmp_path: Path, fleet: SignedFleet, cluster: Cluster, node: Callable[..., Agent]
) -> None:
    agent = node(Clock(IN_WINDOW), health="20s")
    good = agent.tick().applied
    fleet.write(
        f"sites/{SITE}/overrides.yaml",
        "apiVersion: outpost/v1\nkind: SiteOverrides\nmetadata:\n"
        f"  name: {SITE}\nspec:\n  apps:\n    pos:\n      patches:\n"
        "        - target: {kind: Deployment, name: pos-server}\n"
        "          merge: {spec: {template: {spec: {nodeSelector: {outpost/node: nowhere}}}}}\n",
    )
    bad = fleet.commit("pin pos-server to a node that does not exist", when=T0 + timedelta(hours=1))
    assert agent.tick().outcome == "rolled-back"

    (tmp_path / "state" / "state.json").unlink()
    report = agent.tick()

    assert report.outcome == "failed-before", report
    assert (report.pending, report.applied) == (bad, good)
    assert any("1 failed commit(s) from the mirror" in w for w in report.warnings)
    deployment = read(cluster, "deployment", "pos", "pos-server")
    assert deployment is not None
    assert deployment["spec"]["template"]["spec"]["nodeSelector"] == {"outpost/device.usb": "true"}
