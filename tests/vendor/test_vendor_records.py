"""What ``outpost validate`` and ``outpost app vendor`` say about vendored output, without tools.

The record check (``check_records``) compares ``manifests/<version>/`` with
``vendor.lock.json`` and the recorded inputs with app.yaml: it must need neither helm nor
kustomize nor a network, so these tests run with neither on PATH. The splitting of a
rendered stream into files is a parser and is tested with hypothesis.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.ci.vendor import VendorError, check_records, split_objects
from reconciler.core.errors import RenderError
from reconciler.core.model import Repository
from reconciler.core.render import render_site
from reconciler.core.source import WorkdirTree

ROOT = Path(__file__).resolve().parents[2]
BROKER = "apps/mqtt-broker"
NO_TOOLS = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "HOME": "/nonexistent"}


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    for part in ("apps", "fleets", "sites", "policies", "schemas"):
        shutil.copytree(ROOT / part, root / part)
    return root


def findings(root: Path) -> list[str]:
    return [f"{f.location}: {f.message}" for f in check_records(Repository(WorkdirTree(root)))]


def outpost(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "reconciler.cli", *args],
        env=NO_TOOLS,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_example_fleet_matches_its_records(repo: Path) -> None:
    assert findings(repo) == []


def test_a_missing_an_extra_and_an_edited_file_are_each_named(repo: Path) -> None:
    base = repo / BROKER / "manifests/2.0.20"
    (base / "service-mqtt-broker.yaml").unlink()
    (base / "extra.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n")
    config = base / "configmap-mqtt-broker.yaml"
    config.write_text(config.read_text().replace("listener 1883", "listener 1884"))
    found = findings(repo)
    assert len(found) == 3, found
    assert any("service-mqtt-broker.yaml: is recorded" in f and "but missing" in f for f in found)
    assert any("extra.yaml: is not in the vendored output" in f for f in found)
    assert any("configmap-mqtt-broker.yaml: was edited by hand" in f for f in found)
    assert all("outpost app vendor mqtt-broker --version 2.0.20" in f for f in found)


def test_a_version_without_a_record_and_a_record_without_a_version(repo: Path) -> None:
    lock_path = repo / BROKER / "vendor.lock.json"
    lock = json.loads(lock_path.read_text())
    lock["versions"]["1.0.0"] = lock["versions"].pop("2.0.18")
    lock_path.write_text(json.dumps(lock))
    shutil.move(repo / BROKER / "manifests/2.0.18", repo / BROKER / "manifests/1.0.0")
    found = findings(repo)
    assert any(
        f.startswith(f"{BROKER}/app.yaml:") and "2.0.18 is not vendored" in f for f in found
    ), found
    assert any("records version 1.0.0, which app.yaml no longer lists" in f for f in found)


def test_a_changed_chart_folder_makes_its_output_stale(repo: Path) -> None:
    template = repo / BROKER / "chart/templates/service.yaml"
    template.write_text(template.read_text().replace("name: mqtt", "name: mqtt-tcp"))
    found = findings(repo)
    assert len(found) == 2, found  # both versions render chart 1.0.0
    assert all("apps/mqtt-broker/chart/ changed since version" in f for f in found)
    assert all("raise the version in apps/mqtt-broker/chart/Chart.yaml" in f for f in found)


def test_changed_values_make_the_output_stale(repo: Path) -> None:
    app = repo / BROKER / "app.yaml"
    app.write_text(
        app.read_text().replace(
            "      source: {version: 1.0.0}\n",
            "      source: {version: 1.0.0, values: {listenerPort: 8883}}\n",
            1,
        )
    )
    [found] = findings(repo)
    assert found.startswith(f"{BROKER}/app.yaml:")
    assert "2.0.18's source or values changed since it was vendored" in found


def test_a_broken_lock_file_is_a_finding_at_its_path(repo: Path) -> None:
    (repo / BROKER / "vendor.lock.json").write_text("{not json")
    [found] = findings(repo)
    assert found.startswith(f"{BROKER}/vendor.lock.json: not valid JSON")


def test_validate_reports_a_hand_edit_without_helm_on_path(repo: Path) -> None:
    shutil.copyfile(ROOT / ".sops.yaml", repo / ".sops.yaml")
    config = repo / BROKER / "manifests/2.0.20/configmap-mqtt-broker.yaml"
    config.write_text(config.read_text() + "  extra: key\n")
    done = outpost("validate", "--repo", str(repo), "--no-policies")
    assert done.returncode == 1
    assert f"{BROKER}/manifests/2.0.20/configmap-mqtt-broker.yaml: error: was edited by hand" in (
        done.stdout
    )


def test_a_version_that_was_never_vendored_does_not_render(repo: Path) -> None:
    shutil.rmtree(repo / BROKER / "manifests/2.0.20")
    with pytest.raises(RenderError) as caught:
        render_site(Repository(WorkdirTree(repo)), "plant-lyon")
    assert "run `outpost app vendor mqtt-broker --version 2.0.20`" in caught.value.message
    assert caught.value.mark is not None and caught.value.mark.path == f"{BROKER}/app.yaml"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("nope",), "no app 'nope'"),
        (("pos",), "app 'pos' has no spec.source"),
        (("mqtt-broker", "--version", "9.9.9"), "has no version '9.9.9'"),
        (("mqtt-broker",), "helm not found on PATH"),
        (("opcua-gateway",), "kustomize not found on PATH"),
        ((), "name the APP"),
    ],
)
def test_vendor_errors_say_what_to_do_and_exit_2(
    repo: Path, args: tuple[str, ...], expected: str
) -> None:
    done = outpost("app", "vendor", *args, "--repo", str(repo))
    assert done.returncode == 2, done.stderr
    assert expected in done.stderr
    assert "Traceback" not in done.stderr


_names = st.from_regex(r"[a-z][a-z0-9-]{0,20}", fullmatch=True)
_objects = st.lists(
    st.tuples(st.sampled_from(["ConfigMap", "Service", "Deployment"]), _names, _names),
    max_size=8,
    unique_by=lambda o: (o[0], o[1], o[2]),
    min_size=1,
)


@settings(max_examples=150, deadline=None)
@given(_objects)
def test_a_stream_splits_into_one_file_per_object(objects: list[tuple[str, str, str]]) -> None:
    docs = [
        {"apiVersion": "v1", "kind": k, "metadata": {"name": n, "namespace": ns}}
        for k, n, ns in objects
    ]
    text = "".join(
        f"---\n# Source: chart/templates/{i}.yaml\n{yaml.safe_dump(d)}" for i, d in enumerate(docs)
    )
    files = split_objects(text, "test")
    assert len(files) == len(docs)
    assert sorted(json.dumps(yaml.safe_load(f), sort_keys=True) for f in files.values()) == (
        sorted(json.dumps(d, sort_keys=True) for d in docs)
    )
    assert all(f.startswith(b"# Source: chart/templates/") for f in files.values())


def test_two_objects_of_one_kind_namespace_and_name_are_refused() -> None:
    doc = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a, namespace: b}\n"
    with pytest.raises(VendorError, match="two objects ConfigMap/a in namespace 'b'"):
        split_objects(doc + "---\n" + doc, "test")
    with pytest.raises(VendorError, match="has no objects"):
        split_objects("---\n# only a comment\n", "test")


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=400))
def test_any_text_is_split_or_refused_with_a_vendor_error(text: str) -> None:
    with contextlib.suppress(VendorError):
        split_objects(text, "test")


def test_a_changed_kustomize_base_makes_its_output_stale(repo: Path) -> None:
    base = repo / "apps/opcua-gateway/kustomize/deployment.yaml"
    base.write_text(base.read_text().replace("replicas: 1", "replicas: 2"))
    found = findings(repo)
    assert len(found) == 2, found
    assert all("apps/opcua-gateway/kustomize/ changed since version" in f for f in found)


def _app_with(source: dict[str, object], release_source: dict[str, object]) -> dict[str, object]:
    app = yaml.safe_load((ROOT / BROKER / "app.yaml").read_text())
    app["spec"]["source"] = source
    app["spec"]["versions"]["2.0.20"]["source"] = release_source
    return app


@pytest.mark.parametrize(
    ("source", "release_source", "valid"),
    [
        ({"helm": {"chart": "x", "path": "apps/x/chart"}}, {"version": "1.0.0"}, True),
        ({"helm": {"chart": "x", "repository": "https://charts.example.com"}}, {}, True),
        ({"helm": {"chart": "x", "repository": "oci://registry.example.com/c"}}, {}, True),
        ({"helm": {"chart": "x", "path": "a", "repository": "https://c.example.com"}}, {}, False),
        ({"helm": {"chart": "x"}}, {}, False),
        ({"helm": {"chart": "x", "path": "../outside"}}, {}, False),
        ({"helm": {"chart": "x", "path": "/etc"}}, {}, False),
        ({"helm": {"chart": "x", "repository": "ftp://c.example.com"}}, {}, False),
        ({"kustomize": {"path": "apps/x/base"}}, {"path": "apps/x/v2"}, True),
        ({"kustomize": {"path": "apps/x"}, "helm": {"chart": "x", "path": "y"}}, {}, False),
        ({"helm": {"chart": "x", "path": "p"}}, {"version": "latest"}, False),
        ({"helm": {"chart": "x", "path": "p"}}, {"chart": "y"}, False),
    ],
)
def test_the_app_schema_takes_one_source_of_a_clear_shape(
    source: dict[str, object], release_source: dict[str, object], valid: bool
) -> None:
    from reconciler.core.schemas import schema_errors

    errors = schema_errors("App", _app_with(source, release_source))
    assert (errors == []) is valid, errors


def test_a_parameter_a_new_version_introduces_does_not_break_sites_on_the_old_one(
    repo: Path,
) -> None:
    app = repo / BROKER / "app.yaml"
    text = app.read_text()
    release = text.split('    "2.0.20":\n')[1].split("  parameters:")[0]
    text = text.replace("  parameters:", '    "2.0.21":\n' + release + "  parameters:", 1)
    text = text.replace(
        "    required: [storageSize, maxConnections]",
        "      retainHours: {type: integer, minimum: 1}\n"
        "    required: [storageSize, maxConnections]",
    )
    app.write_text(
        text.replace("    maxConnections: 500\n", "    maxConnections: 500\n    retainHours: 24\n")
    )
    shutil.copytree(repo / BROKER / "manifests/2.0.20", repo / BROKER / "manifests/2.0.21")
    config = repo / BROKER / "manifests/2.0.21/configmap-mqtt-broker.yaml"
    config.write_text(config.read_text() + "    retain_hours ${retainHours}\n")

    def mosquitto_conf() -> str:
        rendered = render_site(Repository(WorkdirTree(repo)), "plant-lyon")
        [body] = [
            o.body
            for o in rendered.objects
            if o.key.name == "mqtt-broker" and o.key.kind == "ConfigMap"
        ]
        return str(body["data"]["mosquitto.conf"])

    assert "retain_hours" not in mosquitto_conf()  # still on 2.0.20: renders as before
    fleet = repo / "fleets/plants.yaml"
    fleet.write_text(
        fleet.read_text().replace(
            "mqtt-broker: {version: 2.0.20}", "mqtt-broker: {version: 2.0.21}"
        )
    )
    assert "retain_hours 24\n" in mosquitto_conf()

    # A parameter no version uses is still an error.
    app.write_text(
        app.read_text()
        .replace("retainHours: 24\n", "retainHours: 24\n    unusedKnob: 1\n")
        .replace(
            "      retainHours: {type: integer, minimum: 1}\n",
            "      retainHours: {type: integer, minimum: 1}\n      unusedKnob: {type: integer}\n",
        )
    )
    with pytest.raises(RenderError, match="'unusedKnob' of app 'mqtt-broker' is declared but no"):
        mosquitto_conf()


def test_a_huge_or_fifo_vendored_file_is_a_finding_naming_it_and_the_limit(repo: Path) -> None:
    """Vendored files are read bounded: the size is checked before a byte is read, and a FIFO
    in place of a manifest is refused at once instead of blocking ``outpost validate``."""
    import os

    from reconciler.ci import vendor

    base = repo / BROKER / "manifests/2.0.20"
    with (base / "configmap-mqtt-broker.yaml").open("r+b") as handle:
        handle.truncate(vendor.MAX_VENDORED_FILE + 1)  # sparse: nothing needs reading
    (base / "service-mqtt-broker.yaml").unlink()
    os.mkfifo(base / "service-mqtt-broker.yaml")
    done = outpost("validate", "--repo", str(repo), "--no-policies")
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    size, limit = f"{vendor.MAX_VENDORED_FILE + 1:,}", f"{vendor.MAX_VENDORED_FILE:,}"
    assert (
        f"{BROKER}/manifests/2.0.20/configmap-mqtt-broker.yaml: error: file is {size} bytes; "
        f"the limit is {limit} bytes"
    ) in done.stdout
    assert (
        f"{BROKER}/manifests/2.0.20/service-mqtt-broker.yaml: error: is a named pipe (FIFO)"
    ) in done.stdout
