"""``python -m tools.testcluster build|up|down|env`` — see the package docstring.

Exit codes: 0 done, 1 build or cluster failure, 2 usage error.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import sys
import time
from pathlib import Path

from . import _build, _cluster


def default_dir() -> Path:
    env = os.environ.get("OUTPOST_TESTCLUSTER_DIR")
    return Path(env) if env else Path(f"/tmp/outpost-testcluster-{os.getuid()}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.testcluster", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("build", help="compile the binaries into the cache (idempotent)")
    build.add_argument("--plan", action="store_true", help="print 'cached' or what is missing")
    build.add_argument("--force", action="store_true", help="rebuild even when cached")
    for name, text in (
        ("up", "start a control plane in --dir and print shell exports"),
        ("down", "stop the control plane recorded in --dir and delete --dir"),
        ("env", "print shell exports for the control plane in --dir"),
    ):
        sub = commands.add_parser(name, help=text)
        sub.add_argument("--dir", type=Path, default=default_dir(), help="state directory")
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            return _cmd_build(args.plan, args.force)
        if args.command == "up":
            return _cmd_up(args.dir)
        if args.command == "down":
            return _cmd_down(args.dir)
        return _cmd_env(args.dir)
    except (_build.BuildError, _cluster.ClusterError) as error:
        print(f"testcluster: {error}", file=sys.stderr)
        return 1


def _cmd_build(plan_only: bool, force: bool) -> int:
    if plan_only:
        plan = _build.plan()
        if plan.status == "cached":
            print(f"cached {plan.bin_dir}")
        else:
            print(f"build {plan.directory} (missing: {', '.join(plan.missing)})")
        return 0
    _build.build(force=force)
    return 0


def _cmd_up(workdir: Path) -> int:
    if (workdir / _cluster.STATE_FILE).exists():
        previous = _cluster.attach(workdir)
        if previous.alive():
            print(
                f"testcluster: a control plane is already running from {workdir} "
                f"({previous.server}); run `python -m tools.testcluster down --dir {workdir}`",
                file=sys.stderr,
            )
            return 1
        shutil.rmtree(workdir)
    elif workdir.exists() and any(workdir.iterdir()):
        print(f"testcluster: {workdir} exists and is not a cluster directory", file=sys.stderr)
        return 2
    started = time.monotonic()
    cluster = _cluster.start(workdir)
    milestones = ", ".join(f"{name} {seconds:.1f}s" for name, seconds in cluster.startup.items())
    print(
        f"testcluster: up in {time.monotonic() - started:.1f}s ({milestones}) at "
        f"{cluster.server}, nodes {', '.join(cluster.nodes)}, "
        f"pids {' '.join(map(str, cluster.pids()))}",
        file=sys.stderr,
    )
    _print_env(cluster)
    return 0


def _cmd_down(workdir: Path) -> int:
    if not (workdir / _cluster.STATE_FILE).exists():
        print(f"testcluster: nothing recorded in {workdir}; nothing to stop", file=sys.stderr)
        return 0
    cluster = _cluster.attach(workdir)
    running = len(cluster.alive())
    cluster.stop()
    shutil.rmtree(workdir)
    print(f"testcluster: stopped {running} processes, removed {workdir}", file=sys.stderr)
    return 0


def _cmd_env(workdir: Path) -> int:
    cluster = _cluster.attach(workdir)
    if not cluster.alive():
        print(f"testcluster: the control plane in {workdir} is not running", file=sys.stderr)
        return 1
    _print_env(cluster)
    return 0


def _print_env(cluster: _cluster.Cluster) -> None:
    for key, value in cluster.env().items():
        print(f"export {key}={shlex.quote(value)}")
    print(f'export PATH={shlex.quote(str(cluster.bin_dir))}:"$PATH"')


if __name__ == "__main__":
    sys.exit(main())
