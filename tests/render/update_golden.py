"""Rewrite the golden files after an intended change to what sites run.

    python tests/render/update_golden.py     # then review `git diff tests/render/golden`

Kept out of the tests on purpose: a test that writes the file it then compares with
passes whatever the renderer does. The tests only read the golden files.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[2]), str(Path(__file__).parent)]

from render_world import example_repo  # noqa: E402

from reconciler.core.render import render_site, to_yaml  # noqa: E402

GOLDEN = Path(__file__).parent / "golden"


def main() -> int:
    repo = example_repo()
    for site in repo.site_ids:
        path = GOLDEN / f"{site}.yaml"
        text = to_yaml(render_site(repo, site))
        before = path.read_text(encoding="utf-8") if path.exists() else None
        if text != before:
            path.write_text(text, encoding="utf-8")
            print(f"rewrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
