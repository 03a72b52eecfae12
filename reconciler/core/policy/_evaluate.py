"""Evaluate a policy's CEL expressions, with a cache shared across sites.

Results are cached by (policy, object digest, and the digest of each of ``site``,
``hardware``, ``app`` the policy's expressions reference): a result that depends on a
site is never reused at another (`PolicyCache`).
"""

from __future__ import annotations

import hashlib
import marshal
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from reconciler.core.cel_cost import BUDGET, Cost, estimate, largest
from reconciler.core.errors import Mark
from reconciler.core.policy._facts import CEL_FUNCTIONS
from reconciler.core.policy._load import (
    Policy,
)

# --------------------------------------------------------------------------- evaluation


_VIOLATION = "violation"
_FAILURE = "error"
Outcome = tuple[tuple[str, str], ...]


def _functions() -> dict[str, Callable[..., Any]]:
    """cel's extended library (join, split, sets.*, math.* as in Kubernetes CEL) plus ours."""
    from reconciler.core.policy._cel import stdlib_functions

    functions = stdlib_functions()  # empty in an older binding: our library still works
    functions.update(CEL_FUNCTIONS)
    return functions


def new_context(variables: Mapping[str, Any]) -> Any:
    """A CEL context with ``variables`` and the function library."""
    from reconciler.core.policy._cel import engine

    return engine().Context(variables=dict(variables), functions=_functions())


class _Bindings:
    """One CEL context reused across evaluations; a variable is converted only when it changes.

    Building a context and converting a body into CEL values costs more than most
    evaluations, so the context lives as long as the cache. Every evaluation binds
    all four variables; a value is re-added when it is not the very object bound
    last time. The bound objects are kept referenced, so an identity cannot be
    recycled by a new dict and a stale value can never be read for a new one.
    """

    def __init__(self) -> None:
        self.context: Any = None
        self.bound: dict[str, Any] = {}

    def bind(self, variables: Mapping[str, Any]) -> Any:
        if self.context is None:
            self.context = new_context({})
        for name, value in variables.items():
            if self.bound.get(name, _UNBOUND) is not value:
                self.context.add_variable(name, value)
                self.bound[name] = value
        return self.context


_UNBOUND = object()


def _explain(exc: Exception) -> str:
    """The binding's exception in words an operator can act on."""
    text = str(exc).strip().split("\n")[0]
    if isinstance(exc, KeyError):
        return (
            f"no such key {text}; the field is missing from this object — guard optional "
            "fields with has(), e.g. has(object.spec.x) && ..."
        )
    if isinstance(exc, IndexError):
        return f"{text}; check the list's size() before indexing"
    if len(text) > 300:
        text = text[:300] + "…"
    return f"{type(exc).__name__}: {text}"


class _Sizes:
    """The largest collection (and longest string) in an evaluation's variables, on demand."""

    _memo: ClassVar[dict[int, tuple[Any, int, int]]] = {}

    def __init__(self, variables: Mapping[str, Any] | None) -> None:
        self.variables = variables
        self.found: tuple[int, int] | None = None

    def get(self) -> tuple[int, int]:
        if self.found is None:
            items = longest = 0
            for value in (self.variables or {}).values():
                entry = self._memo.get(id(value))
                if entry is None or entry[0] is not value:
                    if len(self._memo) >= 256:
                        self._memo.clear()
                    entry = (value, largest(value), largest(value, strings=True))
                    self._memo[id(value)] = entry
                items, longest = max(items, entry[1]), max(longest, entry[2])
            self.found = (items, longest)
        return self.found


def _over_budget(cost: Cost, sizes: _Sizes, mark: Mark, what: str) -> str | None:
    """Why ``cost`` may not run on these variables, or None (only nested loops can explode)."""
    if not cost.nested:
        return None
    items, longest = sizes.get()
    steps = estimate(cost, items, longest)
    if steps <= BUDGET:
        return None
    return (
        f"{what} at {mark} was not evaluated: on this object its nested comprehensions "
        f"could take about {steps:,} steps (collections of up to {max(items, 1):,} items), "
        f"over the budget of {BUDGET:,} per evaluation; restructure the expression or "
        "bound the lists it walks"
    )


