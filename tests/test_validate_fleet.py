"""A generated fleet of a few hundred sites with planted errors: the findings are exactly the
planted ones, the same in one process, in forked workers, and merged from CI shards.

The fleet is the example repository cloned to 300 sites (``tools.fleetgen``, as the
validation bench makes 10,000), clean before ``plant`` breaks it: a schema error, a
machine id, a node key and an age recipient shared across far-apart sites (so across
shards), a literal password and a parameter the app does not declare, a policy violation
and a Kubernetes API schema error from one store's patch, a Kubernetes API schema error in
an app's manifest (one finding for every site that runs it), and plaintext Secrets in app
manifests, rendered and not.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from reconciler.ci.validate import Shard, merge_findings, shard_of, validate_repository
from reconciler.core import _fork, loader
from reconciler.core.findings import Finding
from reconciler.core.policy import _parallel
from tools import fleetgen

ROOT = Path(__file__).resolve().parent.parent
SITES = 300


@pytest.fixture(scope="module")
def fleet(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Path, list[fleetgen.Planted]]]:
    root = tmp_path_factory.mktemp("fleet") / "repo"
    fleetgen.generate(SITES, root, random.Random(7))
    planted = fleetgen.plant(root)
    fleetgen.git_commit(root)
    yield root, planted


def _validate(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "reconciler.cli", "validate", "--repo", str(root), *args],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=600,
    )


def _findings(output: str) -> list[Finding]:
    return [Finding(**item) for item in json.loads(output)]


def _matches(finding: Finding, expected: fleetgen.Planted) -> bool:
    return (
        finding.rule == expected.rule
        and finding.site == expected.site
        and (not expected.path or finding.path == expected.path)
        and expected.says in finding.message
    )


def test_a_clean_generated_fleet_has_no_findings(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    fleetgen.generate(40, root, random.Random(3))
    result = _validate(root, "-o", "json")
    assert (result.returncode, _findings(result.stdout)) == (0, []), result.stderr


def test_the_findings_are_the_planted_ones(fleet: tuple[Path, list[fleetgen.Planted]]) -> None:
    root, planted = fleet
    result = _validate(root, "-o", "json")
    assert result.returncode == 1, result.stderr
    found = _findings(result.stdout)
    unexpected = [f for f in found if not any(_matches(f, p) for p in planted)]
    missing = [p for p in planted if not any(_matches(f, p) for f in found)]
    assert (unexpected, missing) == ([], [])
    # each planted error is found once (a finding shared by many sites is one finding)
    assert sorted(sum(_matches(f, p) for f in found) for p in planted) == [1] * len(planted)
    aggregated = [f for f in found if f.rule == "kubernetes" and not f.site]
    assert len(aggregated) == 1 and "sites: " in aggregated[0].message


def test_forked_workers_find_what_one_process_finds(
    fleet: tuple[Path, list[fleetgen.Planted]], monkeypatch: pytest.MonkeyPatch
) -> None:
    root, _ = fleet
    today = datetime.now(UTC).date()
    monkeypatch.setattr(_fork, "workers_for", lambda items, minimum: 1)
    alone = validate_repository(root, today=today).findings
    monkeypatch.setattr(_fork, "workers_for", lambda items, minimum: 2)
    monkeypatch.setattr(_parallel, "PARALLEL_MIN_SITES", 0)
    split = validate_repository(root, today=today).findings
    assert split == alone


def test_a_forked_run_leaves_the_sites_documents_in_the_workers(
    fleet: tuple[Path, list[fleetgen.Planted]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The workers check what spans sites from what they gathered (machine ids, node keys,
    fleets, age recipients), not from documents this process parses again: the planted
    shared machine id, node key and recipient are found, and no site.yaml or hardware.yaml
    is parsed here (what a worker parses is counted in the worker's memory, not here)."""
    root, planted = fleet
    parsed_here: list[str] = []
    convert = loader._Converter.__init__

    def recording(self: loader._Converter, path: str, yaml_loader: object, **options: bool) -> None:
        parsed_here.append(path)
        convert(self, path, yaml_loader, **options)

    monkeypatch.setattr(loader._Converter, "__init__", recording)
    monkeypatch.setattr(_fork, "workers_for", lambda items, minimum: 2)
    monkeypatch.setattr(_parallel, "PARALLEL_MIN_SITES", 0)
    found = validate_repository(root, today=datetime.now(UTC).date()).findings
    across = [p for p in planted if p.says.startswith(("declared by", "the key of", "with site"))]
    assert len(across) == 3
    assert all(any(_matches(f, p) for f in found) for p in across)
    assert any(path.startswith("apps/") for path in parsed_here)  # the shared folders are
    assert not [p for p in parsed_here if p.endswith(("/site.yaml", "/hardware.yaml"))]


