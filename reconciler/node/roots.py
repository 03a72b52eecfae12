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

That is also the safe direction for a record that cannot be read: a FIFO, a link,
a file over `MAX_BYTES`, JSON cut short, or steps that are not commit ids and base64
roots are `RecordUnreadable` (naming the file and what it should hold); the pipeline
moves the file aside as ``trust-roots.json.corrupt``, derives the steps again and
says so in the tick's status. A damaged record can cost a walk of the history,
never a step back to a retired root.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from reconciler.core.files import write_json
from reconciler.node.state import read_record, wrong_field

__all__ = ["MAX_BYTES", "ROOTS_FILE", "RootStep", "RootsRecord"]

ROOTS_FILE = "trust-roots.json"
KIND = "TrustRoots"
MAX_BYTES = 4 * 1024 * 1024
"""Each step holds a whole allowed_signers file in base64; rotations are rare."""
_COMMIT = re.compile(r"[0-9a-f]{40}([0-9a-f]{24})?")
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
        """The recorded steps; None without a record, or with one made for another enrolled
        root (a node enrolled again). `RecordUnreadable`, naming the file and what it should
        hold, when it is not a TrustRoots record of commit ids and base64 roots."""
        data = read_record(self.path, KIND, MAX_BYTES)
        if data is None:
            return None
        if data.get("enrolled") != digest(enrolled):
            log.warning(
                "trust roots record ignored",
                extra={"path": str(self.path), "error": "made for another enrolled root"},
            )
            return None
        steps = data.get("steps")
        if not isinstance(steps, list):
            raise wrong_field(self.path, "steps", "a list of rotation steps", steps)
        return tuple(self._step(i, step) for i, step in enumerate(steps))

    def _step(self, index: int, step: object) -> RootStep:
        where = f"steps[{index}]"
        expected = "an object of effective, rotation (commit ids) and root (base64)"
        if not isinstance(step, dict):
            raise wrong_field(self.path, where, expected, step)
        for field in ("effective", "rotation"):
            value = step.get(field)
            if not isinstance(value, str) or not _COMMIT.fullmatch(value):
                raise wrong_field(self.path, f"{where}.{field}", "a full commit id", value)
        root = step.get("root")
        try:
            if not isinstance(root, str):
                raise TypeError
            decoded = base64.b64decode(root, validate=True)
        except (TypeError, binascii.Error):
            raise wrong_field(
                self.path, f"{where}.root", "an allowed_signers file in base64", root
            ) from None
        return RootStep(step["effective"], step["rotation"], decoded)

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
