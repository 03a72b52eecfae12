"""`outpost validate` over a generated fleet, as whole processes, against kubeconform.

A fleet of N sites is generated from the example repository (``tools.fleetgen``: its
apps, fleets and policies, and sites cloned from its 12, each with its own ids, keys and
recipient, so it validates clean as a real fleet does; at 10,000 sites ``.sops.yaml``
outgrows the 1 MiB file cap, one finding). Then, alternately, ``--rounds`` times:

  outpost      ``python -m reconciler.cli validate --repo FLEET -o json``, a fresh process
               each round with no cache of an earlier run (Outpost keeps none): walks the
               tree, loads every YAML file with its line map, checks every document against
               its Outpost schema and every reference, the secrets (plaintext scan, age
               recipients, .sops.yaml), vendored output, rollout records, renders every
               site, runs every CEL policy and checks every rendered object against the
               Kubernetes API schema of its fleet's version (kubernetes-validate's);
  kubeconform  ``kubeconform -strict -summary -ignore-missing-schemas -n CORES`` over the
               same objects, rendered beforehand into one file per site (not timed),
               against kubernetes-validate's schemas made standalone (not timed): a schema
               check of each object, nothing else. KubeVirt VirtualMachines have no schema
               there; both sides skip them.

Per side: wall time, CPU time (user + system of the process and every process it waited
for: ``os.wait4``'s rusage), and peak memory two ways: the sum of the proportional set
size (PSS: a page shared by k processes counts 1/k) over the process and its workers,
sampled every 20 ms from ``/proc/<pid>/smaps_rollup`` — what the run costs the machine,
the figure the issue's 200 MiB is held to — and the largest single process's RSS
(``ru_maxrss``). Medians of the rounds; the ratio outpost / kubeconform of the medians.
The timed rounds are not sampled: reading smaps_rollup walks a process's page tables,
CPU taken from the two cores the measured run has, and more of it the larger the
process. Peak PSS comes from one more, sampled, round of each side after them.

Outpost's code is byte-compiled first (``compileall``, as pip installs it) and its
processes may write byte-code (``PYTHONDONTWRITEBYTECODE`` is dropped from their
environment), as in ``bench/validate_changed.py``: otherwise every round, and every
forked worker importing a module after the fork, would measure Python's compiler.

Then shards (``--shards 4``): each ``outpost validate --shard I/N -o json`` as its own
process, against 1/N of the whole run plus start-up (start-up: the same command on a
12-site repository, median of the rounds). Last, the scaling table over the sizes and a
100,000-site estimate from a least-squares line through the measured points.

Usage: python bench/validate_fleet.py [--sites 1000 2000 5000 10000] [--rounds 3]
                                      [--shards 4] [--work DIR]
``--work DIR`` keeps the generated fleets (DIR/<n>/) and reuses them on the next run.
The machine should be quiet: other load inflates both sides, but not equally.
Needs kubeconform on PATH or in ~/go/bin
(GOFLAGS=-mod=mod go install github.com/yannh/kubeconform/cmd/kubeconform@latest).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tools import fleetgen  # noqa: E402
from tools.proctree import pss_kib, tree_pids  # noqa: E402

_RENDER = r"""
import sys
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
    print(g or "-", v, k)
"""


@dataclass
class Run:
    """One process: wall and CPU seconds, peak PSS of its tree and largest RSS, MiB."""

    wall: float
    cpu: float
    pss: float
    rss: float
    exit: int
    out: str = ""


def outpost_env() -> dict[str, str]:
    """The environment of Outpost's processes: this tree's code, byte-code written."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    return {**env, "PYTHONPATH": str(ROOT)}


def compile_code() -> None:
    """This tree's package byte-compiled, as an installed package is."""
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "reconciler")], check=True)


