"""Benchmark: apply 200 objects with ResourceManager and with ``kubectl apply --server-side``.

Measures, in one run, on a test control plane started for the run (tools.testcluster):

- apply: the same objects (ConfigMaps, Services, Deployments, plus their Namespace)
  into a fresh namespace per run, by ``outpost`` (ResourceManager) and by kubectl;
- re-apply: the same objects again, nothing changed (the steady state of a store),
  outpost as the agent runs it (objects its fingerprints show untouched are not sent)
  and with every object sent (``skip_untouched=False``, the raw server-side apply path);
- drift: ``ResourceManager.drift`` against ``kubectl diff --server-side`` (both dry-run
  every object against the live one).

Both tools run as fresh processes, as an agent tick and a kubectl call do, so the
times include interpreter or binary start-up, kubeconfig loading and discovery;
kubectl's discovery cache is warmed first (its usual state), outpost discovers lazily
every time. Rounds alternate which tool goes first, the cluster is left to settle
(every Deployment's Pods Running) before each measurement and each run's namespace is
deleted (and gone) before the next run, so neither tool pays for the other's
controller churn. Times are medians over the rounds; CPU is the tool
process's own user+system time, MB its peak resident set.

Goal: apply no slower than kubectl (ratio ≤ 1).

Run: python bench/apply.py [--objects 200] [--rounds 3] [--workers 4]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

IMAGE = "registry.example.com/pos/server@sha256:" + "c" * 64


def slice_objects(namespace: str, count: int) -> list[dict[str, Any]]:
    """A store-like mix: half ConfigMaps, a quarter Services, a quarter Deployments."""
    objects: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}
    ]
    deployments = services = count // 4
    for i in range(count - deployments - services):
        objects.append(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": f"settings-{i}", "namespace": namespace},
                "data": {"store.properties": f"lane={i}\ncurrency=EUR\n" + "x" * 512},
            }
        )
    for i in range(services):
        objects.append(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": f"app-{i}", "namespace": namespace},
                "spec": {
                    "selector": {"app": f"app-{i}"},
                    "ports": [{"port": 80, "targetPort": 8080}],
                },
            }
        )
    for i in range(deployments):
        objects.append(
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": f"app-{i}", "namespace": namespace},
                "spec": {
                    "replicas": 1,
                    "selector": {"matchLabels": {"app": f"app-{i}"}},
                    "template": {
                        "metadata": {"labels": {"app": f"app-{i}"}},
                        "spec": {
                            "containers": [
                                {
                                    "name": "app",
                                    "image": IMAGE,
                                    "env": [{"name": "LANE", "value": str(i)}],
                                    "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}},
                                }
                            ]
                        },
                    },
                },
            }
        )
    return objects


# -- the outpost side, run in a child process ------------------------------------------


def child(argv: list[str]) -> int:
    """``bench/apply.py --child MODE KUBECONFIG FILE WORKERS``: one ResourceManager call."""
    mode, kubeconfig, path, workers = argv
    from reconciler.node.apply import Cluster, ResourceManager

    objects = json.loads(Path(path).read_text())["items"]
    cluster = Cluster.from_kubeconfig(kubeconfig, pool_size=max(8, int(workers)))
    namespace = objects[0]["metadata"]["name"]
    manager = ResourceManager(
        cluster, site="bench", inventory_namespace=f"{namespace}-inv", workers=int(workers)
    )
    if mode in ("apply", "apply-all"):
        result = manager.apply(objects, revision="bench", skip_untouched=mode == "apply")
        print(json.dumps({"created": len(result.created), "unchanged": len(result.unchanged)}))
    else:
        print(json.dumps({"drifted": len(manager.drift(objects))}))
    return 0


# -- measuring ----------------------------------------------------------------------------


def timed(
    argv: list[str], env: dict[str, str], ok: Callable[[int], bool]
) -> tuple[float, float, float, str]:
    """Run a process; (wall seconds, its CPU seconds, its peak RSS in MB, stdout)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        child = subprocess.Popen(argv, env=env, stdout=out, stderr=err)
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - start
        child.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if not ok(child.returncode):
            raise SystemExit(f"{argv[0]} failed ({child.returncode}):\n{err.read().decode()}")
        # ru_maxrss is in KiB on Linux
        return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, out.read().decode()


