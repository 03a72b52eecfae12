"""On the real control plane: a quiet tick is one look (the inventory, then one LIST per kind
and namespace: no discovery, no dry run, nothing decrypted), and what it cannot vouch for
still reaches the full check: a Secret edited, annotated or deleted by hand, an object
edited, a record naming a resource the server does not serve."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from test_agent import IN_WINDOW, Clock, clean_site, fleet, node, read, store_node  # noqa: F401

from reconciler.node.agent import Agent
from reconciler.node.apply.cluster import Cluster as ApiCluster
from reconciler.node.config import load_config
from reconciler.node.pipeline import NodePipeline
from tools.testcluster import Cluster

pytestmark = pytest.mark.cluster

LATER = datetime(2027, 2, 3, 10, 0, tzinfo=UTC)  # outside the window: drift is never gated


class Seen:
    """Every request the agent sends to the API server, and every decryption it asks for."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str]] = []
        self.lists: list[str] = []
        self.decrypted: list[str] = []

    def clear(self) -> None:
        self.requests.clear()
        self.lists.clear()
        self.decrypted.clear()


@pytest.fixture
def seen(monkeypatch: pytest.MonkeyPatch) -> Iterator[Seen]:
    found = Seen()
    send, secrets = ApiCluster._send, NodePipeline.secrets

    def counted_send(self: ApiCluster, method: str, path: str, **kwargs: Any) -> Any:
        query = dict(kwargs.get("query") or {})
        if method == "GET" and "limit" in query:
            found.lists.append(path)
        else:
            found.requests.append((method, path + "".join(f"?{k}={v}" for k, v in query.items())))
        return send(self, method, path, **kwargs)

    def counted_secrets(self: NodePipeline, mirror: Any, revision: str) -> Any:
        found.decrypted.append(revision)
        return secrets(self, mirror, revision)

    monkeypatch.setattr(ApiCluster, "_send", counted_send)
    monkeypatch.setattr(NodePipeline, "secrets", counted_secrets)
    yield found


def _again(agent: Agent) -> Agent:
    return Agent(
        agent.config, pipeline=agent.pipeline, cluster=agent.cluster_factory, clock=Clock(LATER)
    )


def _running(tmp_path: Path, node: Callable[..., Agent]) -> Agent:  # noqa: F811
    agent = node(Clock(IN_WINDOW))
    assert agent.tick().outcome == "applied"
    assert _again(agent).tick().drift == 0  # renders once, dry-runs, records the slice
    record = json.loads((tmp_path / "state" / "slice.json").read_text())
    assert record["secrets"] is True and record["secretVersions"]
    return agent


def _quiet(agent: Agent, seen: Seen) -> None:
    """One tick that finds nothing, answered from the record alone."""
    seen.clear()
    report = _again(agent).tick()
    assert (report.outcome, report.drift, report.health) == ("unchanged", 0, "healthy")
    assert seen.decrypted == []
    inventory = "/api/v1/namespaces/outpost-system/configmaps/outpost-inventory"
    assert seen.requests == [("GET", inventory)]  # no discovery, no read, no dry run
    assert len(seen.lists) == len(set(seen.lists)) > 0  # one LIST per kind and namespace


def _psk(cluster: Cluster) -> str:
    found = read(cluster, "secret", "pos", "wifi-psk")
    assert found is not None
    return str(found["data"]["psk"])


def test_a_quiet_tick_is_one_look_and_a_secret_edited_by_hand_is_put_back(
    tmp_path: Path,
    cluster: Cluster,
    node: Callable[..., Agent],  # noqa: F811
    seen: Seen,
) -> None:
    agent = _running(tmp_path, node)
    _quiet(agent, seen)
    psk = _psk(cluster)
    wrong = base64.b64encode(b"guessed-by-hand").decode()
    cluster.kubectl(
        "patch", "secret", "wifi-psk", "-n", "pos", "--type=merge",
        "-p", json.dumps({"data": {"psk": wrong}}),
    )  # fmt: skip
    seen.clear()
    report = _again(agent).tick()
    assert (report.outcome, report.drift, report.corrected) == ("unchanged", 1, 1)
    assert seen.decrypted  # the look could not vouch for it: decrypted, dry-run, corrected
    assert _psk(cluster) == psk
    seen.clear()
    assert _again(agent).tick().drift == 0  # decrypted once more, in line: recorded
    assert seen.decrypted
    _quiet(agent, seen)


