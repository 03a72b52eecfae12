"""Who may read a site's secrets: its own recipient plus its fleets' break-glass recipients.

This is the one rule every part of the secrets module enforces (the threat is
cross-site disclosure: stealing one store's node must reveal that store's
secrets and nothing else). The same function feeds ``.sops.yaml``, encryption,
validation and the node's own check, so they cannot disagree.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

from reconciler.core.errors import Mark, OutpostError
from reconciler.core.loader import Document
from reconciler.core.memo import ByIdentity
from reconciler.core.model import Repository
from reconciler.core.secrets._age import is_recipient
from reconciler.core.secrets._files import Problem
from reconciler.core.secrets._sops import ENCRYPTED_REGEX

SOPS_CONFIG = ".sops.yaml"
# One creation rule per site, about 320 bytes each: 64 MiB holds some 200,000 sites
# (the 1 MiB every other document gets would stop a fleet at about 3,300).
MAX_SOPS_CONFIG_BYTES = 64 << 20


def secrets_dir(site_id: str) -> str:
    return f"sites/{site_id}/secrets"


def path_regex(site_id: str) -> str:
    """The creation rule's path regex (site ids are DNS labels: nothing to escape)."""
    return rf"^sites/{site_id}/secrets/.*\.sops\.yaml$"


@dataclass(frozen=True)
class BreakGlass:
    recipient: str
    fleet: str
    mark: Mark


@dataclass(frozen=True)
class SiteKeys:
    """The recipients a site's secret files must be encrypted to, and where each was declared."""

    site_id: str
    spec_mark: Mark  # the site.yaml's ``spec``
    recipient_mark: Mark  # its ``spec.sops.recipient`` (or the nearest line above it)
    recipient: str | None
    break_glass: tuple[BreakGlass, ...]
    problems: tuple[Problem, ...]

    @property
    def expected(self) -> tuple[str, ...]:
        """Site recipient first, then break-glass recipients in fleet order, without repeats."""
        ordered: list[str] = [self.recipient] if self.recipient else []
        for bg in self.break_glass:
            if bg.recipient not in ordered:
                ordered.append(bg.recipient)
        return tuple(ordered)

    def describe(self, recipient: str) -> str:
        if recipient == self.recipient:
            return f"site {self.site_id!r}"
        fleets = sorted({bg.fleet for bg in self.break_glass if bg.recipient == recipient})
        if fleets:
            return f"break-glass of fleet {', '.join(fleets)}"
        return "unknown"


def load_site_doc(repo: Repository, site_id: str) -> Document:
    """Only ``site.yaml``: cheaper than ``Repository.site`` when every site is read."""
    return repo.document(f"sites/{site_id}/site.yaml", "Site", site_id)


def site_keys(repo: Repository, site_id: str, site_doc: Document | None = None) -> SiteKeys:
    """A site's recipient and its fleets' break-glass recipients (DocumentError if unreadable)."""
    doc = site_doc if site_doc is not None else load_site_doc(repo, site_id)
    problems: list[Problem] = []
    sops = doc.spec.get("sops")
    raw = sops.get("recipient") if isinstance(sops, dict) else None
    recipient: str | None = None
    if isinstance(raw, str) and is_recipient(raw):
        recipient = raw
    elif raw is not None:
        problems.append(
            Problem(
                doc.mark("spec", "sops", "recipient"),
                "spec.sops.recipient is not an age X25519 recipient (age1… with a valid "
                "checksum); run `outpost secrets init-site` to create the site's key",
            )
        )
    break_glass: list[BreakGlass] = []
    fleets = doc.spec.get("fleets")
    for fleet_name in fleets if isinstance(fleets, list) else []:
        if not isinstance(fleet_name, str):
            continue
        try:
            fleet = repo.fleet(fleet_name)
        except OutpostError:
            continue  # layer 1 of validation reports the broken fleet file
        if fleet is None:
            continue  # the reference check reports the missing fleet
        found, wrong = _break_glass(fleet.doc, fleet_name)
        break_glass += found
        problems += wrong
    return SiteKeys(
        site_id,
        doc.mark("spec"),
        doc.mark("spec", "sops", "recipient"),
        recipient,
        tuple(break_glass),
        tuple(problems),
    )


# Each fleet's break-glass recipients, read once for all its sites, by its document.
_BREAK_GLASS = ByIdentity(256)


def _break_glass(
    doc: Document, fleet_name: str
) -> tuple[tuple[BreakGlass, ...], tuple[Problem, ...]]:
    """The fleet's valid break-glass recipients, and a problem for each invalid one."""
    known = _BREAK_GLASS.get(doc)
    if known is not None and known[0] == fleet_name:
        return known[1], known[2]
    found: list[BreakGlass] = []
    problems: list[Problem] = []
    bg = doc.spec.get("breakGlass")
    entries = bg.get("recipients") if isinstance(bg, dict) else None
    for index, entry in enumerate(entries if isinstance(entries, list) else []):
        mark = doc.mark("spec", "breakGlass", "recipients", index)
        if isinstance(entry, str) and is_recipient(entry):
            found.append(BreakGlass(entry, fleet_name, mark))
        else:
            problems.append(
                Problem(
                    mark,
                    "break-glass recipient is not an age X25519 recipient (age1… with a "
                    "valid checksum)",
                )
            )
    _BREAK_GLASS.put(doc, (fleet_name, tuple(found), tuple(problems)))
    return tuple(found), tuple(problems)