@pytest.mark.parametrize("count", [1, 3, 7])
def test_shards_merge_into_the_unsharded_run(
    fleet: tuple[Path, list[fleetgen.Planted]], tmp_path: Path, count: int
) -> None:
    root, _ = fleet
    whole = {fmt: _validate(root, "-o", fmt) for fmt in ("json", "sarif")}
    outputs = []
    for index in range(1, count + 1):
        result = _validate(root, "--shard", f"{index}/{count}", "-o", "json")
        assert result.returncode in (0, 1), result.stderr
        path = tmp_path / f"shard-{index}.json"
        path.write_text(result.stdout)
        outputs.append(_findings(result.stdout))
    # every finding lands in exactly one shard: its own site's, or shard 1
    names = sorted(p.name for p in (root / "sites").iterdir())
    owner = {
        name: index for index in range(1, count + 1) for name in Shard(index, count).block(names)
    }
    for index, found in enumerate(outputs, start=1):
        assert {shard_of(f, owner) for f in found} <= {index}
    union = [f for found in outputs for f in found]
    assert len(union) == len(set(union))
    assert merge_findings(union) == _findings(whole["json"].stdout)
    files = [str(tmp_path / f"shard-{index}.json") for index in range(1, count + 1)]
    for fmt, result in whole.items():
        merged = _validate(root, "--merge", *files, "-o", fmt)
        assert (merged.returncode, merged.stdout) == (result.returncode, result.stdout)


