"""A chart from a loopback chart repository, vendored in CI, applied by the agent.

The chart (``tests/vendor/chart``) is packaged and indexed with the real helm and served on
127.0.0.1; ``outpost app vendor`` renders it into the signed example fleet, the store
de-muc-0007 gives it a site parameter, and the node agent — which never runs helm — applies
the vendored objects to the real control plane. A chart version bump then changes only the
object it changed.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from test_agent import IN_WINDOW, SITE, T0, Clock, make_agent, read, write_config
from test_agent import clean_site as clean_site
from test_agent import store_node as store_node

from tools.chartrepo import TEST_CHART, add_to_fleet, serve, shop_broker_app
from tools.charttools import MissingToolsError, require_binaries
from tools.signedfleet import create
from tools.testcluster import Cluster

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]
NAMESPACE = "shop-broker"


@pytest.fixture
def chart_bin() -> Path:
    try:
        return require_binaries().bin_dir
    except MissingToolsError as error:
        missing = str(error)
    pytest.fail(missing, pytrace=False)


@pytest.fixture
def no_broker(cluster: Cluster) -> Iterator[None]:
    cluster.kubectl("delete", "namespace", NAMESPACE, "--ignore-not-found", "--wait=true")
    yield
    cluster.kubectl("delete", "namespace", NAMESPACE, "--ignore-not-found", "--wait=false")


def vendor(repo: Path, chart_bin: Path, *args: str) -> None:
    env = {"PATH": f"{chart_bin}:/usr/bin:/bin", "PYTHONPATH": str(ROOT), "HOME": str(repo)}
    done = subprocess.run(
        [sys.executable, "-m", "reconciler.cli", "app", "vendor", "shop-broker", *args],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def test_a_vendored_chart_is_applied_by_the_agent_with_site_parameters(
    tmp_path: Path,
    cluster: Cluster,
    chart_bin: Path,
    clean_site: None,
    no_broker: None,
) -> None:
    fleet = create(tmp_path / "repo", when=T0)
    with serve(tmp_path / "charts", chart_bin / "helm") as charts:
        charts.publish(TEST_CHART, "1.0.0")
        fleet.write(
            "apps/shop-broker/app.yaml", shop_broker_app(charts.url, {"1.0.0": "1.0.0"}, NAMESPACE)
        )
        add_to_fleet(fleet.path / "fleets/retail-eu.yaml", "shop-broker", "1.0.0")
        fleet.write(
            f"sites/{SITE}/overrides.yaml",
            "apiVersion: outpost/v1\nkind: SiteOverrides\nmetadata:\n"
            f"  name: {SITE}\nspec:\n  apps:\n    shop-broker:\n"
            "      values: {maxConnections: 250}\n",
        )
        vendor(fleet.path, chart_bin)
        first = fleet.commit("shop-broker 1.0.0 from its chart", when=T0 + timedelta(hours=1))

        agent = make_agent(
            write_config(tmp_path, fleet, Path(cluster.kubeconfig)), Clock(IN_WINDOW)
        )
        report = agent.tick()
        assert (report.outcome, report.applied) == ("applied", first), report
        config_map = read(cluster, "configmap", NAMESPACE, "shop-broker")
        assert config_map is not None
        conf = config_map["data"]["mosquitto.conf"]
        assert "max_connections 250\n" in conf and f"# site {SITE}\n" in conf
        deployment = read(cluster, "deployment", NAMESPACE, "shop-broker")
        assert deployment is not None
        assert deployment["status"].get("availableReplicas", 0) >= 1
        assert read(cluster, "service", NAMESPACE, "shop-broker") is not None

        def new_setting(chart: Path) -> None:
            template = chart / "templates/configmap.yaml"
            template.write_text(template.read_text() + "    max_queued_messages 1000\n")

        charts.publish(TEST_CHART, "1.1.0", edit=new_setting)
        fleet.write(
            "apps/shop-broker/app.yaml",
            shop_broker_app(charts.url, {"1.0.0": "1.0.0", "1.1.0": "1.1.0"}, NAMESPACE),
        )
        add_to_fleet(fleet.path / "fleets/retail-eu.yaml", "shop-broker", "1.1.0")
        vendor(fleet.path, chart_bin, "--version", "1.1.0")
        second = fleet.commit("shop-broker 1.1.0", when=T0 + timedelta(hours=2))

    report = agent.tick()
    assert (report.outcome, report.applied) == ("applied", second), report
    config_map = read(cluster, "configmap", NAMESPACE, "shop-broker")
    assert config_map is not None
    assert "max_queued_messages 1000\n" in config_map["data"]["mosquitto.conf"]
    after = read(cluster, "deployment", NAMESPACE, "shop-broker")
    assert after is not None
    assert after["metadata"]["generation"] == deployment["metadata"]["generation"]
