"""The agent's tick hands its status to the reporter: signed outbox, spool, never a failed tick."""

from __future__ import annotations

import socket
from datetime import UTC, datetime
from pathlib import Path

from node_keys import NODE_KEYS

from reconciler.core.report import open_envelope, read_envelope
from reconciler.core.trust.sshsig import parse_public_key_line
from reconciler.node.agent import Agent
from reconciler.node.config import load_config

NOW = datetime(2026, 12, 1, 9, 30, tzinfo=UTC)


class NoPipeline:
    """The tick below never reaches the pipeline's trust, render or gate: the inbox is
    empty, nothing is a candidate. It asks only for the heartbeat, which NodePipeline
    answers with None while the site runs nothing (there are no keys to check it with)."""

    def freshness(self, mirror: object, applied: str | None, head: str | None, now: object) -> None:
        assert (applied, head) == (None, None)

    def __getattr__(self, name: str) -> object:
        raise AssertionError(f"the pipeline was asked for {name}")


class FreshCluster:
    """A cluster nothing was ever applied to: with no applied revision on record the agent
    asks only what runs (its inventory's revision, none here), and nothing else."""

    def applied_revision(self) -> str | None:
        return None

    def __getattr__(self, name: str) -> object:
        raise AssertionError(f"the cluster was asked for {name}")


def test_a_tick_with_the_collector_down_still_ends_and_signs_its_outbox(
    tmp_path: Path, muc_key: Path
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    (tmp_path / "inbox").mkdir()
    config = tmp_path / "agent.yaml"
    config.write_text(
        "apiVersion: outpost/v1\nkind: AgentConfig\nspec:\n  site: de-muc-0007\n"
        "  bundleInbox: inbox\n  outbox: outbox\n  trustRoot: allowed_signers\n"
        f"  stateDir: state\n  identityKey: {muc_key}\n"
        f"  report: {{url: 'http://127.0.0.1:{port}/api/v1/reports'}}\n"
    )
    agent = Agent(
        load_config(config),
        pipeline=NoPipeline(),
        cluster=FreshCluster,  # type: ignore[arg-type]
        clock=lambda: NOW,
    )
    report = agent.tick()
    assert report.outcome == "unchanged"
    envelope = read_envelope(
        (tmp_path / "outbox" / "outpost-status-de-muc-0007.json").read_bytes(), "outbox"
    )
    keys = [parse_public_key_line((NODE_KEYS / "de-muc-0007-edge-1.key.pub").read_text())]
    assert open_envelope(envelope, keys).body["outcome"] == "unchanged"
    metrics = (tmp_path / "state" / "outpost.prom").read_text()
    assert 'outpost_report_spool_reports{site="de-muc-0007"} 1' in metrics
    assert 'outpost_report_send_failures{site="de-muc-0007"} 1' in metrics
    assert (tmp_path / "state" / "status.json").is_file()  # the unsigned copy stays local


def test_the_fleet_status_file_reads_signed_outbox_reports(
    tmp_path: Path, muc_key: Path, capsys
) -> None:
    from reconciler.cli import main
    from reconciler.node.report import Reporter

    status = {
        "apiVersion": "outpost/v1", "kind": "SiteStatus", "site": "de-muc-0007",
        "time": NOW.isoformat(), "outcome": "applied", "health": "healthy",
        "applied": {"revision": "c" * 40, "at": NOW.isoformat()}, "pending": None,
    }  # fmt: skip
    Reporter(site="de-muc-0007", state_dir=tmp_path / "state", identity_key=muc_key,
             report=None, outbox=tmp_path / "stick").after_tick(status, NOW)  # fmt: skip
    into = tmp_path / "fleet.json"
    assert main(["fleet", "ingest", str(tmp_path / "stick"), "--into", str(into)]) == 0
    capsys.readouterr()
    assert main(["fleet", "status", "--from", str(into), "-o", "json"]) == 0
    assert '"applied": "' + "c" * 40 in capsys.readouterr().out