def test_forked_shards_merge_into_the_unsharded_run(
    fleet: tuple[Path, list[fleetgen.Planted]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A shard of a large fleet loads, renders and checks its sites in forked workers, as
    a whole run does (here forced on the planted fleet): the same findings, merged."""
    from reconciler.core import validate as core_validate

    root, _ = fleet
    today = datetime.now(UTC).date()
    whole = validate_repository(root, today=today).findings
    monkeypatch.setattr(_fork, "workers_for", lambda items, minimum: 2)
    monkeypatch.setattr(core_validate, "PARALLEL_MIN_FILES", 0)
    union = [
        f
        for index in (1, 2, 3)
        for f in validate_repository(root, today=today, shard=Shard(index, 3)).findings
    ]
    assert merge_findings(union) == whole
    assert {f.rule for f in whole} >= {"reference", "host-access", "kubernetes", "render"}


def test_shards_of_a_sites_folder_with_a_file_and_a_link_merge_into_the_unsharded_run(
    tmp_path: Path,
) -> None:
    root = tmp_path / "repo"
    fleetgen.generate(6, root, random.Random(3))
    outside = tmp_path / "outside"
    (outside / "deep").mkdir(parents=True)
    (outside / "site.yaml").write_text("kind: Site\n")
    (outside / "deep" / "link").symlink_to(outside)
    (root / "sites" / "linked").symlink_to(outside, target_is_directory=True)
    (root / "sites" / "stray.yaml").write_text("a: 1\n")
    fleetgen.git_commit(root)
    whole = _validate(root, "-o", "json")
    assert {f.path for f in _findings(whole.stdout)} == {"sites/linked", "sites/stray.yaml"}
    files = []
    for index in range(1, 4):
        result = _validate(root, "--shard", f"{index}/3", "-o", "json")
        assert result.returncode in (0, 1), result.stderr
        # the linked folder is reported as a link, never walked or rendered through
        assert all(f.path in ("sites/linked", "sites/stray.yaml") for f in _findings(result.stdout))
        files.append(tmp_path / f"shard-{index}.json")
        files[-1].write_text(result.stdout)
    merged = _validate(root, "--merge", *map(str, files), "-o", "json")
    assert (merged.returncode, merged.stdout) == (whole.returncode, whole.stdout)


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("0/4", "1 ≤ I ≤ N"),
        ("5/4", "1 ≤ I ≤ N"),
        ("2", "expected I/N"),
        ("a/b", "expected I/N"),
        ("1/0", "1 ≤ I ≤ N"),
        ("-1/4", "expected I/N"),
    ],
)
def test_a_bad_shard_is_a_usage_error(tmp_path: Path, value: str, says: str) -> None:
    result = _validate(ROOT, f"--shard={value}")
    assert result.returncode == 2
    assert says in result.stderr and "Traceback" not in result.stderr
    assert result.stdout == ""


def test_a_merge_of_something_else_is_an_error(tmp_path: Path) -> None:
    bad = tmp_path / "shard-1.json"
    bad.write_text('{"runs": []}')
    result = _validate(ROOT, "--merge", str(bad))
    assert result.returncode == 2
    assert str(bad) in result.stderr and "-o json" in result.stderr
    assert _validate(ROOT, "--merge", str(tmp_path / "none.json")).returncode == 2


_FORKED_SHARD = """
import json, sys
from datetime import date
from pathlib import Path
from reconciler.ci.validate import Shard, validate_repository
from reconciler.core import _fork

_fork.workers_for = lambda items, minimum: 2  # forked peeks, whatever the fleet's size
index, count = map(int, sys.argv[2].split("/"))
run = validate_repository(Path(sys.argv[1]), today=date(2026, 12, 1), shard=Shard(index, count))
print(json.dumps(sorted((f.path, f.message) for f in run.findings)))
"""


def test_a_shard_peeking_at_other_sites_in_its_workers_passes_over_hostile_files(
    tmp_path: Path,
) -> None:
    """Another site's hardware.yaml a FIFO, another's site.yaml a sparse gigabyte and its
    hardware.yaml a link out of the tree: the shard's forked peeks at them neither block,
    read them whole nor follow the link, and the shard those sites belong to reports each
    at its file."""
    from hostile_files import Format, plant

    root = tmp_path / "repo"
    fleetgen.generate(6, root, random.Random(3))
    fleetgen.git_commit(root)
    sites = sorted(p.name for p in (root / "sites").iterdir())
    yaml_form = Format(lambda depth: "[" * depth + "]" * depth, "5\n", b"a: \xff\n")
    fifo = plant(root / "sites" / sites[-1] / "hardware.yaml", "fifo", yaml_form, root)
    big = plant(root / "sites" / sites[-2] / "site.yaml", "gigabyte", yaml_form, root)
    secret = tmp_path / "outside.yaml"
    secret.write_text((root / "sites" / sites[0] / "hardware.yaml").read_text())
    link = plant(root / "sites" / sites[-2] / "hardware.yaml", "symlink", yaml_form, secret)
    found = {}
    for shard in ("1/3", "3/3"):
        done = subprocess.run(
            [sys.executable, "-c", _FORKED_SHARD, str(root), shard],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            check=False,
        )
        assert done.returncode == 0, done.stderr
        found[shard] = json.loads(done.stdout)
    mine = {str(p.relative_to(root)) for p in (fifo, big, link)}
    assert found["1/3"] == []
    assert mine <= {path for path, _ in found["3/3"]}
    # the link, holding the first site's machine id, is reported as a link, never followed
    # to a machine id declared twice
    said = [message for path, message in found["3/3"] if path == str(link.relative_to(root))]
    assert said and all("link" in message for message in said), said
