"""Rendered objects against the Kubernetes API: names the API server accepts, fields it knows."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from reconciler.ci.kube_schema import object_errors, schema_version
from reconciler.cli import main

ROOT = Path(__file__).resolve().parent.parent
CONFIGMAP = "apps/pos/manifests/configmap.yaml"


@pytest.fixture
def fleet(tmp_path: Path) -> Path:
    """A copy of the example fleet, whose fleets declare kubernetesVersion 1.31."""
    repo = tmp_path / "repo"
    for top in ("apps", "fleets", "sites", "policies"):
        shutil.copytree(ROOT / top, repo / top)
    shutil.copy(ROOT / ".sops.yaml", repo / ".sops.yaml")
    return repo


def validate(repo: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, list[dict[str, object]]]:
    code = main(["validate", str(repo), "-o", "json"])
    return code, [f for f in json.loads(capsys.readouterr().out) if f["severity"] == "error"]


def test_an_unknown_field_is_a_finding_once_for_every_site(
    fleet: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = fleet / CONFIGMAP
    manifest.write_text(manifest.read_text().replace("\ndata:", "\ndatta:\n  X: y\ndata:", 1))
    code, findings = validate(fleet, capsys)
    assert code == 1
    kube = [f for f in findings if f["rule"] == "kubernetes"]
    assert len(kube) == 1
    assert kube[0]["path"] == CONFIGMAP
    message = str(kube[0]["message"])
    assert message.startswith("ConfigMap 'pos-config': (object): Additional properties")
    assert "'datta' was unexpected" in message
    assert "the API schema of Kubernetes 1.31" in message
    assert "(at 10 sites:" in message


def test_a_url_in_a_name_is_refused_at_the_manifest_line(
    fleet: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = fleet / CONFIGMAP
    manifest.write_text(manifest.read_text().replace("name: pos-config", "name: ${hqEndpoint}", 1))
    code, findings = validate(fleet, capsys)
    assert code == 1
    names = [f for f in findings if "is not a valid Kubernetes name" in str(f["message"])]
    assert names and names[0]["path"] == CONFIGMAP and names[0]["line"] == 4
    assert "ConfigMap name 'https://pos-sync.hq.example.com'" in str(names[0]["message"])


def test_the_check_uses_the_newest_schema_not_newer_than_declared() -> None:
    version = schema_version("1.31")
    assert version is not None and version <= (1, 31)
    assert schema_version("1.0") is None


def test_kinds_without_a_schema_are_not_checked() -> None:
    version = schema_version("1.31")
    assert version is not None
    vm = {"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "metadata": {"name": "x"}}
    assert object_errors(vm, version) == ()
    bad = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "data": {"a": 1}}
    assert object_errors(bad, version) == ("data.a: 1 is not of type 'string', 'null'",)


def test_rbac_names_follow_their_own_rule(fleet: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A ClusterRole may be called system:aggregate-to-edit; a ConfigMap may not."""
    role = fleet / "apps/pos/manifests/role.yaml"
    role.write_text(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\n"
        "metadata:\n  name: pos:aggregate-to-view\nrules: []\n"
    )
    code, findings = validate(fleet, capsys)
    assert [f for f in findings if "name" in str(f["message"])] == []
    manifest = fleet / CONFIGMAP
    manifest.write_text(manifest.read_text().replace("name: pos-config", "name: pos:config", 1))
    code, findings = validate(fleet, capsys)
    assert code == 1
    assert any("ConfigMap name 'pos:config' is not a valid" in str(f["message"]) for f in findings)


def test_a_fleet_version_without_schemas_is_one_warning_whichever_shard_renders_its_sites(
    fleet: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """retail-us's sites sort last, so shard 1 of 3 (which owns findings about fleets)
    renders none of them: the warning is a fact about the fleet, not about a site."""
    path = fleet / "fleets/retail-us.yaml"
    path.write_text(
        path.read_text().replace('kubernetesVersion: "1.31"', 'kubernetesVersion: "1.0"')
    )
    line = next(
        n for n, text in enumerate(path.read_text().splitlines(), 1) if "kubernetesVersion" in text
    )

    def run(*extra: str) -> list[dict[str, object]]:
        main(["validate", str(fleet), "-o", "json", *extra])
        found: list[dict[str, object]] = json.loads(capsys.readouterr().out)
        return found

    whole = run()
    warnings = [f for f in whole if "not checked against Kubernetes" in str(f["message"])]
    assert [(w["path"], w["line"], w["severity"]) for w in warnings] == [
        ("fleets/retail-us.yaml", line, "warning")
    ]
    outputs = []
    for index in (1, 2, 3):
        out = tmp_path / f"shard-{index}.json"
        out.write_text(json.dumps(run("--shard", f"{index}/3")))
        outputs.append(str(out))
    assert run("--merge", *outputs) == whole


def test_the_fast_check_comes_in_later_and_judges_as_jsonschema_does() -> None:
    from reconciler.ci import kube_schema
    from reconciler.ci.kube_schema import FAST_AFTER

    version = schema_version("1.31")
    assert version is not None

    def config_map(index: int, **data: object) -> dict[str, object]:
        body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"cm-{index}"}}
        return {**body, "data": data or {"k": str(index)}}

    kube_schema._for.cache_clear()  # counted from this test's first object on
    schemas = kube_schema._for(version)
    for index in range(FAST_AFTER + 4):
        assert object_errors(config_map(10_000 + index), version) == ()
        # A run over a few objects never pays for compiling the fast check.
        assert (schemas.fast.get(("v1", "ConfigMap")) is not None) == (index >= FAST_AFTER)
    wrong = object_errors(config_map(1, k=7), version)  # the fast check says no: jsonschema
    assert wrong and wrong[0].startswith("data.k: 7 is not of type 'string'")


def test_a_shard_prints_the_same_bytes_in_every_process(fleet: Path) -> None:
    """A shard's findings are not collapsed across sites: ten findings that differ only by
    site must come out in one order, not in the order a set of them has in this process."""
    import os
    import subprocess
    import sys

    manifest = fleet / CONFIGMAP
    manifest.write_text(manifest.read_text().replace("\ndata:", "\ndatta:\n  X: y\ndata:", 1))
    outputs = set()
    shard_json = ("--shard", "1/1", "-o", "json")
    for seed in ("0", "1", "2", "3"):
        done = subprocess.run(
            [sys.executable, "-m", "reconciler.cli", "validate", str(fleet), *shard_json],
            capture_output=True,
            env={**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(ROOT)},
            check=False,
        )
        assert done.returncode == 1, done.stderr
        outputs.add(done.stdout)
    assert len(outputs) == 1
    found = json.loads(outputs.pop())
    per_site = [f for f in found if f["rule"] == "kubernetes" and f["path"] == CONFIGMAP]
    assert len({f["site"] for f in per_site}) == 10
