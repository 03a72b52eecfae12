"""The pull-request workflow installs this project, by its own distribution name.

`outpost` on PyPI is an unrelated project: the distribution is `outpost-gitops` and it
installs the `outpost` command. The test runs the workflow's own install line, read
from `.github/workflows/outpost.yml`, in a fresh virtual environment against a copy of
this checkout, as the workflow's runner would with its default (no OUTPOST_PACKAGE).

What it does not do, and why: it does not install the dependencies (pygit2,
kubernetes, ...): `PIP_NO_DEPS` keeps the test at seconds. The build itself runs as on
the runner, isolated, with the build backend pyproject.toml asks for (setuptools ≥ 68,
from the package index or pip's cache: the venv's bundled setuptools 65 cannot build a
wheel without the `wheel` package, which nothing here has). A venv with
`--system-site-packages` would find the dependencies already installed, but it also
sees the development machine's editable install (its import hook would answer
`import reconciler`), so the test could not tell which copy ran. The dependency list is
checked from the built metadata instead, and `outpost --version` and `--help` run in the
venv, which needs none of them: the command line imports its libraries only when a
command runs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
import venv
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW = ROOT / ".github/workflows/outpost.yml"


def install_step() -> tuple[str, dict[str, str]]:
    """The `run` line of the workflow's install step and the job's env it reads."""
    workflow = yaml.safe_load(WORKFLOW.read_text())
    job = workflow["jobs"]["check"]
    steps = [s for s in job["steps"] if "pip install" in str(s.get("run", ""))]
    assert len(steps) == 1, steps
    return steps[0]["run"], job["env"]


def test_the_workflow_names_our_distribution_not_the_other_outpost() -> None:
    line, env = install_step()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["name"] == "outpost-gitops"
    assert project["scripts"] == {"outpost": "reconciler.cli:main"}
    # No default that pip would resolve on PyPI to someone else's package.
    assert "outpost==" not in WORKFLOW.read_text()
    assert env["OUTPOST_PACKAGE"] == "${{ vars.OUTPOST_PACKAGE }}"
    assert '"${OUTPOST_PACKAGE:-.}"' in line


def test_the_install_line_installs_the_outpost_command(tmp_path: Path) -> None:
    line, _ = install_step()
    checkout = tmp_path / "checkout"
    shutil.copytree(
        ROOT,
        checkout,
        ignore=shutil.ignore_patterns(
            ".git", "tests", "bench", "__pycache__", "*.egg-info", "build", ".mypy_cache"
        ),
    )
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True, system_site_packages=False).create(env_dir)
    bin_dir = env_dir / "bin"
    environ = {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "HOME": os.environ.get("HOME", str(tmp_path)),  # pip's cache of the build backend
        "PIP_NO_DEPS": "1",
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "OUTPOST_PACKAGE": "",  # the workflow's default: the repository variable is unset
    }
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", line],
        cwd=checkout,
        env=environ,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "outpost 0.1.0 (outpost-gitops 0.1.0)" in done.stdout  # the line's own check

    python = bin_dir / "python"
    probe = subprocess.run(
        [
            str(python),
            "-c",
            "import importlib.metadata as m, reconciler, pathlib;"
            "d = m.distribution('outpost-gitops');"
            "print(pathlib.Path(reconciler.__file__).resolve());"
            "print([e.value for e in d.entry_points if e.name == 'outpost']);"
            "print(sorted(r.split(';')[0] for r in d.requires or []));"
            "print(any(f.name.endswith('.schema.json') for f in d.files))",
        ],
        env=environ,
        cwd=tmp_path,  # not the checkout: `python -c` would import from the cwd
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    where, entry, requires, schemas = probe.stdout.splitlines()
    assert Path(where).is_relative_to(env_dir.resolve())  # the venv's copy, not a checkout
    assert entry == "['reconciler.cli:main']"
    assert "pygit2>=1.15" in requires and "kubernetes>=30" in requires
    assert schemas == "True"
    help_text = subprocess.run(
        [str(bin_dir / "outpost"), "--help"],
        env=environ,
        cwd=tmp_path,  # not the checkout: `python -c` would import from the cwd
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert "validate" in help_text and "Example" in help_text
    assert sys.version_info >= (3, 11)