def settle(kubectl: list[str], env: dict[str, str], namespaces: list[str]) -> None:
    """Wait (≤ 120 s) until every Pod of the benchmark's Deployments is Running."""
    deadline = time.monotonic() + 120
    while namespaces and time.monotonic() < deadline:
        pending = 0
        for namespace in namespaces:
            out = subprocess.run(
                [*kubectl, "get", "deploy", "-n", namespace, "-o", "json"],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            for item in json.loads(out)["items"]:
                status = item.get("status", {})
                if status.get("availableReplicas", 0) < item["spec"].get("replicas", 1):
                    pending += 1
        if not pending:
            return
        time.sleep(1)
    time.sleep(1)


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        return child(sys.argv[2:])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args()

    from tools.testcluster import running

    with (
        tempfile.TemporaryDirectory(prefix="outpost-bench-apply-") as scratch,
        running(Path(scratch) / "cluster") as plane,
    ):
        env = {**os.environ, **plane.env()}
        cache = Path(scratch) / "kubectl-cache"
        kubectl = [
            str(plane.bin_dir / "kubectl"),
            "--kubeconfig",
            str(plane.kubeconfig),
            "--cache-dir",
            str(cache),
        ]
        subprocess.run([*kubectl, "api-resources"], env=env, capture_output=True, check=True)
        outpost = [sys.executable, str(Path(__file__).resolve()), "--child"]

        times: dict[str, list[tuple[float, float, float]]] = {}
        touched: list[str] = []

        def record(name: str, wall: float, cpu: float, rss: float) -> None:
            times.setdefault(name, []).append((wall, cpu, rss))

        for round_ in range(args.rounds):
            order = ["outpost", "kubectl"] if round_ % 2 == 0 else ["kubectl", "outpost"]
            for tool in order:
                namespace = f"bench-{tool[0]}-{uuid.uuid4().hex[:6]}"
                path = Path(scratch) / f"{namespace}.json"
                path.write_text(
                    json.dumps(
                        {
                            "apiVersion": "v1",
                            "kind": "List",
                            "items": slice_objects(namespace, args.objects),
                        }
                    )
                )
                for step in ("apply", "re-apply", "re-apply-all", "drift"):
                    if tool == "kubectl" and step == "re-apply-all":
                        continue  # kubectl always sends every object: "re-apply" is its row
                    settle(kubectl, env, touched)
                    if tool == "outpost":
                        mode = {"drift": "drift", "re-apply-all": "apply-all"}.get(step, "apply")
                        wall, cpu, rss, out = timed(
                            [*outpost, mode, str(plane.kubeconfig), str(path), str(args.workers)],
                            env,
                            lambda code: code == 0,
                        )
                        result = json.loads(out)
                        expect = {"apply": "created", "drift": "drifted"}.get(step, "unchanged")
                        want = 0 if step == "drift" else args.objects + 1
                        assert result[expect] == want, (step, result)
                    elif step == "drift":
                        # kubectl diff exits 0 (no differences) or 1 (differences); >1 is an error
                        wall, cpu, rss, out = timed(
                            [
                                *kubectl,
                                "diff",
                                "--server-side",
                                "--force-conflicts",
                                "--field-manager=kubectl-bench",
                                "-f",
                                str(path),
                            ],
                            env,
                            lambda code: code in (0, 1),
                        )
                    else:
                        wall, cpu, rss, _ = timed(
                            [
                                *kubectl,
                                "apply",
                                "--server-side",
                                "--field-manager=kubectl-bench",
                                "-f",
                                str(path),
                            ],
                            env,
                            lambda code: code == 0,
                        )
                    record(f"{step}/{tool}", wall, cpu, rss)
                    if step == "apply":
                        touched.append(namespace)
                # the nodes hold 330 Pods: clear this run's objects before the next one
                subprocess.run(
                    [
                        *kubectl,
                        "delete",
                        "namespace",
                        namespace,
                        f"{namespace}-inv",
                        "--ignore-not-found",
                        "--wait=true",
                        "--timeout=300s",
                    ],
                    env=env,
                    capture_output=True,
                    check=True,
                    timeout=330,
                )
                touched.clear()

        def median(name: str) -> tuple[float, float, float]:
            rows = times[name]
            return (
                statistics.median(r[0] for r in rows),
                statistics.median(r[1] for r in rows),
                max(r[2] for r in rows),
            )

        print(
            f"{args.objects} objects + Namespace "
            f"({args.objects - 2 * (args.objects // 4)} ConfigMaps, {args.objects // 4} Services, "
            f"{args.objects // 4} Deployments); median of {args.rounds} rounds; "
            f"outpost workers={args.workers}; "
            f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
        )
        columns = ("step", "kubectl peer", "outpost", "cpu", "MB", "kubectl", "cpu", "MB", "ratio")
        print("{:12} {:20} {:>8} {:>5} {:>4} {:>8} {:>5} {:>4} {:>6}".format(*columns))
        peers = {
            "apply": "apply --server-side",
            "re-apply": "apply --server-side",
            "re-apply-all": "apply --server-side",
            "drift": "diff --server-side",
        }
        for step, peer in peers.items():
            ow, oc, om = median(f"{step}/outpost")
            kw, kc, km = median(f"{step.replace('-all', '')}/kubectl")
            print(
                f"{step:12} {peer:20} {ow:7.2f}s {oc:5.2f} {om:4.0f}"
                f" {kw:7.2f}s {kc:5.2f} {km:4.0f} {ow / kw:6.2f}"
            )
        print(
            "wall and CPU seconds (median), peak RSS MB (max); ratio = outpost wall / kubectl wall"
        )
        print("(≤ 1: outpost no slower). re-apply-all: outpost sending every object, against the")
        print("same kubectl row; re-apply: as the agent runs, untouched objects are not sent.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
