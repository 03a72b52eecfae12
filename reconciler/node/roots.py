"""The trust root this node has moved to: ``trust-roots.json`` in the state directory.

The root installed at enrollment is the start. A commit that changes
``policies/root-signers``, approved by the threshold of the root the node holds
(`reconciler.core.trust.approvals`), moves the node to the next root for every
commit after the one that completed the approval. The node records each step
here (atomic writes) and never removes one: the root for a range is the newest
step at or below where the range starts, so it only moves forward with the
applied commit.

A lost, unreadable or foreign record (made for another enrolled root) is never
read as "no rotation": the steps are derived again from the verified history,
from the floor (or the first commit) to the commit the node starts from, with
the enrolled root — the same chain ``outpost verify --trust ENROLLED`` follows —
and written back. A history that no longer verifies stops the tick with an error
naming it, rather than trusting the enrolled root again.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from reconciler.core.files import write_json

__all__ = ["ROOTS_FILE", "RootStep", "RootsRecord"]

ROOTS_FILE = "trust-roots.json"
_MAX_BYTES = 4 * 1024 * 1024
log = logging.getLogger("outpost.agent")


@dataclass(frozen=True)
class RootStep:
    """From ``effective`` on (its descendants), ``root`` is the trust root; ``rotation``
    is the commit that wrote it."""

    effective: str
    rotation: str
    root: bytes


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class RootsRecord:
    """``trust-roots.json``: the enrolled root's digest and every step taken since."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / ROOTS_FILE

    def load(self, enrolled: bytes) -> tuple[RootStep, ...] | None:
        """The recorded steps; None when there is no usable record for this enrolled root."""
        try:
            with self.path.open("rb") as handle:
                raw = handle.read(_MAX_BYTES + 1)
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.warning("trust roots unreadable", extra={"path": str(self.path), "error": str(exc)})
            return None
        try:
            data = json.loads(raw) if len(raw) <= _MAX_BYTES else None
            if not isinstance(data, dict) or data.get("enrolled") != digest(enrolled):
                raise ValueError("made for another enrolled root")
            steps = tuple(
                RootStep(
                    str(step["effective"]),
                    str(step["rotation"]),
                    base64.b64decode(step["root"], validate=True),
                )
                for step in data["steps"]
            )
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
            log.warning(
                "trust roots record ignored", extra={"path": str(self.path), "error": str(exc)}
            )
            return None
        return steps

    def save(self, enrolled: bytes, steps: Sequence[RootStep]) -> None:
        write_json(
            self.path,
            {
                "apiVersion": "outpost/v1",
                "kind": "TrustRoots",
                "enrolled": digest(enrolled),
                "steps": [
                    {
                        "effective": s.effective,
                        "rotation": s.rotation,
                        "root": base64.b64encode(s.root).decode("ascii"),
                    }
                    for s in steps
                ],
            },
        )

    def extend(self, enrolled: bytes, known: Sequence[RootStep], new: Sequence[RootStep]) -> None:
        """Append steps not yet recorded (never removes one)."""
        have = {s.effective for s in known}
        added = [s for s in new if s.effective not in have]
        if added:
            self.save(enrolled, [*known, *added])


def root_for(
    steps: Sequence[RootStep], since: str | None, descends: Callable[[str, str], bool]
) -> RootStep | None:
    """The newest step at or below ``since`` (None: the enrolled root holds there)."""
    if since is None:
        return None
    for step in reversed(steps):
        if step.effective == since or descends(since, step.effective):
            return step
    return None
