"""``outpost app vendor`` with the real helm and kustomize, a chart repository on loopback.

Each test copies the example fleet and adds ``shop-broker``, an app whose chart
(``tests/vendor/chart``) is packaged with ``helm package`` and indexed with ``helm repo
index`` into a repository served by ``http.server`` on 127.0.0.1. The plants fleet runs it;
plant-ostrava overrides ``maxConnections``, so the same vendored output renders differently
per site.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from reconciler.core.model import Repository
from reconciler.core.render import render_site
from reconciler.core.source import WorkdirTree
from tools.chartrepo import TEST_CHART as CHART
from tools.chartrepo import ChartRepository, add_to_fleet, serve_oci, sha256
from tools.chartrepo import shop_broker_app as app_yaml

ROOT = Path(__file__).resolve().parents[2]
VENDORED = "apps/shop-broker/manifests"


def example_with_broker(tmp_path: Path, repository: ChartRepository, version: str) -> Path:
    """The example fleet, plants running shop-broker ``version``, Ostrava at 800 connections."""
    root = tmp_path / "repo"
    for part in ("apps", "fleets", "sites", "policies", "schemas"):
        shutil.copytree(ROOT / part, root / part)
    shutil.copyfile(ROOT / ".sops.yaml", root / ".sops.yaml")
    (root / "apps/shop-broker").mkdir()
    (root / "apps/shop-broker/app.yaml").write_text(app_yaml(repository.url, {"1.0.0": "1.0.0"}))
    set_broker_version(root, version)
    overrides = root / "sites/plant-ostrava/overrides.yaml"
    overrides.write_text(
        overrides.read_text() + "    shop-broker:\n      values: {maxConnections: 800}\n"
    )
    return root


def set_broker_version(root: Path, version: str) -> None:
    add_to_fleet(root / "fleets/plants.yaml", "shop-broker", version)


def outpost(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "reconciler.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def config_map(root: Path, site: str) -> dict[str, Any]:
    rendered = render_site(Repository(WorkdirTree(root)), site)
    [body] = [
        o.body for o in rendered.objects if (o.key.kind, o.key.name) == ("ConfigMap", "shop-broker")
    ]
    return body


def vendored_files(root: Path) -> dict[str, bytes]:
    base = root / VENDORED
    return {p.relative_to(base).as_posix(): p.read_bytes() for p in sorted(base.rglob("*.yaml"))}


def test_a_chart_from_a_loopback_repository_is_vendored_and_rendered_per_site(
    tmp_path: Path, chart_repo: ChartRepository, tool_env: dict[str, str]
) -> None:
    archive = chart_repo.publish(CHART, "1.0.0")
    root = example_with_broker(tmp_path, chart_repo, "1.0.0")

    done = outpost(tool_env, "app", "vendor", "shop-broker", "--repo", str(root))
    assert done.returncode == 0, done.stderr
    assert f"{VENDORED}/1.0.0/configmap-shop-broker.yaml" in done.stdout

    lock = json.loads((root / "apps/shop-broker/vendor.lock.json").read_text())
    record = lock["versions"]["1.0.0"]
    assert record["chartDigest"] == sha256(archive)  # the .tgz helm pulled from the repository
    assert record["tools"] == {"helm": "v4.3.2"}
    assert record["source"]["repository"] == chart_repo.url
    assert sorted(record["files"]) == [
        "configmap-shop-broker.yaml",
        "deployment-shop-broker.yaml",
        "service-shop-broker.yaml",
    ]
    text = (root / VENDORED / "1.0.0/configmap-shop-broker.yaml").read_text()
    assert text.startswith("# Source: shop-broker/templates/configmap.yaml\n")
    assert "max_connections ${maxConnections}" in text  # filled per site, not by helm

    lyon, ostrava = config_map(root, "plant-lyon"), config_map(root, "plant-ostrava")
    assert "max_connections 100\n" in lyon["data"]["mosquitto.conf"]
    assert "# site plant-lyon\n" in lyon["data"]["mosquitto.conf"]
    assert "max_connections 800\n" in ostrava["data"]["mosquitto.conf"]
    assert "# site plant-ostrava\n" in ostrava["data"]["mosquitto.conf"]
    assert lyon["metadata"]["namespace"] == "broker"

    validated = outpost(tool_env, "validate", "--repo", str(root))
    assert validated.returncode == 0, validated.stdout + validated.stderr
    checked = outpost(tool_env, "app", "vendor", "--check", "--repo", str(root))
    assert checked.returncode == 0, checked.stderr


def test_a_hand_edit_of_vendored_output_fails_check_and_validate(
    tmp_path: Path, chart_repo: ChartRepository, tool_env: dict[str, str]
) -> None:
    chart_repo.publish(CHART, "1.0.0")
    root = example_with_broker(tmp_path, chart_repo, "1.0.0")
    assert outpost(tool_env, "app", "vendor", "shop-broker", "--repo", str(root)).returncode == 0
    edited = root / VENDORED / "1.0.0/service-shop-broker.yaml"
    edited.write_text(edited.read_text().replace("port: 1883", "port: 1884"))

    checked = outpost(tool_env, "app", "vendor", "--check", "--repo", str(root))
    assert checked.returncode == 1
    assert f"{VENDORED}/1.0.0/service-shop-broker.yaml" in checked.stderr
    assert "edited by hand" in checked.stderr
    assert "differs: a fresh helm render" in checked.stderr

    # validate says the same without helm: the record is compared with the files.
    no_helm = {**tool_env, "PATH": "/usr/bin:/bin", "OUTPOST_HELM": "/nonexistent/helm"}
    validated = outpost(no_helm, "validate", "--repo", str(root), "--no-policies")
    assert validated.returncode == 1
    assert f"{VENDORED}/1.0.0/service-shop-broker.yaml" in validated.stdout
    assert "edited by hand" in validated.stdout
    assert "[vendor]" in validated.stdout

    # Changed values without a new render are stale, also without helm.
    edited.write_text(edited.read_text().replace("port: 1884", "port: 1883"))
    app = root / "apps/shop-broker/app.yaml"
    app.write_text(app.read_text().replace("siteName: ${site.name}", "siteName: fixed"))
    stale = outpost(no_helm, "validate", "--repo", str(root), "--no-policies")
    assert stale.returncode == 1
    assert "apps/shop-broker/app.yaml:" in stale.stdout
    assert "the output is stale" in stale.stdout


def test_a_chart_whose_digest_changed_under_the_same_version_is_refused(
    tmp_path: Path, chart_repo: ChartRepository, tool_env: dict[str, str]
) -> None:
    first = sha256(chart_repo.publish(CHART, "1.0.0"))
    root = example_with_broker(tmp_path, chart_repo, "1.0.0")
    assert outpost(tool_env, "app", "vendor", "shop-broker", "--repo", str(root)).returncode == 0
    before = vendored_files(root)
    lock_before = (root / "apps/shop-broker/vendor.lock.json").read_bytes()

    def sneak(chart: Path) -> None:
        template = chart / "templates/configmap.yaml"
        template.write_text(template.read_text().replace("listener 1883", "listener 8883"))

    second = sha256(chart_repo.publish(CHART, "1.0.0", edit=sneak))
    assert second != first

    done = outpost(tool_env, "app", "vendor", "shop-broker", "--repo", str(root))
    assert done.returncode == 1
    assert "refused" in done.stderr
    assert first in done.stderr and second in done.stderr
    assert "shop-broker 1.0.0" in done.stderr
    assert vendored_files(root) == before  # nothing written
    assert (root / "apps/shop-broker/vendor.lock.json").read_bytes() == lock_before

    checked = outpost(tool_env, "app", "vendor", "--check", "--repo", str(root))
    assert checked.returncode == 1
    assert "same chart version" in checked.stderr


def test_a_version_bump_diffs_as_exactly_the_objects_that_changed(
    tmp_path: Path, chart_repo: ChartRepository, tool_env: dict[str, str]
) -> None:
    chart_repo.publish(CHART, "1.0.0")
    root = example_with_broker(tmp_path, chart_repo, "1.0.0")
    assert outpost(tool_env, "app", "vendor", "shop-broker", "--repo", str(root)).returncode == 0
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "-C", str(root)]
    subprocess.run([*git, "init", "-q", "-b", "main"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "shop-broker 1.0.0"], check=True)

    def new_setting(chart: Path) -> None:
        template = chart / "templates/configmap.yaml"
        template.write_text(template.read_text() + "    max_queued_messages 1000\n")

    chart_repo.publish(CHART, "1.1.0", edit=new_setting)
    app = root / "apps/shop-broker/app.yaml"
    app.write_text(app_yaml(chart_repo.url, {"1.0.0": "1.0.0", "1.1.0": "1.1.0"}))
    set_broker_version(root, "1.1.0")
    vendored = outpost(
        tool_env, "app", "vendor", "shop-broker", "--version", "1.1.0", "--repo", str(root)
    )
    assert vendored.returncode == 0, vendored.stderr
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "shop-broker 1.1.0"], check=True)

    done = outpost(
        tool_env, "diff", "--base", "HEAD~1", "--head", "HEAD", "-o", "json", "--repo", str(root)
    )
    assert done.returncode in (0, 1), done.stderr
    result = json.loads(done.stdout)
    sites = {site["site"]: site for site in result["sites"]}
    assert set(sites) == {"plant-lyon", "plant-ostrava"}
    for site in sites.values():
        changed = [(o["key"], o["change"]) for o in site["objects"]]
        assert len(changed) == 1, changed
        key, change = changed[0]
        assert "ConfigMap" in key and "shop-broker" in key and change == "changed"
        assert "+    max_queued_messages 1000" in site["objects"][0]["diff"]


def test_the_example_fleet_vendored_output_is_fresh(tool_env: dict[str, str]) -> None:
    """The MQTT broker (a chart in the repository) and the OPC UA gateway (a Kustomize base)
    render, with the real tools, to exactly what is committed."""
    checked = outpost(tool_env, "app", "vendor", "--check", "--repo", str(ROOT))
    assert checked.returncode == 0, checked.stderr
    lock = json.loads((ROOT / "apps/opcua-gateway/vendor.lock.json").read_text())
    assert lock["versions"]["2.2.0"]["tools"] == {"kustomize": "v5.8.2"}
    assert (
        yaml.safe_load((ROOT / "apps/mqtt-broker/chart/Chart.yaml").read_text())["version"]
        == (
            json.loads((ROOT / "apps/mqtt-broker/vendor.lock.json").read_text())["versions"][
                "2.0.20"
            ]["source"]["version"]
        )
    )


def test_a_chart_folder_changed_under_its_version_is_refused(
    tmp_path: Path, tool_env: dict[str, str]
) -> None:
    root = tmp_path / "repo"
    for part in ("apps", "fleets", "sites", "policies", "schemas"):
        shutil.copytree(ROOT / part, root / part)
    template = root / "apps/mqtt-broker/chart/templates/service.yaml"
    template.write_text(template.read_text().replace("name: mqtt", "name: mqtt-tcp"))
    before = (root / "apps/mqtt-broker/vendor.lock.json").read_bytes()
    done = outpost(tool_env, "app", "vendor", "mqtt-broker", "--repo", str(root))
    assert done.returncode == 1
    assert "refused" in done.stderr and "apps/mqtt-broker/chart" in done.stderr
    assert (root / "apps/mqtt-broker/vendor.lock.json").read_bytes() == before

    # With a new chart version in a new app version, the same change is vendored.
    chart = root / "apps/mqtt-broker/chart/Chart.yaml"
    chart.write_text(chart.read_text().replace("version: 1.0.0", "version: 1.1.0"))
    app = root / "apps/mqtt-broker/app.yaml"
    release = app.read_text().split('    "2.0.20":\n')[1].split("  parameters:")[0]
    app.write_text(
        app.read_text().replace(
            "  parameters:",
            '    "2.0.21":\n'
            + release.replace("version: 1.0.0", "version: 1.1.0")
            + "  parameters:",
            1,
        )
    )
    done = outpost(tool_env, "app", "vendor", "mqtt-broker", "--repo", str(root))
    assert done.returncode == 0, done.stderr
    assert (
        "mqtt-broker 2.0.20: kept as vendored (apps/mqtt-broker/chart/Chart.yaml is at 1.1.0"
        in (done.stdout)
    )
    service = (root / "apps/mqtt-broker/manifests/2.0.21/service-mqtt-broker.yaml").read_text()
    assert "name: mqtt-tcp" in service
    # 2.0.18 and 2.0.20 keep their reviewed output: the folder moved on to 1.1.0.
    checked = outpost(tool_env, "app", "vendor", "--check", "--repo", str(root))
    assert checked.returncode == 0, checked.stderr


def test_a_chart_from_an_oci_reference_is_vendored(
    tmp_path: Path, chart_repo: ChartRepository, tool_env: dict[str, str]
) -> None:
    archive = chart_repo.publish(CHART, "1.0.0")  # helm package; the registry serves the .tgz
    with serve_oci(tmp_path / "oci") as registry:
        registry.publish(archive)
        root = example_with_broker(tmp_path, chart_repo, "1.0.0")
        app = root / "apps/shop-broker/app.yaml"
        app.write_text(app.read_text().replace(chart_repo.url, registry.url))
        env = {**tool_env, "SSL_CERT_FILE": str(registry.ca_file)}
        done = outpost(env, "app", "vendor", "shop-broker", "--repo", str(root))
        assert done.returncode == 0, done.stderr
    record = json.loads((root / "apps/shop-broker/vendor.lock.json").read_text())["versions"]
    assert record["1.0.0"]["chartDigest"] == sha256(archive)
    assert record["1.0.0"]["source"]["repository"] == registry.url
    assert (
        "max_connections ${maxConnections}"
        in (root / VENDORED / "1.0.0/configmap-shop-broker.yaml").read_text()
    )


def test_a_chart_archive_over_its_limit_or_a_fifo_in_the_output_is_an_error_naming_it(
    tmp_path: Path,
    chart_repo: ChartRepository,
    tool_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The archive helm pulls is read bounded (`MAX_CHART_ARCHIVE`): over the limit it is an
    error naming the chart and the limit, not a read of whatever the repository served. A FIFO
    where a vendored file goes is an error naming it, not a vendor run that never returns."""
    import os

    from reconciler.ci import vendor

    chart_repo.publish(CHART, "1.0.0")
    root = example_with_broker(tmp_path, chart_repo, "1.0.0")
    tools = vendor.Tools.find(tool_env)
    with monkeypatch.context() as patch:
        patch.setattr(vendor, "MAX_CHART_ARCHIVE", 64)
        with pytest.raises(vendor.VendorError) as refused:
            vendor.vendor(root, "shop-broker", None, tools)
    message = str(refused.value)
    assert "the archive helm pulled for shop-broker 1.0.0" in message
    assert "shop-broker-1.0.0.tgz: file is" in message and "the limit is 64 bytes" in message
    assert not (root / VENDORED).exists()  # nothing written

    target = root / VENDORED / "1.0.0"
    target.mkdir(parents=True)
    os.mkfifo(target / "configmap-shop-broker.yaml")
    done = outpost(tool_env, "app", "vendor", "shop-broker", "--repo", str(root))
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert f"{VENDORED}/1.0.0/configmap-shop-broker.yaml: is a named pipe (FIFO)" in done.stderr
