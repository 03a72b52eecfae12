"""``outpost validate --changed-since`` fed what an attacker or a tired operator would, in the
files its own readers take: ``.sops.yaml`` (read for the selected sites' rules only, its
shape checked whole) and the changed files git's grep leaves to this process.

Each case runs the CLI as a process with a timeout (a read that waits on a FIFO fails the
test instead of blocking the suite); the answer is a finding naming the file (exit 1),
never a traceback. The example fleet, committed, with one site edited, is the repository.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from gitcli import git
from hostile_files import CASES, Format, plant

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 60
EDITED = "de-ber-0042"
OTHER = "de-fra-0088"


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    for part in ("sites", "fleets", "apps", "policies", "schemas"):
        shutil.copytree(ROOT / part, root / part)
    shutil.copy(ROOT / ".sops.yaml", root / ".sops.yaml")
    git(tmp_path, "init", "-q", "-b", "main", str(root))
    git(root, "add", "-A")
    git(root, "commit", "-qm", "base")
    overrides = root / "sites" / EDITED / "overrides.yaml"
    overrides.write_text(overrides.read_text() + "# edited\n")
    return root


def validate(repo: Path) -> tuple[int, list[dict[str, object]], str]:
    argv = [sys.executable, "-m", "reconciler.cli", "validate", "--repo", str(repo)]
    done = subprocess.run(
        [*argv, "--changed-since", "HEAD", "-o", "json"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=False,
    )
    assert "Traceback" not in done.stdout + done.stderr, done.stderr
    assert "internal error" not in done.stderr, done.stderr
    findings = json.loads(done.stdout) if done.stdout.strip() else []
    return done.returncode, findings, done.stderr


def test_the_edited_example_validates_clean(repo: Path) -> None:
    code, findings, err = validate(repo)
    assert (code, findings) == (0, []), err


SOPS_CONFIG = Format(
    nested=lambda depth: "creation_rules: " + "[" * depth + "]" * depth + "\n",
    wrong_type="creation_rules: 5\n",
    not_utf8=b"creation_rules:\n  - path_regex: \xff\xfe\n",
)


def _hostile(path: Path, case: str) -> None:
    plant(path, case, SOPS_CONFIG, link_to=path.parent / "fleets")


@pytest.mark.parametrize("case", CASES)
def test_a_hostile_sops_config_is_a_finding_at_it(repo: Path, case: str) -> None:
    _hostile(repo / ".sops.yaml", case)
    code, findings, err = validate(repo)
    assert code == 1, err
    assert any(f["path"] == ".sops.yaml" and f["rule"] == "secrets" for f in findings), findings


@pytest.mark.parametrize("case", ["fifo", "symlink", "gigabyte"])
def test_a_hostile_changed_site_file_is_a_finding_not_a_hang(repo: Path, case: str) -> None:
    """Another site's tracked site.yaml, changed into something no reader should follow: git's
    grep of the index does not see it, this process reads it (bounded, no link followed) and
    the site, changed too, is reported at that file."""
    _hostile(repo / "sites" / OTHER / "site.yaml", case)
    code, findings, err = validate(repo)
    assert code == 1, err
    assert any(f["path"] == f"sites/{OTHER}/site.yaml" for f in findings), findings


def test_a_year_9999_in_a_changed_site_is_a_finding_at_its_line(repo: Path) -> None:
    site = repo / "sites" / EDITED / "site.yaml"
    text = site.read_text()
    assert "from: 2027-01-15" in text
    site.write_text(text.replace("from: 2027-01-15", "from: 9999-12-31"))
    code, findings, err = validate(repo)
    assert code == 1, err
    line = 1 + text[: text.index("from: 2027-01-15")].count("\n")
    assert any(f["path"] == f"sites/{EDITED}/site.yaml" and f["line"] == line for f in findings), (
        findings
    )
