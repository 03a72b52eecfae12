"""Benchmark: decrypting the example fleet's secrets, and the cost of our choices.

Run from the repository root:  python bench/sops_decrypt.py [--rounds N]

Measured in the same run, so the ratios hold on any machine:

- one ``sops decrypt`` through the wheel's Go binary directly (what ``find_sops``
  picks) against the same call through the wheel's console script, a Python
  wrapper that execs the binary (the peer we chose not to use);
- ``decrypt_site_secrets`` for every example site (structure checks, the key
  pre-check and sops) against the bare sops calls it makes.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import sysconfig
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from reconciler.core.secrets import Sops, decrypt_site_secrets, find_sops
from reconciler.core.source import WorkdirTree

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_KEYS = ROOT / "tests/keys/age"
# A checkout leaves the example keys readable by all, which the key reader refuses.
KEYS = Path(tempfile.mkdtemp(prefix="outpost-bench-keys-"))
for example in EXAMPLE_KEYS.glob("*.key"):
    (KEYS / example.name).write_bytes(example.read_bytes())
    (KEYS / example.name).chmod(0o600)


def _median(rounds: int, run: Callable[[], object]) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()

    tree = WorkdirTree(ROOT)
    site = "plant-lyon"
    key = KEYS / f"{site}.key"
    path = f"sites/{site}/secrets/historian-credentials.sops.yaml"
    data = tree.read(path)

    direct = Sops(find_sops())
    wrapper_path = Path(sysconfig.get_path("scripts")) / "sops"
    t_direct = _median(args.rounds, lambda: direct.decrypt(data, key_file=key, path=path))
    print(f"sops decrypt, wheel binary     : {t_direct * 1000:7.1f} ms  ({direct.binary})")
    if wrapper_path.is_file() and wrapper_path != direct.binary:
        wrapper = Sops(wrapper_path)
        t_wrap = _median(args.rounds, lambda: wrapper.decrypt(data, key_file=key, path=path))
        print(f"sops decrypt, console script   : {t_wrap * 1000:7.1f} ms  ({wrapper_path})")
        print(f"ratio console script / binary  : {t_wrap / t_direct:7.2f}x")
    else:
        print("console script not found next to the interpreter; no peer to compare")

    sites = sorted({p.split("/")[1] for p in tree.files("sites") if "/secrets/" in p})
    files = sum(len(tree.files(f"sites/{s}/secrets")) for s in sites)

    def all_sites() -> None:
        for s in sites:
            decrypt_site_secrets(tree, s, KEYS / f"{s}.key", sops=direct)

    t_all = _median(max(3, args.rounds // 5), all_sites)
    print(f"decrypt_site_secrets, {len(sites)} sites / {files} files: {t_all * 1000:7.1f} ms")
    print(f"ratio to bare sops calls       : {t_all / (files * t_direct):7.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