# -- .sops.yaml ---------------------------------------------------------------------------------


def sops_config_text(all_keys: Iterable[SiteKeys]) -> str:
    """``.sops.yaml``: one creation rule per site that has a recipient, sorted by site id.

    Written by hand, not by a YAML dumper, so the file is stable and each recipient
    carries a comment saying whose it is.
    """
    lines = [
        "# Generated by `outpost secrets` from sites/*/site.yaml (spec.sops.recipient) and",
        "# fleets/*.yaml (spec.breakGlass.recipients). Do not edit: `outpost validate` checks",
        "# that every rule matches the tree. Regenerate with `outpost secrets sops-config`.",
        "creation_rules:",
    ]
    rules = 0
    for keys in sorted(all_keys, key=lambda k: k.site_id):
        if keys.recipient is None:
            continue
        rules += 1
        lines.append(f"  - path_regex: {path_regex(keys.site_id)}")
        lines.append(f"    encrypted_regex: {ENCRYPTED_REGEX}")
        lines.append("    age:")
        for recipient in keys.expected:
            lines.append(f"      - {recipient}  # {keys.describe(recipient)}")
    if not rules:
        lines[-1] = "creation_rules: []"
    return "\n".join(lines) + "\n"


# The shape ``sops_config_text`` writes, and nothing else: comment lines, then one block a
# site of plain scalars YAML reads exactly as written (a DNS-label site id, the one
# encrypted_regex, bech32 recipients, printable ASCII comments). A file of that shape is
# read by these patterns; any other file, edited by hand or not, by the YAML parser.
_HEAD = re.compile(rb"(?:#[ -~]*\n)*creation_rules:\n")
_EMPTY = re.compile(rb"(?:#[ -~]*\n)*creation_rules: \[\]\n")
_RULE = re.compile(
    rb"  - path_regex: (\^sites/[a-z0-9-]+/secrets/\.\*\\\.sops\\\.yaml\$)\n"
    rb"    encrypted_regex: \^\(data\|stringData\)\$\n"
    rb"    age:\n"
    rb"((?:      - age1[02-9ac-hj-np-z]+(?:  #[ -~]*)?\n)+)"
)
_RECIPIENT = re.compile(rb"      - (age1[02-9ac-hj-np-z]+)")
# The same shape as one pattern (no groups): whether a whole file has it, without a Python
# step per rule; RE2 reads a 3 MB file in 5 ms, Python's engine in 8 to 15.
_GENERATED = (
    _HEAD.pattern
    + rb"(?:"
    + _RULE.pattern.replace(b"(\\^sites", b"(?:\\^sites").replace(b"((?:  ", b"(?:(?:  ")
    + rb")*"
)

Rules = dict[str, tuple[str | None, tuple[str, ...], Mark]]

# A run over at most this many sites looks up their rules alone in a generated file.
_LOOKUPS = 100


def _parse_generated(data: bytes, path: str, only: Collection[str] | None = None) -> Rules | None:
    """The rules of a ``.sops.yaml`` as ``sops_config_text`` writes it, read without a YAML
    parser (a 3 MB file at 10,000 sites: about 30 ms, against 0.6 s); None for any other
    file. ``only``: the path_regexes asked about (a run over a few sites); the file's shape
    is still checked whole, and only their rules are read (a third of the time)."""
    if only is not None and len(only) <= _LOOKUPS:
        return _lookup_generated(data, path, only)
    head = _HEAD.match(data)
    if head is None:
        return {} if _EMPTY.fullmatch(data) else None
    rules: Rules = {}
    position = head.end()
    line = data.count(b"\n", 0, position) + 1
    for match in _RULE.finditer(data, position):
        if match.start() != position:
            return None
        rule = rules[match.group(1).decode()] = _rule(match, path, line)
        line += 3 + len(rule[1])
        position = match.end()
    return rules if position == len(data) else None


def _rule(match: re.Match[bytes], path: str, line: int) -> tuple[str, tuple[str, ...], Mark]:
    """One generated rule (a `_RULE` match starting at ``line``) as `Rules` holds it."""
    recipients = tuple(r.decode() for r in _RECIPIENT.findall(match.group(2)))
    return ENCRYPTED_REGEX, recipients, Mark(path, line)


@cache
def _generated() -> Any:
    import re2

    return re2.compile(_GENERATED)


