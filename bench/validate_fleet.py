"""Validation of a large fleet: full run, one-site change, peak memory, against kubeconform.

Generates a repository of N sites (default 1,000 and 10,000) from the example
fleet: its apps, fleets and policies as they are, its 12 sites, and synthetic
sites cloned from them (stores mostly, a few percent plants with VMs), each with
its own id, machine ids and serials, and one in ten with other POS values, so
most stores render the same objects and some do not. Then, each in a fresh
process, so every figure includes imports and start-up as the CLI would:

  full       validate_tree over every site: files, schemas, references and every
             CEL policy (render + check), the figure the issue asks ≤ 30 s for;
  changed    one site's overrides edited in the working tree; the sites a change
             since HEAD can affect (reconciler.ci.validate.sites_changed_since when it
             is available, else git status + reconciler.ci.diff.affected_sites), then
             the same validation for those sites only (goal ≤ 2 s);
  ten-site   full validation of a 10-site repository, for "about the time of a
             10-site repository";
  kube       the full validation plus every rendered object against the Kubernetes
             API schemas of the fleets' kubernetesVersion (ci.kube_schema), as
             `outpost validate` runs it; printed as a ratio to full;
  baseline   with --baseline REV: REV's code (git archive into a temporary folder)
             and this tree's code validate the same repository, alternately,
             --rounds times each (without the Kubernetes schema check, which REV
             lacks): the cost of what changed since REV, as CPU seconds of the
             process and its workers (less sensitive to a busy machine than wall
             time) and wall time, medians and their ratio;
  kubeconform  `kubeconform -strict -summary` over the same rendered manifests
             (rendered and written beforehand, not timed), against standalone
             JSON schemas built from the kubernetes-validate package's bundled
             ones. KubeVirt VirtualMachines and Multus NetworkAttachmentDefinitions
             have no schema there: kubeconform runs with -ignore-missing-schemas
             and skips them. kubeconform schema-checks only; Outpost renders,
             schema-checks the Outpost documents, checks references and runs
             every policy.

Peak memory is each process's ru_maxrss (resource.getrusage); a large run renders
and checks in forked worker processes, whose own peak (the largest worker's, most
of it pages shared with the parent) is printed next to it.

Usage: python bench/validate_fleet.py [--sites 1000 10000] [--keep DIR]
                                     [--baseline REV [--rounds 3]]
Needs kubeconform on PATH or in ~/go/bin
(GOFLAGS=-mod=mod go install github.com/yannh/kubeconform/cmd/kubeconform@latest).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TODAY = "2026-06-01"

_CHILD = r"""
import json, resource, sys, time
t0 = time.perf_counter()
from datetime import date
from pathlib import Path
from reconciler.core.source import WorkdirTree
from reconciler.core.validate import validate_tree
from reconciler.core.policy import PolicyCache, validate_policies
phase, root = sys.argv[1], Path(sys.argv[2])
today = date.fromisoformat(sys.argv[3])
cache = PolicyCache()

objects = None
if phase == "kube":
    from reconciler.ci.kube_schema import object_check
    objects = object_check()

def policies(repo, sites):
    if objects is None:
        return validate_policies(repo, sites, today=today, cache=cache)
    return validate_policies(repo, sites, today=today, cache=cache, objects=objects)

t1 = time.perf_counter()
sites = None
if phase == "changed":
    import subprocess
    from reconciler.core.model import Repository
    try:
        from reconciler.ci.validate import sites_changed_since
        sites = sites_changed_since(root, "HEAD")
        how = "sites_changed_since"
    except Exception:
        from reconciler.ci.diff import affected_sites
        argv = ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=all"]
        out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
        changed = [line[3:] for line in out.splitlines() if line[3:]]
        sites = sorted(affected_sites(changed, Repository(WorkdirTree(root))))
        how = "git status + affected_sites"
else:
    how = "all sites"
findings = validate_tree(WorkdirTree(root), extra=[policies], sites=sites)
t2 = time.perf_counter()
print(json.dumps({
    "seconds": t2 - t1, "with_imports": t2 - t0, "findings": len(findings),
    "errors": sum(f.severity == "error" for f in findings),
    "sites": len(sites) if sites is not None else None,
    "how": how, "hits": cache.hits, "misses": cache.misses,
    "cpu": sum(
        getattr(resource.getrusage(who), field)
        for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
        for field in ("ru_utime", "ru_stime")
    ),
    "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "workers_maxrss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    "sample": [f"{f.location}: {f.message[:160]} [{f.rule}]" for f in findings[:5]],
}))
"""

_RENDER = r"""
import sys, time
from pathlib import Path
from reconciler.core.model import Repository
from reconciler.core.source import WorkdirTree
from reconciler.core.render import dump_yaml, render_site
root, out = Path(sys.argv[1]), Path(sys.argv[2])
repo = Repository(WorkdirTree(root))
kinds = set()
count = 0
for site in repo.site_ids:
    rendered = render_site(repo, site)
    docs = []
    for obj in rendered.objects:
        kinds.add((obj.key.group, obj.key.version, obj.key.kind))
        docs.append(dump_yaml(obj.body))
        count += 1
    (out / f"{site}.yaml").write_text("---\n".join(docs))
