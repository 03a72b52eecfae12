"""The policies the repository ships: each has passing and failing cases, and they hold."""

from __future__ import annotations

import shutil
from datetime import date
from pathlib import Path

import pytest

from reconciler.ci.policy_tests import run_tests, untested
from reconciler.cli import main
from reconciler.core.loader import load_document
from reconciler.core.model import Repository
from reconciler.core.policy import load_policies, validate_policies
from reconciler.core.source import WorkdirTree

ROOT = Path(__file__).resolve().parents[2]
POLICY_FILES = sorted(p for p in (ROOT / "policies").glob("*.yaml") if p.name != "signers.yaml")
EXPECTED = {
    "image-digest",
    "image-registry",
    "no-latest-tag",
    "resource-limits",
    "host-access",
    "resources-fit",
    "devices-declared",
    "plant-update-windows",
    "no-plaintext-secrets",
}
TODAY = date(2026, 6, 1)


def _load(path: Path):
    doc = load_document(path.read_bytes(), path.relative_to(ROOT).as_posix())
    return load_policies([doc], today=TODAY)


def test_the_bundled_set_is_complete() -> None:
    names = {_load(p).policies[0].name for p in POLICY_FILES}
    assert names >= EXPECTED


@pytest.mark.parametrize("path", POLICY_FILES, ids=lambda p: p.stem)
def test_bundled_policy_compiles_and_passes_its_own_cases(path: Path) -> None:
    policies = _load(path)
    assert policies.findings == ()
    assert untested(policies) == []
    results = run_tests(policies)
    assert {r.expect for r in results} == {"pass", "fail"}
    failed = [str(r) for r in results if not r.ok]
    assert failed == []


@pytest.mark.parametrize("path", POLICY_FILES, ids=lambda p: p.stem)
def test_swapping_pass_and_fail_cases_makes_every_case_fail(path: Path, tmp_path: Path) -> None:
    """The cases discriminate: each pass case is accepted and each fail case rejected for real."""
    text = path.read_text()
    swapped = text.replace("    pass:\n", "    PASS:\n").replace("    fail:\n", "    pass:\n")
    swapped = swapped.replace("    PASS:\n", "    fail:\n")
    doc = load_document(swapped.encode(), "policies/swapped.yaml")
    results = run_tests(load_policies([doc], today=TODAY))
    assert results and not any(r.ok for r in results)


def test_outpost_policy_test_runs_them(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policy", "test", str(ROOT)]) == 0
    out = capsys.readouterr().out
    assert " 0 failed" in out


def test_example_fleet_is_clean_under_the_bundled_policies() -> None:
    repo = Repository(WorkdirTree(ROOT))
    findings = validate_policies(repo, today=TODAY)
    assert [f for f in findings if f.severity == "error"] == []


def _copy_example(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    for top in ("apps", "fleets", "sites", "policies"):
        shutil.copytree(ROOT / top, root / top)
    return root


def test_a_bad_manifest_is_reported_once_at_its_line_naming_the_sites(tmp_path: Path) -> None:
    root = _copy_example(tmp_path)
    manifest = root / "apps/node-metrics/manifests/daemonset.yaml"
    text = manifest.read_text()
    assert "image: ${images.exporter}" in text
    manifest.write_text(
        text.replace("image: ${images.exporter}", "image: prom/node-exporter:latest")
    )
    findings = validate_policies(Repository(WorkdirTree(root)), today=TODAY)
    rules = {f.rule for f in findings}
    assert {"image-digest", "image-registry", "no-latest-tag"} <= rules
    [digest] = [f for f in findings if f.rule == "image-digest"]
    assert digest.path == "apps/node-metrics/manifests/daemonset.yaml"
    assert "sites:" in digest.message  # one finding for every site that renders it


def test_plaintext_secret_in_an_unassigned_app_manifest_is_found(tmp_path: Path) -> None:
    root = _copy_example(tmp_path)
    (root / "apps/pos/manifests/token.yaml").write_text(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: hq-token\n  namespace: pos\n"
        "stringData:\n  token: hunter2\n"
    )
    findings = validate_policies(Repository(WorkdirTree(root)), today=TODAY)
    secrets = [f for f in findings if f.rule == "no-plaintext-secrets"]
    assert secrets and all(f.path == "apps/pos/manifests/token.yaml" for f in secrets)


def test_no_policies_in_the_repository_is_an_error(tmp_path: Path) -> None:
    root = _copy_example(tmp_path)
    for path in (root / "policies").glob("*.yaml"):
        if path.name != "signers.yaml":
            path.unlink()
    findings = validate_policies(Repository(WorkdirTree(root)), today=TODAY)
    assert [f.severity for f in findings] == ["error"]
    assert "no policies" in findings[0].message