def _lookup_generated(data: bytes, path: str, only: Collection[str]) -> Rules | None:
    """`_parse_generated` for the rules of ``only``: each is found by its first line (in
    this shape a line that starts a rule can be nothing else; the last one wins, as in a
    whole reading)."""
    if _generated().fullmatch(data) is None:
        return {} if _EMPTY.fullmatch(data) else None
    rules: Rules = {}
    for regex in sorted(only):
        start = data.rfind(b"\n  - path_regex: " + regex.encode() + b"\n") + 1
        match = _RULE.match(data, start) if start else None
        if match is not None:
            rules[regex] = _rule(match, path, data.count(b"\n", 0, start) + 1)
    return rules


def parse_sops_config(
    data: bytes, path: str = SOPS_CONFIG, *, only: Collection[str] | None = None
) -> tuple[Rules, list[Problem]]:
    """``.sops.yaml`` rules by path_regex: (encrypted_regex, age recipients, mark).

    ``only``: the path_regexes the caller will look up; the rules returned may then be
    only those (the problems are the whole file's all the same)."""
    if len(data) <= MAX_SOPS_CONFIG_BYTES:
        generated = _parse_generated(data, path, only)
        if generated is not None:
            return generated, []
    return _parse_yaml_rules(data, path)


def _parse_yaml_rules(data: bytes, path: str) -> tuple[Rules, list[Problem]]:
    from reconciler.core.loader import parse_yaml

    problems: list[Problem] = []
    rules: Rules = {}
    try:
        doc = parse_yaml(data, path, limit=MAX_SOPS_CONFIG_BYTES)[0]
    except OutpostError as exc:
        return rules, [Problem(exc.mark or Mark(path), exc.message)]
    body = doc.body
    entries = body.get("creation_rules") if isinstance(body, dict) else None
    if not isinstance(entries, list):
        return rules, [Problem(doc.mark(), "expected creation_rules: a list of rules")]
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            continue
        regex = entry.get("path_regex")
        age = entry.get("age")
        if isinstance(age, str):
            recipients = tuple(a.strip() for a in age.split(",") if a.strip())
        elif isinstance(age, list):
            recipients = tuple(str(a) for a in age)
        else:
            recipients = ()
        enc = entry.get("encrypted_regex")
        if isinstance(regex, str):
            rules[regex] = (
                enc if isinstance(enc, str) else None,
                recipients,
                doc.mark("creation_rules", index),
            )
    return rules, problems


def compare_rule(keys: SiteKeys, rules: Rules, path: str) -> Problem | None:
    """A problem if ``.sops.yaml`` would encrypt this site's new secrets to the wrong keys."""
    if keys.recipient is None:
        return None
    rule = rules.get(path_regex(keys.site_id))
    hint = "regenerate it with `outpost secrets sops-config`"
    if rule is None:
        return Problem(
            Mark(path),
            f"has no creation rule for site {keys.site_id!r}; sops would not know whom to "
            f"encrypt its new secrets to — {hint}",
        )
    encrypted_regex, recipients, mark = rule
    if set(recipients) != set(keys.expected) or encrypted_regex != ENCRYPTED_REGEX:
        return Problem(
            mark,
            f"the rule for site {keys.site_id!r} does not match the tree (expected the site's "
            "recipient plus its fleets' break-glass recipients and encrypted_regex "
            f"{ENCRYPTED_REGEX}) — {hint}",
        )
    return None


SITE_KEYS = "secrets.site_keys"
"""The name `gather_site_keys`'s facts go by (``core.validate.Gather``)."""


def gather_site_keys(repo: Repository, site_ids: Sequence[str]) -> dict[str, SiteKeys | None]:
    """Each site's keys, None for a site whose site.yaml does not load: gathered where a
    forked validation loaded the sites, for `recipient_owners` to look up."""
    gathered: dict[str, SiteKeys | None] = {}
    for site_id in site_ids:
        try:
            gathered[site_id] = site_keys(repo, site_id)
        except OutpostError:
            gathered[site_id] = None
    return gathered


def recipient_owners(
    repo: Repository, site_ids: Sequence[str]
) -> tuple[dict[str, list[str]], dict[str, SiteKeys]]:
    """Every site's recipient → the sites that declare it; and each readable site's keys
    (those `gather_site_keys` gathered are looked up, not read again)."""
    gathered: dict[str, SiteKeys | None] = getattr(repo.tree, "gathered", {}).get(SITE_KEYS, {})
    owners: dict[str, list[str]] = {}
    keys_by_site: dict[str, SiteKeys] = {}
    for site_id in site_ids:
        if site_id in gathered:
            known = gathered[site_id]
            if known is None:
                continue
            keys = known
        else:
            try:
                keys = site_keys(repo, site_id)
            except OutpostError:
                continue
        keys_by_site[site_id] = keys
        if keys.recipient:
            owners.setdefault(keys.recipient, []).append(site_id)
    return owners, keys_by_site