print(count)
for g, v, k in sorted(kinds):
    print(g, v, k)
"""


def _run_child(code: str, *args: str, cwd: Path = ROOT) -> str:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run(
        [sys.executable, "-c", code, *args],
        check=True,
        capture_output=True,
        text=True,
        cwd=cwd,  # the code validated is the one in ``cwd`` (first on sys.path)
        env=env,
    )
    return result.stdout


def _phase(phase: str, root: Path, code: Path = ROOT) -> dict[str, Any]:
    started = time.perf_counter()
    data: dict[str, Any] = json.loads(_run_child(_CHILD, phase, str(root), TODAY, cwd=code))
    data["wall"] = time.perf_counter() - started
    return data


# --------------------------------------------------------------------------- the fleet


def _templates() -> list[str]:
    return sorted(p.name for p in (ROOT / "sites").iterdir() if (p / "site.yaml").is_file())


def generate(n: int, root: Path, rng: random.Random) -> None:
    """The example fleet plus synthetic sites up to ``n`` in total."""
    for top in ("apps", "fleets", "policies", "schemas"):
        if (ROOT / top).is_dir():
            shutil.copytree(ROOT / top, root / top)
    templates = _templates()
    for site in templates:
        shutil.copytree(ROOT / "sites" / site, root / "sites" / site)
    stores = [t for t in templates if not t.startswith("plant-")]
    plants = [t for t in templates if t.startswith("plant-")]
    for i in range(n - len(templates)):
        template = rng.choice(plants) if rng.random() < 0.03 else rng.choice(stores)
        prefix = template.rsplit("-", 1)[0] if not template.startswith("plant-") else "plant"
        site = f"{prefix}-g{i:05d}"
        source = ROOT / "sites" / template
        target = root / "sites" / site
        target.mkdir(parents=True)
        for path in source.rglob("*.yaml"):
            if "secrets" in path.parts:
                continue  # encrypted to the template site's key; not this site's
            relative = path.relative_to(source)
            text = path.read_text()
            text = re.sub(rf"(name:\s*){re.escape(template)}\b", rf"\g<1>{site}", text)
            if relative.name == "hardware.yaml":
                text = re.sub(
                    r"machineId: [0-9a-f]{32}",
                    lambda _m: f"machineId: {rng.randbytes(16).hex()}",
                    text,
                )
                text = re.sub(
                    r"serial: ([A-Za-z0-9-]+)",
                    lambda m: f"serial: {m.group(1)[:4]}{rng.randrange(16**6):06X}",
                    text,
                )
            if relative.name == "overrides.yaml" and rng.random() < 0.1:
                text = re.sub(r"lanes: \d+", f"lanes: {rng.choice([8, 16, 24])}", text)
            (target / relative).parent.mkdir(parents=True, exist_ok=True)
            (target / relative).write_text(text)


def git_commit(root: Path) -> None:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "bench",
        "GIT_AUTHOR_EMAIL": "bench@example.com",
        "GIT_COMMITTER_NAME": "bench",
        "GIT_COMMITTER_EMAIL": "bench@example.com",
    }
    for argv in (
        ["git", "init", "-q", "-b", "main"],
        ["git", "add", "-A"],
        ["git", "-c", "commit.gpgsign=false", "commit", "-q", "-m", "fleet"],
    ):
        subprocess.run(argv, cwd=root, check=True, env=env)


def change_one_site(root: Path) -> str:
    """Edit one synthetic store's overrides (or site.yaml) in the working tree."""
    for folder in sorted((root / "sites").iterdir()):
        overrides = folder / "overrides.yaml"
        if "-g" in folder.name and overrides.is_file() and "lanes:" in overrides.read_text():
            text = overrides.read_text()
            overrides.write_text(re.sub(r"lanes: \d+", "lanes: 30", text, count=1))
            return folder.name
    raise SystemExit("no synthetic store with pos lanes in its overrides to change")


# --------------------------------------------------------------------------- kubeconform


