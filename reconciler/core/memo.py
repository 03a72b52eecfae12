"""Values derived from an object, kept per object identity (`ByIdentity`).

CI renders and checks the same app, fleet and manifest objects at thousands of sites;
what is derived from one of them (its template, its body for policies, a fleet's
break-glass recipients) is worked out once and found again by the object's identity.
"""

from __future__ import annotations

from typing import Any


class ByIdentity:
    """Data derived from an object, kept per object identity, at most ``size`` entries
    (the oldest goes first).

    Each entry holds the object itself, so its id cannot be reused by another
    object while the entry lives: a hit is always for the very same object.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.entries: dict[int, tuple[object, Any]] = {}

    def get(self, obj: object) -> Any:
        entry = self.entries.get(id(obj))
        return entry[1] if entry is not None and entry[0] is obj else None

    def put(self, obj: object, value: Any) -> Any:
        if len(self.entries) >= self.size:
            del self.entries[next(iter(self.entries))]
        self.entries[id(obj)] = (obj, value)
        return value