def measure(argv: list[str], *, cwd: Path = ROOT, sample: bool = True) -> Run:
    """Run ``argv`` to the end: wall, CPU of its whole tree, peak tree PSS, largest RSS.

    ``sample`` False: no PSS sampling (``pss`` 0), for the timed rounds (see the module).
    """
    env = outpost_env()
    sampled = sample
    with tempfile.TemporaryFile("w+") as out:
        started = time.perf_counter()
        process = subprocess.Popen(
            argv, cwd=cwd, env=env, stdout=out, stderr=subprocess.DEVNULL, text=True
        )
        peak = 0
        done = threading.Event()

        def sample() -> None:
            nonlocal peak
            while not done.is_set():
                peak = max(peak, sum(pss_kib(pid) for pid in tree_pids(process.pid)))
                done.wait(0.02)

        sampler = threading.Thread(target=sample if sampled else done.wait, daemon=True)
        sampler.start()
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
        done.set()
        sampler.join()
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        return Run(
            wall=wall,
            cpu=usage.ru_utime + usage.ru_stime,
            pss=peak / 1024,
            rss=usage.ru_maxrss / 1024,
            exit=process.returncode,
            out=out.read(),
        )


def outpost(root: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "reconciler.cli", "validate", "--repo", str(root), *args]


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
    version = base / "v1.31.0-local-strict"  # the version the example fleets declare
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


def prepare_kubeconform(root: Path, work: Path) -> tuple[list[str], int, list[str]] | None:
    """(argv, objects, kinds without a schema) for kubeconform over ``root``'s render."""
    binary = _kubeconform()
    if binary is None:
        return None
    manifests, schemas = work / "manifests", work / "schemas"
    shutil.rmtree(manifests, ignore_errors=True)
    shutil.rmtree(schemas, ignore_errors=True)
    manifests.mkdir(parents=True)
    schemas.mkdir()
    env = outpost_env()
    lines = subprocess.run(
        [sys.executable, "-c", _RENDER, str(root), str(manifests)],
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
    ).stdout.splitlines()
    kinds = [tuple(line.split(" ")) for line in lines[1:]]
    missing = standalone_schemas(
        [("" if k[0] == "-" else k[0], k[1], k[2]) for k in kinds], schemas
    )
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
    return argv, int(lines[0]), missing


# --------------------------------------------------------------------------- one size


def _median(runs: list[Run]) -> Run:
    return Run(
        wall=statistics.median(r.wall for r in runs),
        cpu=statistics.median(r.cpu for r in runs),
        pss=statistics.median(r.pss for r in runs),
        rss=statistics.median(r.rss for r in runs),
        exit=runs[0].exit,
    )


def _with_peak(timed: Run, sampled: Run) -> Run:
    """The timed rounds' figures with the peak memory of the sampled round."""
    return Run(timed.wall, timed.cpu, sampled.pss, sampled.rss, timed.exit, timed.out)


def _line(name: str, run: Run) -> str:
    peak = f"peak {run.pss:5.0f} MiB PSS (tree)" if run.pss else "peak PSS not sampled"
    return (
        f"{name:<14}{run.wall:7.2f} s wall {run.cpu:7.2f} s CPU  "
        f"{peak}, {run.rss:4.0f} MiB largest RSS  exit {run.exit}"
    )


def fleet(n: int, work: Path) -> Path:
    root = work / str(n) / "repo"
    if (root / ".git").is_dir():
        return root
    shutil.rmtree(root.parent, ignore_errors=True)
    started = time.perf_counter()
    fleetgen.generate(n, root, random.Random(4))
    fleetgen.git_commit(root)
    print(f"   (generated and committed in {time.perf_counter() - started:.0f} s: {root})")
    return root


def bench(n: int, work: Path, rounds: int) -> dict[str, Any]:
    root = fleet(n, work)
    peer = prepare_kubeconform(root, work / str(n))
    files = sum(1 for _ in (root / "sites").rglob("*.yaml"))
    print(f"\n== {n:,} sites ({files:,} site files)")
    runs: dict[str, list[Run]] = {"outpost": [], "kubeconform": []}
    for _ in range(rounds):
        runs["outpost"].append(measure(outpost(root, "-o", "json"), sample=False))
        if peer is not None:
            runs["kubeconform"].append(measure(peer[0], sample=False))
    first = json.loads(runs["outpost"][0].out)
    errors = sum(f["severity"] == "error" for f in first)
    mine = _with_peak(_median(runs["outpost"]), measure(outpost(root, "-o", "json")))
    print(_line("outpost", mine) + f"  {len(first)} findings ({errors} errors)")
    for finding in first[:3]:
        print(f"    {finding['path']}:{finding['line']}: {finding['message'][:110]}")
    result: dict[str, Any] = {"sites": n, "outpost": mine}
    if peer is None:
        print("kubeconform   not found (see the docstring for how to install it)")
        return result
    theirs = _with_peak(_median(runs["kubeconform"]), measure(peer[0]))
    summary = (runs["kubeconform"][0].out.strip().splitlines() or [""])[-1]
    print(_line("kubeconform", theirs) + f"  {summary}")
    if peer[2]:
        print(f"    no schema, skipped by both: {', '.join(peer[2])}")
    print(
        f"ratio outpost / kubeconform: {mine.wall / theirs.wall:.2f} wall, "
        f"{mine.cpu / theirs.cpu:.2f} CPU, {mine.pss / max(theirs.pss, 1):.1f} peak PSS "
        f"(median of {rounds}; outpost also renders {peer[1]:,} objects and checks its own "
        "documents, references, secrets and policies)"
    )
    result["kubeconform"] = theirs
    result["objects"] = peer[1]
    return result