def _kubeconform() -> str | None:
    found = shutil.which("kubeconform")
    if found:
        return found
    candidate = Path.home() / "go" / "bin" / "kubeconform"
    return str(candidate) if candidate.is_file() else None


def standalone_schemas(kinds: list[tuple[str, str, str]], out: Path) -> list[str]:
    """kubernetes-validate's schemas for ``kinds``, with the $defs they use inlined.

    Its files reference a shared ``/api/_definitions.json``, which kubeconform cannot
    resolve from a local folder; each schema gets the definitions it reaches instead.
    """
    import kubernetes_validate

    base = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
    version = sorted(
        (p for p in base.iterdir() if p.name.endswith("-local-strict")),
        key=lambda p: tuple(int(x) for x in p.name[1:].split("-")[0].split(".")),
    )[-1]
    definitions = json.loads((version / "_definitions.json").read_text())["$defs"]
    prefix = "/api/_definitions.json#/$defs/"
    missing = []
    for group, ver, kind in kinds:
        suffix = f"-{group.split('.')[0]}-{ver}" if group else f"-{ver}"
        name = f"{kind.lower()}{suffix}.json"
        path = version / name
        if not path.is_file():
            missing.append(f"{group + '/' if group else ''}{ver} {kind}")
            continue
        schema = json.loads(path.read_text())
        needed: dict[str, Any] = {}
        stack = [schema]
        while stack:
            node = stack.pop()
            if isinstance(node, dict):
                ref = node.get("$ref")
                if isinstance(ref, str) and ref.startswith((prefix, "#/$defs/")):
                    key = ref.rsplit("/", 1)[1]
                    node["$ref"] = "#/$defs/" + key
                    if key not in needed:
                        needed[key] = json.loads(json.dumps(definitions[key]))
                        stack.append(needed[key])
                stack.extend(node.values())
            elif isinstance(node, list):
                stack.extend(node)
        schema["$defs"] = needed
        (out / name).write_text(json.dumps(schema))
    return missing


def kubeconform_run(root: Path, work: Path) -> dict[str, Any] | None:
    binary = _kubeconform()
    if binary is None:
        return None
    manifests = work / "manifests"
    schemas = work / "schemas"
    manifests.mkdir()
    schemas.mkdir()
    lines = _run_child(_RENDER, str(root), str(manifests)).splitlines()
    count = int(lines[0])
    kinds = [
        tuple(line.split(" ")) if line.count(" ") == 2 else ("", *line.split())
        for line in lines[1:]
    ]
    missing = standalone_schemas([(k[0], k[1], k[2]) for k in kinds], schemas)
    argv = [
        binary,
        "-strict",
        "-summary",
        "-ignore-missing-schemas",
        "-n",
        str(os.cpu_count() or 2),
        "-schema-location",
        str(schemas) + "/{{ .ResourceKind }}{{ .KindSuffix }}.json",
        str(manifests),
    ]
    started = time.perf_counter()
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    summary = (result.stdout.strip().splitlines() or [""])[-1]
    return {
        "seconds": seconds,
        "objects": count,
        "summary": summary,
        "exit": result.returncode,
        "no_schema": missing,
        "errors": [line for line in result.stdout.splitlines() if " is invalid" in line][:3],
    }


# --------------------------------------------------------------------------- main


def _peak(data: dict[str, Any]) -> str:
    workers = data.get("workers_maxrss_mb") or 0
    extra = f" (workers {workers:.0f} MiB each at most)" if workers else ""
    return f"peak {data['maxrss_mb']:.0f} MiB{extra}"


def checkout(revision: str) -> Path:
    """``revision``'s files in a temporary folder (git archive: no worktree, no checkout)."""
    target = Path(tempfile.mkdtemp(prefix="outpost-bench-baseline-"))
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", revision], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return target


def compare(baseline: Path, root: Path, rounds: int) -> None:
    """The same full validation by the baseline's code and by this tree's, alternately."""
    import statistics

    # The baseline may not know fields added since (a fleet's kubernetesVersion): both
    # validate the fleets without them, so both do the same work; restored afterwards.
    saved = {path: path.read_text() for path in (root / "fleets").glob("*.yaml")}
    for path, text in saved.items():
        path.write_text(re.sub(r"(?m)^  kubernetesVersion:.*\n", "", text))
    runs: dict[str, list[dict[str, Any]]] = {"baseline": [], "this tree": []}
    try:
        for _ in range(rounds):
            runs["baseline"].append(_phase("full", root, baseline))
            runs["this tree"].append(_phase("full", root))
    finally:
        for path, text in saved.items():
            path.write_text(text)
    for name, found in runs.items():
        if any(r["findings"] for r in found):
            print(f"    {name}: {found[0]['findings']} findings: {found[0]['sample'][:2]}")
    median = {
        name: {key: statistics.median(r[key] for r in found) for key in ("cpu", "seconds")}
        for name, found in runs.items()
    }
    for name, m in median.items():
        print(f"{name:<22}{m['seconds']:7.2f} s  ({m['cpu']:.1f} s CPU, median of {rounds})")
    base, this = median["baseline"], median["this tree"]
    print(
        f"ratio this tree / baseline = {this['cpu'] / base['cpu']:.3f} CPU, "
        f"{this['seconds'] / base['seconds']:.3f} wall"
    )


