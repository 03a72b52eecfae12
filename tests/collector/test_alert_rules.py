"""The shipped alerting rules, run by the real promtool (built from the Go module proxy)."""

from __future__ import annotations

import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from collector_world import REPO_ROOT, signed

from reconciler.fleet.collector.app import Collector
from reconciler.fleet.collector.fleetview import FleetSource
from reconciler.fleet.collector.metrics import render_metrics
from reconciler.fleet.collector.store import open_store
from tools.promtool import MissingPromtool, require_promtool

DEPLOY = REPO_ROOT / "deploy"


@pytest.fixture(scope="module")
def promtool() -> Path:
    """Fails (never skips) when promtool is not built: `make test` builds it first."""
    try:
        return require_promtool()
    except MissingPromtool as error:
        message = str(error)
    pytest.fail(message, pytrace=False)


def run(promtool: Path, *args: str, cwd: Path = DEPLOY, stdin: str | None = None):
    return subprocess.run(
        [str(promtool), *args],
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def test_the_rules_are_valid(promtool: Path) -> None:
    done = run(promtool, "check", "rules", "alerts.yaml")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 6 rules found" in done.stdout


def test_the_rules_pass_their_unit_tests(promtool: Path) -> None:
    done = run(promtool, "test", "rules", "alerts.test.yaml")
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_unit_tests_catch_a_broken_rule(promtool: Path, tmp_path: Path) -> None:
    shutil.copyfile(DEPLOY / "alerts.test.yaml", tmp_path / "alerts.test.yaml")
    rules = (DEPLOY / "alerts.yaml").read_text()
    broken = rules.replace("for: 15m", "for: 5m", 1)
    assert broken != rules
    (tmp_path / "alerts.yaml").write_text(broken)
    done = run(promtool, "test", "rules", "alerts.test.yaml", cwd=tmp_path)
    assert done.returncode == 1 and "OutpostHealthFailing" in done.stdout + done.stderr


def test_the_collectors_metrics_pass_promtools_lint(
    promtool: Path, tmp_path: Path, keys, fleet
) -> None:
    now = datetime.now(UTC)
    source = FleetSource(fleet.path, fleet.allowed_signers)
    source.refresh(now)
    hq = Collector(
        store=open_store(str(tmp_path / "c.db"), now=now), source=source, clock=lambda: now
    )
    hq.ingestor.ingest(signed(keys, "de-muc-0007", now - timedelta(minutes=3)).to_bytes(), "t")
    text = render_metrics(
        hq.records(), source.status.view, now=now, repository_ok=True, reports=hq.ingestor.counts
    )
    done = run(promtool, "check", "metrics", stdin=text)
    assert done.returncode == 0, done.stdout + done.stderr
    assert 'outpost_site_report_age_seconds{site="de-muc-0007"} 180' in text
