"""``validate_tree`` reads and parses each file of the tree once, whatever the checks on top."""

from __future__ import annotations

from collections import Counter
from datetime import date
from pathlib import Path

from reconciler.policy import policy_check
from reconciler.source import WorkdirTree
from reconciler.validate import validate_tree

ROOT = Path(__file__).resolve().parent.parent


class CountingTree(WorkdirTree):
    """A working directory that counts how often each file is read."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.reads: Counter[str] = Counter()

    def read(self, path: str) -> bytes:
        self.reads[path] += 1
        return super().read(path)


def test_every_file_is_read_once_with_policies_on_top() -> None:
    tree = CountingTree(ROOT)
    findings = validate_tree(tree, extra=[policy_check(today=date(2026, 6, 1))])
    assert [f for f in findings if f.severity == "error"] == []
    assert any(p.startswith("sites/") for p in tree.reads)
    assert any("/manifests/" in p for p in tree.reads)
    assert {p: n for p, n in tree.reads.items() if n > 1} == {}
