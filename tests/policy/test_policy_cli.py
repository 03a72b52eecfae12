"""``outpost policy test``: exit codes and file:line of failing cases."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.cli import main

GOOD = """\
apiVersion: outpost/v1
kind: Policy
metadata:
  name: replicas
spec:
  severity: deny
  match:
    resources: [{apiGroups: [apps], kinds: [Deployment]}]
  validations:
    - expression: "object.spec.replicas <= 3"
  tests:
    pass:
      - object: {apiVersion: apps/v1, kind: Deployment, spec: {replicas: 2}}
    fail:
      - name: too many
        object: {apiVersion: apps/v1, kind: Deployment, spec: {replicas: 5}}
"""


def write(tmp_path: Path, text: str, name: str = "replicas.yaml") -> Path:
    folder = tmp_path / "policies"
    folder.mkdir(exist_ok=True)
    path = folder / name
    path.write_text(text)
    return path


def test_all_cases_pass(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(tmp_path, GOOD)
    assert main(["policy", "test", str(tmp_path)]) == 0
    assert "2 passed, 0 failed" in capsys.readouterr().out


def test_a_failing_case_names_the_policy_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write(tmp_path, GOOD.replace("replicas: 5", "replicas: 3"))
    assert main(["policy", "test", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "FAIL policies/replicas.yaml:15: replicas fail[0] 'too many'" in out


def test_a_case_that_only_errors_does_not_count_as_a_rejection(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write(tmp_path, GOOD.replace("spec: {replicas: 5}", "spec: {}"))
    assert main(["policy", "test", str(tmp_path / "policies" / "replicas.yaml")]) == 1
    assert "evaluation failed" in capsys.readouterr().out


def test_a_case_the_policy_does_not_match_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write(tmp_path, GOOD.replace("kind: Deployment, spec: {replicas: 2}", "kind: Pod, spec: {}"))
    assert main(["policy", "test", str(tmp_path)]) == 1
    assert "not selected by spec.match.resources" in capsys.readouterr().out


def test_an_expression_that_does_not_compile_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write(tmp_path, GOOD.replace("object.spec.replicas <= 3", "object.spec.replicas <="))
    assert main(["policy", "test", str(tmp_path)]) == 1
    assert "policies/replicas.yaml:10" in capsys.readouterr().out


def test_a_policy_without_fail_cases_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write(tmp_path, GOOD.split("    fail:")[0])
    assert main(["policy", "test", str(tmp_path)]) == 1
    assert "needs at least one pass and one fail case" in capsys.readouterr().out


def test_no_policies_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "policies").mkdir()
    assert main(["policy", "test", str(tmp_path)]) == 2
    assert "no policies" in capsys.readouterr().err


def test_policy_test_cluster_without_a_reachable_cluster_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        "clusters: [{name: c, cluster: {server: 'https://127.0.0.1:9', "
        "insecure-skip-tls-verify: true}}]\n"
        "users: [{name: u, user: {token: t}}]\n"
        "contexts: [{name: c, context: {cluster: c, user: u}}]\n"
    )
    root = Path(__file__).resolve().parents[2]
    code = main(["policy", "test", str(root), "--cluster", "--kubeconfig", str(kubeconfig)])
    out, err = capsys.readouterr()
    assert code == 2, out + err
    assert "outpost policy test --cluster:" in err
    assert "127.0.0.1:9" in err
    assert "policy tests: 41 passed, 0 failed" in out  # Outpost's own run is still reported


def test_policy_test_cluster_needs_a_kubeconfig(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("KUBECONFIG", raising=False)
    root = Path(__file__).resolve().parents[2]
    assert main(["policy", "test", str(root), "--cluster"]) == 2
    assert "--cluster needs a kubeconfig" in capsys.readouterr().err