def shards(n: int, work: Path, count: int, rounds: int, whole: Run) -> None:
    root = fleet(n, work)
    small = fleet(12, work)
    startup = _median([measure(outpost(small, "-o", "json"), sample=False) for _ in range(rounds)])
    print(f"\n== {n:,} sites in {count} shards (each its own process, one after the other)")
    print(_line("12 sites", startup) + "  (start-up: imports, schemas, policies)")
    times = []
    for index in range(1, count + 1):
        run = measure(outpost(root, "--shard", f"{index}/{count}", "-o", "json"), sample=False)
        times.append(run)
        print(_line(f"shard {index}/{count}", run) + f"  {len(json.loads(run.out))} findings")
    expected = whole.wall / count + startup.wall
    print(
        f"slowest shard {max(r.wall for r in times):.2f} s wall, mean "
        f"{statistics.mean(r.wall for r in times):.2f} s; whole / {count} + start-up = "
        f"{expected:.2f} s; shards' CPU together {sum(r.cpu for r in times):.1f} s "
        f"against {whole.cpu:.1f} s unsharded"
    )


def _fit(points: list[tuple[float, float]]) -> tuple[float, float]:
    """Least-squares line (intercept, slope) through ``points``."""
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    mx, my = statistics.mean(xs), statistics.mean(ys)
    slope = sum((x - mx) * (y - my) for x, y in points) / sum((x - mx) ** 2 for x in xs)
    return my - slope * mx, slope


def table(results: list[dict[str, Any]], count: int) -> None:
    print("\n== scaling (medians)")
    print(
        "| sites | outpost wall | outpost CPU | outpost peak PSS | kubeconform wall "
        "| kubeconform CPU | kubeconform peak | ratio (wall) |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        o, k = r["outpost"], r.get("kubeconform")
        theirs = (
            f"{k.wall:.2f} s | {k.cpu:.2f} s | {k.pss:.0f} MiB | {o.wall / k.wall:.2f}"
            if k
            else "– | – | – | –"
        )
        print(f"| {r['sites']:,} | {o.wall:.2f} s | {o.cpu:.2f} s | {o.pss:.0f} MiB | {theirs} |")
    if len(results) < 2:
        return
    for what in ("wall", "cpu", "pss"):
        base, slope = _fit([(r["sites"], getattr(r["outpost"], what)) for r in results])
        unit = "MiB" if what == "pss" else "s"
        print(
            f"outpost {what}: {base:.2f} {unit} + {slope * 1000:.3f} {unit} per 1,000 sites; "
            f"100,000 sites ≈ {base + slope * 100_000:.0f} {unit}"
            + (
                f" (in {count} shards ≈ {base + slope * 100_000 / count:.0f} {unit} each)"
                if what == "wall"
                else ""
            )
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sites", type=int, nargs="+", default=[1_000, 2_000, 5_000, 10_000])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--shards", type=int, default=4, help="0: no shard timings")
    parser.add_argument("--work", type=Path, help="keep the generated fleets here, reuse them")
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} cores; python {sys.version.split()[0]}")
    work = args.work or Path(tempfile.mkdtemp(prefix="outpost-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    compile_code()
    try:
        results = [bench(n, work, args.rounds) for n in args.sites]
        if args.shards:
            shards(args.sites[-1], work, args.shards, args.rounds, results[-1]["outpost"])
        table(results, args.shards or 1)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
