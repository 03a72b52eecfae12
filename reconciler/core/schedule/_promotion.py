"""Promotion and Halt records: the signed answer to "may the next wave open for this change?".

``outpost fleet promote`` judges a gated wave's gate (:class:`~reconciler.core.schedule.Gate`)
at headquarters from the sites' reports and writes its decision into the repository, one
file per fleet and change, signed by a *promoter*:

    rollouts/<fleet>/<change-sha>.yaml     kind Promotion | Halt

The place is chosen for the trust rules, which judge a delegated signer by path: the
promoter's scope in ``policies/signers.yaml`` is ``rollouts/**`` and nothing else, so its
key cannot change an app's version, a site, a fleet's waves or a policy. ``rollouts/`` is
read from by no slice (render's sources, ``outpost diff``'s index): a promotion commit is
no change to any site, and does not restart a soak.

The node reads the records of its candidate revision (verified like every other file) and
turns them into the rollout's ``promoted`` waves and ``halted`` reason for *its* change C:

- a Promotion for C, or for a later change P that includes C (P descends from C), opens
  the waves it lists, each from its ``openedAt`` (the earliest such record wins);
- a Halt for C itself stops every gated wave not yet promoted for C. A later commit is a
  new change with its own rollout.

Nothing here reads git or the clock: ``includes(p, c)`` is passed in.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from reconciler.core.errors import DocumentError
from reconciler.core.schedule._model import NAME_RE, _Spec

__all__ = [
    "MAX_RECORDS",
    "ROLLOUTS_DIR",
    "PromotionState",
    "RolloutRecord",
    "parse_record",
    "promotion_state",
    "read_records",
    "record_path",
]

ROLLOUTS_DIR = "rollouts"
MAX_RECORDS = 2000
"""Cap on the records read per fleet (bounded input); older ones may be deleted freely."""
_SHA = re.compile(r"^[0-9a-f]{40}$")
KINDS = ("Promotion", "Halt")


def record_path(fleet: str, change: str) -> str:
    return f"{ROLLOUTS_DIR}/{fleet}/{change}.yaml"


@dataclass(frozen=True)
class RolloutRecord:
    """One ``rollouts/<fleet>/<change>.yaml``: the waves opened for a change, or its halt."""

    kind: str
    fleet: str
    change: str
    opened: tuple[tuple[str, datetime], ...]
    halted_wave: str | None = None
    halted_at: datetime | None = None
    reason: str = ""

    def to_yaml(self) -> str:
        """The record's file. Every string is quoted: a commit id of digits only is no
        number, a fleet named ``yes`` no boolean, and a reason cannot break the YAML."""
        lines = [
            "apiVersion: outpost/v1",
            f"kind: {self.kind}",
            "metadata:",
            f"  name: {_quote(self.change)}",
            "spec:",
            f"  fleet: {_quote(self.fleet)}",
            f"  change: {_quote(self.change)}",
            "  opened:" + ("" if self.opened else " []"),
        ]
        for wave, at in self.opened:
            lines.append(f"    - wave: {_quote(wave)}")
            lines.append(f"      openedAt: {_quote(_instant(at))}")
        if self.kind == "Halt":
            assert self.halted_wave is not None and self.halted_at is not None
            lines.append(f"  wave: {_quote(self.halted_wave)}")
            lines.append(f"  haltedAt: {_quote(_instant(self.halted_at))}")
        if self.reason:
            lines.append(f"  reason: {_quote(self.reason)}")
        return "\n".join(lines) + "\n"


def _instant(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _quote(text: str) -> str:
    """A YAML double-quoted scalar: what YAML may not carry raw is escaped (controls, line
    separators, non-characters), a lone surrogate (no UTF-8 for it) becomes '?'."""
    out = ['"']
    for char in text:
        code = ord(char)
        if char in '"\\':
            out.append("\\" + char)
        elif 0xD800 <= code <= 0xDFFF:
            out.append("?")
        elif (
            0x20 <= code <= 0x7E
            or 0xA0 <= code <= 0xD7FF
            or 0xE000 <= code <= 0xFFFD
            or code >= 0x10000
        ) and code not in (0x2028, 0x2029, 0xFEFF):
            out.append(char)
        else:
            out.append(f"\\u{code:04x}")
    out.append('"')
    return "".join(out)


def parse_record(kind: str, spec: Any, *, path: str, mark: Any = None) -> RolloutRecord:
    """A record from its loaded document; raises `ValidationError` naming the key and line.

    The path must be ``rollouts/<fleet>/<change>.yaml`` and agree with ``spec``: a record
    copied under another change's name must not promote that change.
    """
    at = _Spec(mark)
    if kind not in KINDS:
        raise at.error(f"expected kind Promotion or Halt, found {kind!r}")
    body = at.mapping(spec)
    allowed = ("fleet", "change", "opened", "reason") + (
        ("wave", "haltedAt") if kind == "Halt" else ()
    )
    at.only(body, allowed)
    fleet = at.name(body.get("fleet"), "fleet")
    change = at.string(body.get("change"), "change")
    if not _SHA.match(change):
        raise at.error(f"expected a full 40-character commit id, found {change!r}", "change")
    if path != record_path(fleet, change):
        raise at.error(
            f"a record for fleet {fleet!r} and change {change[:12]} belongs in "
            f"{record_path(fleet, change)}, not {path}",
            "change",
        )
    opened: list[tuple[str, datetime]] = []
    for i, raw in enumerate(at.items(body.get("opened"), "opened")):
        item = at.mapping(raw, "opened", i)
        at.only(item, ("wave", "openedAt"), "opened", i)
        wave = at.name(item.get("wave"), "opened", i, "wave")
        opened.append((wave, at.instant(item.get("openedAt"), "opened", i, "openedAt")))
    reason = at.string(body.get("reason", ""), "reason")
    if kind == "Promotion":
        if not opened:
            raise at.error("a Promotion opens at least one wave", "opened")
        return RolloutRecord(kind, fleet, change, tuple(opened), reason=reason)
    wave = at.name(body.get("wave"), "wave")
    halted_at = at.instant(body.get("haltedAt"), "haltedAt")
    return RolloutRecord(kind, fleet, change, tuple(opened), wave, halted_at, reason)


@dataclass(frozen=True)
class PromotionState:
    """What the records say of one change in one fleet."""

    promoted: tuple[tuple[str, datetime], ...] = ()
    halted: str | None = None


def promotion_state(
    records: Iterable[RolloutRecord], change: str, includes: Callable[[str, str], bool]
) -> PromotionState:
    """Waves opened for ``change`` (earliest record wins) and the halt, if one names it."""
    opened: dict[str, datetime] = {}
    halted: str | None = None
    for record in records:
        if record.change != change and not includes(record.change, change):
            continue
        for wave, at in record.opened:
            if wave not in opened or at < opened[wave]:
                opened[wave] = at
        if record.kind == "Halt" and record.change == change:
            halted = f"wave {record.halted_wave!r} halted at {record.halted_at:%Y-%m-%d %H:%M}Z"
            halted += f" ({record.reason})" if record.reason else ""
    return PromotionState(tuple(sorted(opened.items(), key=lambda kv: kv[1])), halted)


def read_records(tree: Any, fleet: str) -> list[RolloutRecord]:
    """Every record of ``fleet`` in ``tree`` (a `core.source.Tree`); a bad one is an error.

    Failing closed: a record the node cannot read must not be skipped silently, or a
    Halt could be lost to a typo; the revision is refused with the file and line.
    """
    from reconciler.core.loader import load_document

    if not NAME_RE.match(fleet):
        return []
    paths = [p for p in tree.files(f"{ROLLOUTS_DIR}/{fleet}", lenient=True) if p.endswith(".yaml")]
    if len(paths) > MAX_RECORDS:
        raise DocumentError(
            f"{ROLLOUTS_DIR}/{fleet}/ holds {len(paths):,} records; the limit is "
            f"{MAX_RECORDS:,}: delete the records of changes every site has moved past"
        )
    records = []
    for path in sorted(paths):
        doc = load_document(tree.read(path), path)
        records.append(parse_record(doc.kind, doc.spec, path=path, mark=doc.mark))
    return records


def records_by_fleet(tree: Any, fleets: Iterable[str]) -> Mapping[str, list[RolloutRecord]]:
    return {fleet: read_records(tree, fleet) for fleet in fleets}


def check_records(repo: Any, sites: Any = None) -> list[Any]:
    """Findings for every record under ``rollouts/`` that a node would refuse (CI's check).

    A node refuses a revision whose records of its fleet it cannot read (fail closed), so
    ``outpost validate`` names the file and line before the change merges.
    """
    from reconciler.core.errors import Mark, OutpostError
    from reconciler.core.findings import Finding
    from reconciler.core.loader import load_document

    findings: list[Finding] = []
    for path in repo.tree.files(ROLLOUTS_DIR, lenient=True):
        parts = path.split("/")
        if len(parts) != 3 or not path.endswith(".yaml"):
            findings.append(
                Finding.at(
                    Mark(path),
                    "unexpected file; rollout records live in rollouts/<fleet>/<change>.yaml",
                    rule="rollout",
                )
            )
            continue
        try:
            doc = load_document(repo.tree.read(path), path)
            parse_record(doc.kind, doc.spec, path=path, mark=doc.mark)
        except OutpostError as exc:
            findings.append(Finding.from_error(exc, rule="rollout"))
    return findings
