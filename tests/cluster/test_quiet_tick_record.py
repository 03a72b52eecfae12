"""On the real control plane: a quiet tick vouches for the slice from its record without
rendering it, and a hand edit or deletion still sends it down the full path, corrected."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from test_agent import IN_WINDOW, Clock, clean_site, fleet, node, read, store_node  # noqa: F401

from reconciler.node.agent import Agent
from tools.testcluster import Cluster

pytestmark = pytest.mark.cluster

LATER = datetime(2027, 2, 3, 10, 0, tzinfo=UTC)  # outside the window: drift is never gated


def _again(agent: Agent) -> Agent:
    return Agent(
        agent.config, pipeline=agent.pipeline, cluster=agent.cluster_factory, clock=Clock(LATER)
    )


def test_quiet_ticks_vouch_from_the_record_and_a_hand_edit_is_still_corrected(
    tmp_path: Path,
    cluster: Cluster,
    node: Callable[..., Agent],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    agent = node(Clock(IN_WINDOW))
    assert agent.tick().outcome == "applied"
    assert _again(agent).tick().drift == 0  # renders once, records the slice
    record = json.loads((tmp_path / "state" / "slice.json").read_text())
    assert record["secrets"] is True and record["objects"]
    assert "Secret" not in json.dumps([entry[0]["kind"] for entry in record["objects"]])

    import reconciler.core.render as render

    renders: list[str] = []
    real = render.render_site

    def counted(*args: Any, **kwargs: Any) -> Any:
        renders.append(args[1])
        return real(*args, **kwargs)

    monkeypatch.setattr(render, "render_site", counted)
    quiet = _again(agent).tick()
    assert (quiet.outcome, quiet.drift, quiet.health) == ("unchanged", 0, "healthy")
    assert renders == []  # vouched for from the record: no render

    cluster.kubectl(
        "patch", "configmap", "pos-config", "-n", "pos", "--type=merge",
        "-p", '{"data": {"CURRENCY": "USD"}}',
    )  # fmt: skip
    cluster.kubectl("delete", "service", "pos-server", "-n", "pos")
    report = _again(agent).tick()
    assert (report.outcome, report.drift, report.corrected) == ("unchanged", 2, 2)
    assert renders  # the record could not vouch: rendered, dry-run, corrected
    config_map = read(cluster, "configmap", "pos", "pos-config")
    assert config_map is not None and config_map["data"]["CURRENCY"] == "EUR"
    assert read(cluster, "service", "pos", "pos-server") is not None
    renders.clear()
    assert _again(agent).tick().drift == 0
    assert renders == []  # in line again, and the record vouches again
