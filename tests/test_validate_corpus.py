"""The bad-input corpus: every broken repository is refused with its exact finding, file and line.

Each folder under tests/corpus/ (but _base) overlays ``files/`` onto a copy of the
valid ``_base`` repository and deletes the paths in ``delete.txt``; ``expect.yaml``
holds the exit code and the exact set of findings ``outpost validate`` must print.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import yaml

from reconciler.cli import main

CORPUS = Path(__file__).parent / "corpus"
CASES = sorted(p.name for p in CORPUS.iterdir() if p.is_dir() and not p.name.startswith("_"))


def build_case(name: str, target: Path) -> Path:
    repo = target / "repo"
    shutil.copytree(CORPUS / "_base", repo)
    case = CORPUS / name
    files = case / "files"
    if files.exists():
        for source in files.rglob("*"):
            if source.is_file():
                dest = repo / source.relative_to(files)
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, dest)
    delete = case / "delete.txt"
    if delete.exists():
        for line in delete.read_text().split():
            (repo / line).unlink()
    return repo


def run_validate(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> tuple[int, list[dict[str, object]]]:
    code = main(["validate", str(repo), "--no-policies", "-o", "json"])
    out = capsys.readouterr().out
    return code, json.loads(out)


def test_base_is_clean(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(CORPUS / "_base", repo)
    assert run_validate(repo, capsys) == (0, [])


def test_corpus_is_large_enough() -> None:
    assert len(CASES) >= 30


@pytest.mark.parametrize("name", CASES)
def test_case(name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    expect = yaml.safe_load((CORPUS / name / "expect.yaml").read_text())
    code, findings = run_validate(build_case(name, tmp_path), capsys)
    got = [
        {k: f[k] for k in ("path", "line", "rule", "message")}
        for f in findings
        if f["severity"] == "error"
    ]
    assert got == expect["findings"]
    assert code == expect["exit"]


def test_text_output_names_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = build_case("memory-4GB", tmp_path)
    assert main(["validate", str(repo), "--no-policies"]) == 1
    out = capsys.readouterr().out
    assert out.startswith("sites/st-0001/hardware.yaml:13: error: spec.nodes.0.memory: '4GB'")


def test_github_output_is_a_workflow_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = build_case("bad-timezone", tmp_path)
    assert main(["validate", str(repo), "--no-policies", "-o", "github"]) == 1
    out = capsys.readouterr().out.strip()
    assert out.startswith("::error file=sites/st-0001/site.yaml,line=9,title=outpost schema::")
    assert "Europe/Berln" in out


def test_symlink_in_tree_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(CORPUS / "_base", repo)
    os.symlink("/etc/passwd", repo / "sites" / "st-0001" / "vms.yaml")
    code, findings = run_validate(repo, capsys)
    assert code == 1
    assert [(f["path"], f["rule"]) for f in findings] == [("sites/st-0001/vms.yaml", "file")]
    assert "symbolic link" in str(findings[0]["message"])


def test_oversized_file_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(CORPUS / "_base", repo)
    site = repo / "sites" / "st-0001" / "site.yaml"
    site.write_text(site.read_text() + "# " + "x" * (1024 * 1024) + "\n")
    code, findings = run_validate(repo, capsys)
    assert code == 1
    assert findings[0]["path"] == "sites/st-0001/site.yaml"
    assert "the limit is 1,048,576 bytes" in str(findings[0]["message"])


def test_missing_path_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(tmp_path / "nope"), "--no-policies"]) == 2
    assert "is not a directory" in capsys.readouterr().err


def test_an_internal_error_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A defect (not the input's fault) exits 2, names the file read last, stack on --debug."""
    import reconciler.core.validate

    repo = tmp_path / "repo"
    shutil.copytree(CORPUS / "_base", repo)
    real = reconciler.core.validate.validate_tree

    def broken(tree: object, **kwargs: object) -> object:
        tree.read("sites/st-0001/site.yaml")  # type: ignore[attr-defined]
        raise TypeError("unsupported operand")

    monkeypatch.setattr(reconciler.core.validate, "validate_tree", broken)
    assert main(["validate", str(repo), "--no-policies"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "internal error (last file read: sites/st-0001/site.yaml): TypeError" in err
    assert "Traceback" not in err
    assert main(["validate", str(repo), "--no-policies", "--debug"]) == 2
    assert "Traceback" in capsys.readouterr().err
    monkeypatch.setattr(reconciler.core.validate, "validate_tree", real)
