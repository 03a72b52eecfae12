"""Is the source still moving? The newest signed heartbeat this node has verified.

`reconciler.core.trust.heartbeat` verifies the tag; this module keeps, in
``heartbeat.json`` in the state directory (atomic writes), the newest signed time
the node has accepted and since when it has been watching, and says whether that
time is older than the fleet's ``heartbeat.maxSilence`` (``maxSilenceAirGapped``
for a node fed only by USB bundles). A tag counts when it is signed by a key of
``spec.heartbeat.keys`` in the ``policies/signers.yaml`` of the revision the node
runs, and points at the fetched head or an ancestor of it (the node then holds
everything the heartbeat's signer saw; a tag ahead of the branch proves nothing
about what the node was given, and is reported). A replayed older tag never moves
the time back. Nothing here refuses anything: "updates may be withheld" is a
warning in the status, the metrics and the status report the collector reads.

The record is a convenience, not the evidence: the signed time is verified again
from the tag in the mirror at every tick. So a record that cannot be read (a FIFO,
a link, a file over `MAX_BYTES`, JSON cut short, fields of the wrong type) is
`RecordUnreadable` naming the file and what it should hold; it is moved aside as
``heartbeat.json.corrupt``, the tag the mirror holds gives the signed time again,
and watching starts again at this tick. What that can cost is the silence counted
before it when no tag counts at all, so the warning (in `Freshness.unreadable`)
goes into the tick's status: an operator sees that the count started again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reconciler.core.errors import VerificationError
from reconciler.core.files import write_json
from reconciler.node.state import (
    RecordUnreadable,
    read_record,
    set_aside,
    unix_time,
    wrong_field,
)

if TYPE_CHECKING:
    from reconciler.core.trust.rules import SignerRules  # SSHSIG: imported for a tag only

__all__ = ["HEARTBEAT_FILE", "MAX_BYTES", "Freshness", "check_heartbeat"]

HEARTBEAT_FILE = "heartbeat.json"
KIND = "Heartbeat"
MAX_BYTES = 64 * 1024
"""The agent writes four short fields; anything near this is not its record."""
_FUTURE = 300


@dataclass(frozen=True)
class Freshness:
    """What the node knows about the source's heartbeat at this tick."""

    signed_at: float | None
    """The newest signed time verified so far (None: none yet)."""
    target: str | None
    watching_since: float
    max_silence: int | None
    silence: float
    """Seconds since ``signed_at`` (or since the node began watching, without one)."""
    note: str | None = None
    """Why the heartbeat the source has now did not count, if it did not."""
    unreadable: str | None = None
    """Why ``heartbeat.json`` was set aside at this tick, if it was."""

    @property
    def withheld(self) -> bool:
        return self.max_silence is not None and self.silence > self.max_silence

    def warning(self) -> str | None:
        if not self.withheld:
            return None
        hours = self.silence / 3600
        limit = (self.max_silence or 0) / 3600
        seen = (
            f"the newest signed heartbeat is {hours:.1f} h old"
            if self.signed_at is not None
            else f"no signed heartbeat in {hours:.1f} h of watching"
        )
        return (
            f"updates may be withheld: {seen} (heartbeat.maxSilence {limit:g} h); the source "
            "may be serving an old state of the branch. The site keeps running what it runs; "
            "check the git server and the CI job that runs outpost heartbeat"
        )


def _load(path: Path) -> dict[str, Any]:
    """The record ({} without one); `RecordUnreadable` naming the file when it is not one."""
    data = read_record(path, KIND, MAX_BYTES)
    if data is None:
        return {}
    for field in ("signedAt", "watchingSince"):
        value = data.get(field)
        if value is not None and unix_time(value) is None:
            raise wrong_field(path, field, "a unix time (a number) or null", value)
    if data.get("target") is not None and not isinstance(data.get("target"), str):
        raise wrong_field(path, "target", "a commit id or null", data.get("target"))
    return data


def check_heartbeat(
    mirror: Any,
    state_dir: Path,
    *,
    tag_ref: str,
    head: str | None,
    rules: SignerRules | Callable[[], SignerRules],
    max_silence: int | None,
    now: float,
) -> Freshness:
    """Verify the heartbeat tag under ``tag_ref`` in the mirror and update the record.

    ``rules`` are the signer rules of the revision the node runs, or what reads them:
    called only when there is a tag to verify."""
    path = state_dir / HEARTBEAT_FILE
    unreadable: str | None = None
    try:
        record = _load(path)
    except RecordUnreadable as exc:
        record = {}
        unreadable = set_aside(
            path,
            exc,
            "the signed time is taken again from the heartbeat tag, and watching for "
            "silence starts again now",
        )
    signed_at = unix_time(record.get("signedAt"))
    target = record.get("target") if isinstance(record.get("target"), str) else None
    since = unix_time(record.get("watchingSince")) or now
    note: str | None = None
    changed = "watchingSince" not in record
    reference = mirror.repo.references.get(tag_ref)
    if reference is not None:
        from reconciler.core.trust.heartbeat import verify_heartbeat  # SSHSIG: only for a tag

        tag_id = str(reference.target)
        try:
            obj = mirror.repo[reference.target]
            if obj.type_str != "tag":
                raise VerificationError(f"{tag_ref} is a {obj.type_str}, not a signed tag")
            beat = verify_heartbeat(tag_id, obj.read_raw(), rules() if callable(rules) else rules)
            if head is None or not (beat.target == head or mirror.descends(head, beat.target)):
                raise VerificationError(
                    f"the heartbeat tag points at {beat.target[:12]}, which is not the fetched "
                    f"head {str(head)[:12]} nor an ancestor of it: the branch served is behind "
                    "its own heartbeat"
                )
            if beat.signed_at > now + _FUTURE:
                raise VerificationError("the heartbeat tag is signed with a time in the future")
        except VerificationError as exc:
            note = exc.message
        else:
            if signed_at is None or beat.signed_at > signed_at:
                signed_at, target, changed = float(beat.signed_at), beat.target, True
    if changed:
        write_json(
            path,
            {
                "apiVersion": "outpost/v1",
                "kind": "Heartbeat",
                "signedAt": signed_at,
                "target": target,
                "watchingSince": since,
            },
        )
    silence = now - (signed_at if signed_at is not None else since)
    return Freshness(
        signed_at, target, since, max_silence, max(0.0, silence), note, unreadable=unreadable
    )
