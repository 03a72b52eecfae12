"""spec.identityKey and spec.report in the agent config; node keys in hardware.yaml."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.cli import main
from reconciler.core.errors import ConfigError
from reconciler.node.config import load_config
from tools.signedfleet import copy_fleet

BASE = (
    "apiVersion: outpost/v1\nkind: AgentConfig\nspec:\n  site: de-muc-0007\n"
    "  bundleInbox: inbox\n  trustRoot: allowed_signers\n  stateDir: state\n"
)


def config(tmp_path: Path, extra: str) -> Path:
    path = tmp_path / "agent.yaml"
    path.write_text(BASE + extra)
    return path


def test_report_settings_are_read_with_defaults(tmp_path: Path) -> None:
    loaded = load_config(
        config(
            tmp_path,
            "  identityKey: node.key\n  report:\n"
            "    url: https://hq.example.com/api/v1/reports\n"
            "    caBundle: ca.pem\n",
        )
    )
    assert loaded.identity_key == tmp_path / "node.key"
    assert loaded.report is not None
    assert loaded.report.url == "https://hq.example.com/api/v1/reports"
    assert loaded.report.ca_bundle == tmp_path / "ca.pem"
    assert (loaded.report.interval, loaded.report.spool) == (3600, 100)


def test_a_report_url_needs_a_node_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"spec.report needs spec.identityKey"):
        load_config(config(tmp_path, "  report: {url: 'https://hq.example.com/r'}\n"))


@pytest.mark.parametrize(
    "url",
    [
        "http://hq.example.com/api/v1/reports",
        "ftp://x/y",
        "http://127.0.0.1.evil.com/r",
        "https://hq.example.com/a b",
    ],
)
def test_plain_http_only_to_this_machine(tmp_path: Path, url: str) -> None:
    with pytest.raises(ConfigError, match=r"report\.url"):
        load_config(config(tmp_path, f"  identityKey: k\n  report: {{url: '{url}'}}\n"))


@pytest.mark.parametrize("url", ["http://127.0.0.1:8080/api/v1/reports", "http://localhost/r"])
def test_plain_http_to_loopback_is_allowed(tmp_path: Path, url: str) -> None:
    loaded = load_config(config(tmp_path, f"  identityKey: k\n  report: {{url: '{url}'}}\n"))
    assert loaded.report is not None and loaded.report.url == url


def test_two_nodes_with_one_key_are_a_finding(tmp_path: Path, capsys) -> None:
    copy_fleet(tmp_path)
    berlin = (tmp_path / "sites/de-ber-0042/hardware.yaml").read_text()
    munich = tmp_path / "sites/de-muc-0007/hardware.yaml"
    stolen = next(line for line in berlin.splitlines() if "publicKey" in line)
    text = munich.read_text()
    mine = next(line for line in text.splitlines() if "publicKey" in line)
    munich.write_text(text.replace(mine, stolen))
    assert main(["validate", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "sites/de-muc-0007/hardware.yaml:9" in out
    assert "already the key of de-ber-0042/edge-1" in out


def test_a_public_key_that_is_not_ed25519_is_a_schema_finding(tmp_path: Path, capsys) -> None:
    copy_fleet(tmp_path)
    munich = tmp_path / "sites/de-muc-0007/hardware.yaml"
    text = munich.read_text()
    mine = next(line for line in text.splitlines() if "publicKey" in line)
    munich.write_text(text.replace(mine, '      publicKey: "ssh-rsa AAAAB3NzaC1yc2E"'))
    assert main(["validate", str(tmp_path)]) == 1
    assert "publicKey" in capsys.readouterr().out