def evaluate(
    policy: Policy,
    context: Any,
    *,
    strict_messages: bool = False,
    variables: Mapping[str, Any] | None = None,
) -> Outcome:
    """Run every compiled validation of ``policy``; return its violations and failures.

    Validations that did not compile are skipped here: loading already reported them
    as error findings at their line, once rather than once per object. A
    ``messageExpression`` that fails falls back to ``message`` (as in Kubernetes);
    with ``strict_messages`` (policy tests) its failure is reported instead.

    Each expression runs only if its cost bound (``core.cel_cost``) on ``variables``, the
    values bound in ``context``, is within the budget; otherwise it is a failure.
    """
    results: list[tuple[str, str]] = []
    sizes = _Sizes(variables)
    for validation in policy.validations:
        if validation.program is None:
            continue
        refused = _over_budget(validation.cost, sizes, validation.mark, "the expression")
        if refused is not None:
            results.append((_FAILURE, refused))
            continue
        try:
            value = validation.program.execute(context)
        except Exception as exc:  # the cel seam
            results.append(
                (
                    _FAILURE,
                    f"could not evaluate the expression at {validation.mark}: {_explain(exc)}",
                )
            )
            continue
        if value is True:
            continue
        if value is not False:
            results.append(
                (
                    _FAILURE,
                    f"the expression at {validation.mark} returned {type(value).__name__} "
                    f"{value!r}; a validation must return true or false",
                )
            )
            continue
        message = validation.message
        refused = _over_budget(
            validation.message_cost, sizes, validation.mark, "the messageExpression"
        )
        if refused is not None and strict_messages:
            results.append((_FAILURE, refused))
            continue
        if validation.message_program is not None and refused is None:
            try:
                custom = validation.message_program.execute(context)
            except Exception as exc:  # fall back to the static message, as Kubernetes does
                if strict_messages:
                    results.append(
                        (_FAILURE, f"the messageExpression of {validation.mark}: {_explain(exc)}")
                    )
                    continue
                custom = None
            if isinstance(custom, str) and custom.strip():
                message = custom.strip()
            elif strict_messages:
                results.append(
                    (
                        _FAILURE,
                        f"the messageExpression of {validation.mark} returned {custom!r}, "
                        "not a non-empty string",
                    )
                )
                continue
        results.append((_VIOLATION, message))
    return tuple(results)


def _digest(value: Any) -> bytes:
    """A 128-bit digest of a JSON-like value, for cache keys.

    The bytes digested are ``marshal``'s (format 2, which has no back-references, so
    the same value always gives the same bytes): they decode to exactly one value, so
    equal bytes mean equal values (``1``, ``1.0`` and ``True`` have their own type codes),
    and writing them takes half the time of ``repr``. They are not canonical for key
    order, so two equal maps written in different orders only miss the cache; they
    never share a wrong result. A value marshal cannot write (not JSON-like) falls back
    to ``repr``, which is unambiguous for what the loader produces; the prefix keeps
    the two kinds of digest apart.
    """
    try:
        data = b"m" + marshal.dumps(value, 2)
    except ValueError:
        data = b"r" + repr(value).encode()
    return hashlib.blake2b(data, digest_size=16).digest()


class PolicyCache:
    """Evaluation results shared across sites, keyed so site-dependent results stay apart.

    The key is (policy index, object digest, site digest or None, hardware digest
    or None, app digest or None): a digest is part of the key exactly when the
    policy's expressions (and message expressions) reference that variable. One
    cache belongs to one ``PolicySet``; use a new one for other policies.
    """

    def __init__(self) -> None:
        self.results: dict[tuple[Any, ...], Outcome] = {}
        self.hits = 0
        self.misses = 0
        self._app_digests: dict[int, tuple[Any, bytes]] = {}
        self.bindings = _Bindings()

    def app_digest(self, body: Any) -> bytes:
        """Digest of an App body; memoised per object (the body is kept alive with it)."""
        entry = self._app_digests.get(id(body))
        if entry is None or entry[0] is not body:
            entry = (body, _digest(body))
            self._app_digests[id(body)] = entry
        return entry[1]
