"""Benchmark: what writing a site's policies for its API server adds to the node's tick.

The node already re-checks its rendered slice against the policies before it applies
a commit (``check_rendered_site``: load, compile, evaluate). It now also writes the
same policies as ValidatingAdmissionPolicy objects (``export_rendered_site``: load,
compile, rewrite the CEL, build the facts). Measured in one run, per site of the
example fleet, on the same rendered slice:

- check: the node's existing policy step (the peer);
- export: the new step;
- render: rendering the slice again, for scale (warm: the tree keeps parsed documents).

Printed: milliseconds per call (median of ``--repeat``) and export / check as a ratio.

Run: python bench/policy_export.py [--repeat 20]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path

from reconciler.core.model import Repository
from reconciler.core.policy import check_rendered_site, export_rendered_site
from reconciler.core.render import render_site
from reconciler.core.source import WorkdirTree

ROOT = Path(__file__).resolve().parents[1]
TODAY = date(2027, 2, 1)


def median_ms(call: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    repo = Repository(WorkdirTree(ROOT))
    sites = sorted(repo.site_ids)
    print(f"{'site':<16} {'render ms':>10} {'check ms':>10} {'export ms':>10} {'export/check':>13}")
    ratios = []
    for site in sites:
        rendered = render_site(repo, site)
        render = median_ms(lambda s=site: render_site(repo, s), args.repeat)
        check = median_ms(
            lambda s=site, r=rendered: check_rendered_site(repo, s, r, today=TODAY), args.repeat
        )
        export = median_ms(
            lambda s=site, r=rendered: export_rendered_site(repo, s, r, today=TODAY), args.repeat
        )
        ratios.append(export / check)
        print(f"{site:<16} {render:>10.2f} {check:>10.2f} {export:>10.2f} {export / check:>13.2f}")
    print(f"export / check, median over {len(sites)} sites: {statistics.median(ratios):.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
