"""A cost bound for CEL expressions from the repository, checked before each evaluation.

The CEL binding (``common-expression-language``, a Rust interpreter) has no cost
limit, and it holds the GIL while it runs: neither a thread's timeout nor Ctrl-C can
stop ``[...].all(a, [...].all(b, ...))`` nested a few levels deep. Kubernetes bounds the
same risk with a cost budget per evaluation (``ValidatingAdmissionPolicy``: a static
estimate from the schema's ``maxItems`` at admission of the policy, a runtime count
per call). This module does the static half with the sizes of the actual data:

- ``analyse`` reads the expression once (when the policy is loaded) and finds its
  comprehension macros (``all``, ``exists``, ``exists_one``, ``map``, ``filter``) and how
  they nest;
- ``estimate`` bounds the number of steps of one evaluation: every comprehension
  iterates at most ``n`` items, where ``n`` is the largest list or map in the bound
  variables or written in the expression (times the ``+`` operators, which can join
  lists; the longest string too when ``split`` can turn text into a list), and a
  nested comprehension runs once per item of the one around it;
- past ``BUDGET`` steps the expression is not run: the caller reports a finding naming
  the policy, the expression's line and the estimate.

CEL has no loops, recursion or ranges: a comprehension can only walk a list that
exists, and lists come from the data, from literals or from ``+``/``split``/``map``. So
the estimate bounds the work, give or take a constant per step — except for a library
function that returns a list longer than any one collection of the data (one that
flattens several): the node runs its policy check under a deadline as well
(``node.deadline``), which bounds what this estimate misses.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

# Kubernetes' runtime budget for one admission request is 10,000,000 cost units; a
# unit is roughly one step here. Ten million steps run in about a second.
BUDGET = 10_000_000

_MACROS = frozenset({"all", "exists", "exists_one", "map", "filter"})
_MACRO_CALL = re.compile(r"\.\s*([A-Za-z_][A-Za-z0-9_]*)\s*\(")
_STRING = re.compile(
    r"""[rRbB]{0,2}(?:'''(?:\\.|[^\\])*?'''|\"\"\"(?:\\.|[^\\])*?\"\"\"|'(?:\\.|[^'\\\n])*'|"(?:\\.|[^"\\\n])*")""",
    re.DOTALL,
)
_SPLITTERS = ("split(", "splitN(", "chars(")


@dataclass(frozen=True)
class Cost:
    """The shape of an expression's work: its macros' nesting, as a tree of weights."""

    loops: tuple[Cost, ...] = ()
    joins: int = 0
    literal: int = 0
    splits: bool = False
    length: int = 0

    @property
    def nested(self) -> bool:
        """True if some comprehension runs inside another (only then can the cost explode)."""
        return any(loop.loops for loop in self.loops)

    def steps(self, items: int) -> int:
        """Steps of the loops below this node when each iterates ``items`` items."""
        return sum(items * (1 + loop.steps(items)) for loop in self.loops)


def analyse(expression: str) -> Cost:
    """The comprehension structure of ``expression`` (string literals are skipped)."""
    text = _STRING.sub(lambda m: '""' + " " * (len(m.group(0)) - 2), expression)
    closing: dict[int, int] = {}
    stack: list[int] = []
    for index, char in enumerate(text):
        if char == "(":
            stack.append(index)
        elif char == ")" and stack:
            closing[stack.pop()] = index
    spans: list[tuple[int, int]] = []
    for match in _MACRO_CALL.finditer(text):
        if match.group(1) in _MACROS:
            start = match.end() - 1
            spans.append((start, closing.get(start, len(text))))

    def loops_within(low: int, high: int) -> tuple[Cost, ...]:
        inner = [(s, e) for s, e in spans if low < s and e <= high]
        top = [(s, e) for s, e in inner if not any(a < s and e <= b for a, b in inner)]
        return tuple(Cost(loops_within(s, e)) for s, e in top)

    return Cost(
        loops_within(-1, len(text) + 1),
        joins=text.count("+"),
        literal=text.count(",") + 1,
        splits=any(name in text for name in _SPLITTERS),
        length=len(text),
    )


def largest(value: Any, *, strings: bool = False) -> int:
    """The size of the largest list or map in ``value`` (and the longest string if ``strings``)."""
    best = 0
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            best = max(best, len(node))
            stack.extend(node.values())
        elif isinstance(node, list | tuple):
            best = max(best, len(node))
            stack.extend(node)
        elif strings and isinstance(node, str):
            best = max(best, len(node))
    return best


def estimate(cost: Cost, data_items: int, longest_string: int = 0) -> int:
    """Steps one evaluation can take when no collection in the data exceeds ``data_items``."""
    items = max(data_items, cost.literal, longest_string if cost.splits else 0)
    items *= 1 + cost.joins
    return cost.length + cost.steps(items)