def test_a_secret_annotated_by_hand_is_checked_once_and_left(
    tmp_path: Path,
    cluster: Cluster,
    node: Callable[..., Agent],  # noqa: F811
    seen: Seen,
) -> None:
    """A write to the Secret that leaves what the slice sets as it was: not drift, but the
    look cannot know that without the Secret, so it is decrypted and dry-run, once."""
    agent = _running(tmp_path, node)
    cluster.kubectl("annotate", "secret", "wifi-psk", "-n", "pos", "team=ops")
    seen.clear()
    report = _again(agent).tick()
    assert (report.outcome, report.drift) == ("unchanged", 0)
    assert seen.decrypted
    sent = [p for m, p in seen.requests if m == "PATCH" and "/secrets/wifi-psk" in p]
    assert sent and all("?dryRun=All" in p for p in sent)  # dry-run only: nothing to correct
    _quiet(agent, seen)
    found = read(cluster, "secret", "pos", "wifi-psk")
    assert found is not None and found["metadata"]["annotations"]["team"] == "ops"


def test_a_deleted_secret_and_an_edited_object_are_put_back(
    tmp_path: Path,
    cluster: Cluster,
    node: Callable[..., Agent],  # noqa: F811
    seen: Seen,
) -> None:
    agent = _running(tmp_path, node)
    psk = _psk(cluster)
    cluster.kubectl("delete", "secret", "wifi-psk", "-n", "pos")
    cluster.kubectl(
        "patch", "configmap", "pos-config", "-n", "pos", "--type=merge",
        "-p", '{"data": {"CURRENCY": "USD"}}',
    )  # fmt: skip
    report = _again(agent).tick()
    assert (report.outcome, report.drift, report.corrected) == ("unchanged", 2, 2)
    assert _psk(cluster) == psk
    config_map = read(cluster, "configmap", "pos", "pos-config")
    assert config_map is not None and config_map["data"]["CURRENCY"] == "EUR"
    _again(agent).tick()  # the Secret's new version found in line and recorded
    _quiet(agent, seen)


def test_a_record_naming_a_resource_not_served_vouches_for_nothing(
    tmp_path: Path,
    node: Callable[..., Agent],  # noqa: F811
    seen: Seen,
) -> None:
    agent = _running(tmp_path, node)
    path = tmp_path / "state" / "slice.json"
    record = json.loads(path.read_text())
    record["objects"][0][1] = "no-such-plural"  # as if the kind had gone from the server
    path.write_text(json.dumps(record))
    seen.clear()
    assert _again(agent).tick().drift == 0  # rendered and checked in full instead
    assert any("dryRun=All" in p for _, p in seen.requests)
    assert json.loads(path.read_text())["objects"][0][1] != "no-such-plural"
    _quiet(agent, seen)


QUIET_TICK = """
import json, sys
from datetime import datetime
from pathlib import Path

from reconciler.node.agent import Agent
from reconciler.node.config import load_config
from reconciler.node.pipeline import ManagerCluster, NodePipeline

config = load_config(Path(sys.argv[1]), remember=True)  # as `outpost agent run` reads it
now = datetime.fromisoformat(sys.argv[2])
agent = Agent(
    config,
    pipeline=NodePipeline(config),
    cluster=lambda: ManagerCluster.connect(config),
    clock=lambda: now,
)
report = agent.tick()
print(json.dumps({"outcome": report.outcome, "drift": report.drift, "loaded": sorted(sys.modules)}))
"""

ONLY_ON_OTHER_PATHS = (
    "urllib3",  # the kubernetes library's fallback and the report sender
    "kubernetes",
    "jsonschema",  # the slice's checks
    "cryptography",  # decryption, signatures of new commits, signing a report
    "reconciler.core.model",  # the repository's typed documents: rendering
    "reconciler.core.render",
    "reconciler.core.policy",
    "reconciler.core.trust",
)


def test_a_quiet_tick_in_its_own_process_imports_only_what_it_uses(
    tmp_path: Path,
    node: Callable[..., Agent],  # noqa: F811
) -> None:
    """What a node's no-op tick loads: the look needs none of the render, check or trust
    machinery, nor a second HTTP library; each is imported where a tick needs it."""
    _running(tmp_path, node)
    load_config(tmp_path / "agent.yaml", remember=True)  # its schema check recorded, as a
    # node's first tick records it
    done = subprocess.run(
        [sys.executable, "-c", QUIET_TICK, str(tmp_path / "agent.yaml"), LATER.isoformat()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert (answer["outcome"], answer["drift"]) == ("unchanged", 0)
    loaded = [m for m in answer["loaded"] if m.startswith(ONLY_ON_OTHER_PATHS)]
    assert loaded == [], loaded
    assert "reconciler.node.apply.transport" in answer["loaded"]  # the look did connect