def bench(
    n: int,
    keep: Path | None,
    rng: random.Random,
    ten: dict[str, Any],
    baseline: Path | None = None,
    rounds: int = 3,
) -> None:
    work = Path(tempfile.mkdtemp(prefix=f"outpost-bench-{n}-", dir=keep))
    root = work / "repo"
    started = time.perf_counter()
    generate(n, root, rng)
    git_commit(root)
    print(
        f"\n== {n:,} sites  "
        f"(generated and committed in {time.perf_counter() - started:.1f} s: {root})"
    )
    full = _phase("full", root)
    print(
        f"full validation       {full['seconds']:7.2f} s  "
        f"({full['with_imports']:.2f} s with imports, "
        f"{full['wall']:.2f} s process)  {_peak(full)}  "
        f"{full['findings']} findings ({full['errors']} errors)  "
        f"policy cache {full['hits']:,} hits / {full['misses']:,} evaluations"
    )
    for line in full["sample"]:
        print(f"    {line}")
    kube = _phase("kube", root)
    print(
        f"full + Kubernetes API  {kube['seconds']:7.2f} s  ({kube['cpu']:.1f} s CPU)  "
        f"{_peak(kube)}  {kube['findings']} findings ({kube['errors']} errors)"
    )
    print(
        f"ratio with Kubernetes API schemas / full = {kube['cpu'] / full['cpu']:.3f} CPU "
        f"({full['cpu']:.1f} s CPU without), {kube['seconds'] / full['seconds']:.3f} wall"
    )
    peer = kubeconform_run(root, work)
    if peer is None:
        print("kubeconform           not found (see the docstring for how to install it)")
    else:
        print(
            f"kubeconform           {peer['seconds']:7.2f} s  "
            f"over {peer['objects']:,} rendered objects "
            f"(exit {peer['exit']}): {peer['summary']}"
        )
        if peer["no_schema"]:
            print(f"    skipped, no schema: {', '.join(peer['no_schema'])}")
        for line in peer["errors"]:
            print(f"    {line[:200]}")
        print(
            f"ratio full validation / kubeconform = {full['seconds'] / peer['seconds']:.2f} "
            "(Outpost renders, checks Outpost schemas, references and CEL policies; "
            "kubeconform schema-checks pre-rendered manifests)"
        )
    if baseline is not None:
        compare(baseline, root, rounds)
    site = change_one_site(root)
    changed = _phase("changed", root)
    print(
        f"--changed-since HEAD  {changed['seconds']:7.2f} s  "
        f"({changed['with_imports']:.2f} s with imports, "
        f"{changed['wall']:.2f} s process)  {_peak(changed)}  "
        f"{changed['sites']} site(s) via {changed['how']} (edited {site})  "
        f"{changed['findings']} findings"
    )
    print(f"ratio --changed-since / 10-site repository = {changed['seconds'] / ten['seconds']:.2f}")
    if keep is None:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sites", type=int, nargs="+", default=[1_000, 10_000])
    parser.add_argument("--keep", type=Path, help="generate under DIR and keep it")
    parser.add_argument("--seed", type=int, default=4)
    parser.add_argument("--baseline", metavar="REV", help="compare with REV's code")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of --baseline")
    args = parser.parse_args()
    baseline = checkout(args.baseline) if args.baseline else None
    rng = random.Random(args.seed)
    print(f"machine: {os.cpu_count()} cores; python {sys.version.split()[0]}")
    with tempfile.TemporaryDirectory(prefix="outpost-bench-10-") as tmp:
        small = Path(tmp) / "repo"
        generate(10, small, rng)
        ten = _phase("full", small)
        print(
            f"10-site repository    {ten['seconds']:7.2f} s  ({ten['wall']:.2f} s process)  "
            f"{_peak(ten)}  ({len(list((small / 'sites').iterdir()))} sites)"
        )
    for n in args.sites:
        bench(n, args.keep, rng, ten, baseline, args.rounds)
    if baseline is not None:
        shutil.rmtree(baseline, ignore_errors=True)


if __name__ == "__main__":
    main()
