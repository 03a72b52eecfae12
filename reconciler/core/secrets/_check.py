"""``outpost validate``'s secrets check: encrypted right, to the right keys, nothing in the clear.

For every selected site, every file under ``sites/<id>/secrets/``:

1. is a ``<name>.sops.yaml`` file holding a sops-encrypted v1 Secret (``_files``);
2. is encrypted to exactly the site's recipient plus its fleets' break-glass
   recipients. A recipient of another site is named as such: a secret of
   store A encrypted to store B's key is readable by whoever steals B's node;
   a missing site recipient means the node cannot decrypt it;
3. has an intact MAC, when a key is at hand (``key_file``: a node's key, or CI's
   break-glass key from ``OUTPOST_AGE_KEY_FILE``). Without a key the MAC cannot
   be checked — sops encrypts it with the data key — so CI without a key checks
   the shape only, and the node checks the MAC before it applies anything.

Also: no two sites share a recipient (one stolen node would open both), the
site has a valid recipient when it has secrets, ``.sops.yaml`` matches the tree
for the selected sites, and no plaintext secret material sits anywhere else
(``_scan``). Findings carry file:line and never a value.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from reconciler.core.errors import Mark, OutpostError
from reconciler.core.findings import Finding
from reconciler.core.loader import MAX_FILE_BYTES, YamlDocument
from reconciler.core.model import (
    SECRET_SUFFIXES,
    YAML_SUFFIXES,
    Repository,
    SiteHolders,
    folder_files,
)
from reconciler.core.secrets._age import read_key_file, short
from reconciler.core.secrets._files import EncryptedSecret, Problem, inspect
from reconciler.core.secrets._recipients import (
    MAX_SOPS_CONFIG_BYTES,
    SOPS_CONFIG,
    SiteKeys,
    compare_rule,
    parse_sops_config,
    path_regex,
    recipient_owners,
    secrets_dir,
    site_keys,
)
from reconciler.core.secrets._scan import in_config, scan_config, scan_key_material
from reconciler.core.secrets._sops import Sops
from reconciler.core.source import MAX_READ_BYTES

RULE = "secrets"
_VALIDATED_DIRS = ("sites/", "fleets/", "apps/", "policies/")
KEY_FILE_ENV = "OUTPOST_AGE_KEY_FILE"


def _finding(problem: Problem, site: str = "") -> Finding:
    return Finding.at(problem.mark, problem.message, rule=RULE, site=site)


def _recipient_findings(
    keys: SiteKeys,
    encrypted: EncryptedSecret,
    owners: dict[str, list[str]],
) -> Iterable[Finding]:
    site_id = keys.site_id
    mark = encrypted.recipients_mark
    found = set(encrypted.recipients)
    if keys.recipient is not None and keys.recipient not in found:
        yield Finding.at(
            mark,
            f"not encrypted to site {site_id!r}'s recipient {short(keys.recipient)} "
            f"({keys.recipient_mark}): the node cannot decrypt it. Re-encrypt it with "
            "`outpost secrets sync` (or sops updatekeys)",
            rule=RULE,
            site=site_id,
        )
    for bg in keys.break_glass:
        if bg.recipient not in found:
            yield Finding.at(
                mark,
                f"not encrypted to the break-glass recipient {short(bg.recipient)} of fleet "
                f"{bg.fleet!r} ({bg.mark}): operations could not recover it. Re-encrypt it "
                "with `outpost secrets sync`",
                rule=RULE,
                site=site_id,
            )
    for recipient in sorted(found - set(keys.expected)):
        others = [s for s in owners.get(recipient, []) if s != site_id]
        if others:
            message = (
                f"a secret of site {site_id!r} is encrypted to site {others[0]!r}'s key "
                f"({short(recipient)}): whoever holds {others[0]!r}'s node can read "
                f"{site_id!r}'s secret. Encrypt it to {site_id!r}'s recipient and break-glass "
                f"only, and change the value"
            )
        else:
            message = (
                f"encrypted to {short(recipient)}, which is neither site {site_id!r}'s "
                "recipient nor a break-glass recipient of its fleets: someone outside the "
                "site can read it. Re-encrypt it to the expected recipients and change the value"
            )
        yield Finding.at(mark, message, rule=RULE, site=site_id)


def check_secrets(
    repo: Repository,
    sites: Sequence[str],
    *,
    key_file: Path | None = None,
    sops: Sops | None = None,
    holders: SiteHolders | None = None,
) -> list[Finding]:
    """Every secrets finding for ``sites`` plus the plaintext scan of the rest of the tree.

    The signature after ``repo, sites`` is keyword-only so ``secrets_check`` can bind
    the key and hand the result to ``validate_tree(extra=...)``. ``holders``: which other
    sites' site.yaml may hold a recipient (`_recipients`); without it each is read.
    """
    findings: list[Finding] = []
    tree = repo.tree
    selected = set(sites)
    # A run over a few sites (--changed-since) lists only their folders, not all of sites/.
    partial = not selected.issuperset(repo.site_folders)
    secret_files: dict[str, list[str]] = {}
    for path in (
        _site_files(tree, sorted(selected)) if partial else tree.files("sites", lenient=True)
    ):
        parts = path.split("/")
        if len(parts) >= 4 and parts[2] == "secrets":
            secret_files.setdefault(parts[1], []).append(path)
    # What needs no other site first: in a run over a few sites, git's grep for the other
    # sites' recipients (``holders``) finishes meanwhile instead of being waited for.
    config, config_findings = _sops_config(tree)
    asked = [path_regex(site_id) for site_id in selected] if partial else None
    rules, problems = parse_sops_config(config, only=asked) if config is not None else ({}, [])
    scanned = scan_tree(repo, sites)
    owners, keys_by_site = _recipients(repo, selected, secret_files, holders)
    key_recipients: set[str] = set()
    if key_file is not None:
        try:
            key_recipients = {i.recipient for i in read_key_file(key_file)}
        except OutpostError as exc:
            findings.append(Finding.from_error(exc, rule=RULE))
    to_verify: list[tuple[str, str, bytes]] = []

    for recipient, site_ids in sorted(owners.items()):
        for site_id in site_ids[1:]:
            if site_id in selected or site_ids[0] in selected:
                findings.append(
                    Finding.at(
                        keys_by_site[site_id].recipient_mark,
                        f"site {site_id!r} shares its age recipient {short(recipient)} with "
                        f"site {site_ids[0]!r}: one stolen node would open both sites' "
                        "secrets. Give each site its own key (`outpost secrets rotate-site`)",
                        rule=RULE,
                        site=site_id,
                    )
                )

    for site_id in sorted(selected):
        keys = keys_by_site.get(site_id)
        if keys is None:
            continue  # site.yaml does not load: layer 1 of validation reports it
        findings.extend(_finding(p, site_id) for p in keys.problems)
        files = secret_files.get(site_id, [])
        if files and keys.recipient is None and not keys.problems:
            findings.append(
                Finding.at(
                    keys.spec_mark,
                    f"site {site_id!r} has {len(files)} secret file(s) but no "
                    "spec.sops.recipient; run `outpost secrets init-site` to create its key",
                    rule=RULE,
                    site=site_id,
                )
            )
        names: dict[tuple[str, str], str] = {}
        for path in files:
            if not path.endswith(SECRET_SUFFIXES):
                findings.append(
                    Finding.at(
                        Mark(path),
                        f"only encrypted <name>.sops.yaml files belong in {secrets_dir(site_id)}/"
                        " (if this file holds a plaintext secret, treat it as leaked)",
                        rule=RULE,
                        site=site_id,
                    )
                )
                continue
            try:
                data = tree.read(path, MAX_FILE_BYTES)
            except OutpostError as exc:
                findings.append(Finding.from_error(exc, rule=RULE, site=site_id))
                continue
            encrypted = inspect(data, path)
            findings.extend(_finding(p, site_id) for p in encrypted.problems)
            if encrypted.document is None or not encrypted.recipients:
                continue
            if keys.recipient is not None:
                findings.extend(_recipient_findings(keys, encrypted, owners))
            place = (encrypted.namespace, encrypted.name)
            if encrypted.name and place in names:
                findings.append(
                    Finding.at(
                        encrypted.document.mark("metadata", "name"),
                        f"Secret {place[0] or '(default)'}/{place[1]} is also defined in "
                        f"{names[place]}; the two would overwrite each other",
                        rule=RULE,
                        site=site_id,
                    )
                )
            names.setdefault(place, path)
            if key_recipients & set(encrypted.recipients) and encrypted.ok:
                to_verify.append((site_id, path, data))

    if key_file is not None and to_verify:
        findings.extend(_verify_macs(to_verify, key_file, sops or Sops()))

    findings += config_findings
    if config is not None:
        findings.extend(_finding(p) for p in problems)
        if not problems:
            for site_id in sorted(selected):
                site = keys_by_site.get(site_id)
                problem = compare_rule(site, rules, SOPS_CONFIG) if site else None
                if problem is not None:
                    findings.append(_finding(problem, site_id))
    elif not config_findings and any(k.recipient for k in keys_by_site.values()):
        findings.append(
            Finding.at(
                Mark(SOPS_CONFIG),
                "missing: sops needs it to know whom new secrets are encrypted to; generate it "
                "with `outpost secrets sops-config`",
                rule=RULE,
            )
        )

    findings.extend(scanned)
    return findings


def _sops_config(tree: Any) -> tuple[bytes | None, list[Finding]]:
    """``.sops.yaml``'s bytes (None if there is none), or the finding saying why it could
    not be read (a FIFO, a huge file: said, not read)."""
    if not tree.exists(SOPS_CONFIG):
        return None, []
    try:
        return tree.read(SOPS_CONFIG, MAX_SOPS_CONFIG_BYTES), []
    except OutpostError as exc:
        return None, [Finding.from_error(exc, rule=RULE)]


def _site_files(tree: Any, sites: Sequence[str]) -> list[str]:
    """The files of ``sites``' folders, each folder walked on its own (a linked one is not
    read through: validation reports it), sorted as one walk of ``sites/`` lists them."""
    found: list[str] = []
    for site in sites:
        try:
            found += folder_files(tree, f"sites/{site}")
        except OutpostError:
            continue  # a folder name that cannot be listed: layer 1 reports it
    return sorted(found)


# Each "age1" and the 58 letters after it: the literal first lets the engine skip to each
# "age1" (seven times quicker over 7,500 site.yaml files than a lookahead at every byte),
# and the lookahead lets runs overlap (no "age1" can start within another's first four).
_RECIPIENT_RUN = re.compile(rb"age1(?=([0-9a-z]{58}))")


def _recipient_runs(data: bytes) -> list[bytes]:
    """Every recipient-shaped run of ``data`` ("age1" and 58 of [0-9a-z]), overlapping."""
    return [b"age1" + tail for tail in _RECIPIENT_RUN.findall(data)]


_RECIPIENT_SHAPE = re.compile(r"age1[0-9a-z]{58}")


def _recipients(
    repo: Repository,
    selected: set[str],
    secret_files: dict[str, list[str]],
    holders: SiteHolders | None = None,
) -> tuple[dict[str, list[str]], dict[str, SiteKeys]]:
    """``recipient_owners`` as far as the checks of ``selected`` sites can tell.

    Those checks ask who else declares a selected site's recipient, who owns a
    recipient its secret files are encrypted to, and whether any site declares a
    recipient at all. A site.yaml can declare a recipient (``age1`` and 58 letters,
    no space) only if its bytes hold it literally, or through a double-quoted
    escape, which needs a backslash: a partial run (``--changed-since``) parses the
    other sites' site.yaml only when their bytes could answer one of those
    questions, instead of all 10,000 of them. Every site's are parsed otherwise. The
    other sites' names come from one read of ``sites/`` (`Repository.site_folders`), and
    their site.yaml is peeked at without asking git about each: a hit is read again
    through the tree, which refuses what git ignores. ``holders`` narrows the peeks to the
    sites whose site.yaml holds one of the byte strings asked about (git's grep, for
    ``--changed-since``); the same tests then run on those sites' bytes.
    """
    every = list(repo.site_folders)
    if selected.issuperset(every):
        return recipient_owners(repo, list(repo.site_ids))
    mine = [site_id for site_id in every if site_id in selected]
    _, keys_by_site = recipient_owners(repo, mine)
    wanted = {keys.recipient for keys in keys_by_site.values() if keys.recipient}
    any_recipient = not wanted  # then: does any site declare one (.sops.yaml is needed)?
    needles = [b"age1"] if any_recipient else []
    for site_id in mine:
        for path in secret_files.get(site_id, []):
            if path.endswith(SECRET_SUFFIXES):
                try:
                    wanted.update(inspect(repo.tree.read(path), path).recipients)
                except OutpostError:
                    continue  # the main loop reports the unreadable file
    # Each file is cut into its recipient-shaped runs (overlapping, so no run hides
    # another) and those are looked up, rather than each recipient searched for in each
    # file: a shard of a CI matrix asks about thousands of recipients in thousands of files.
    wanted_bytes = {r.encode() for r in wanted if _RECIPIENT_SHAPE.fullmatch(r)}
    needles += [r.encode() for r in sorted(wanted) if not _RECIPIENT_SHAPE.fullmatch(r)]
    hits = holders("site.yaml", {*wanted_bytes, *needles}) if holders is not None else None
    from reconciler.core._fork import map_runs

    def answerable(run: Sequence[str]) -> list[tuple[str, bytes]]:
        found: list[tuple[str, bytes]] = []
        for site_id in run:
            data = repo.tree.peek(f"sites/{site_id}/site.yaml")
            if data is None:
                continue  # no site.yaml: no recipient either
            if (
                b"\\" in data
                or any(needle in data for needle in needles)
                or not wanted_bytes.isdisjoint(_recipient_runs(data))
            ):
                found.append((site_id, data))
        return found

    rest = [s for s in every if s not in selected and (hits is None or s in hits)]
    # A shard of a CI matrix peeks at the other 7,500 sites' site.yaml: in forked workers.
    fork = repo.tree.revision is None
    texts = dict(map_runs(answerable, rest, PARALLEL_MIN_FILES, fork=fork))
    others = _answering(repo, keys_by_site, texts, wanted, any_recipient=any_recipient)
    return recipient_owners(repo, sorted({*mine, *others}))


def _answering(
    repo: Repository,
    mine: dict[str, SiteKeys],
    texts: dict[str, bytes],
    wanted: set[str],
    *,
    any_recipient: bool,
) -> set[str]:
    """Which of the other sites whose site.yaml may declare a ``wanted`` recipient (its
    bytes in ``texts``) the findings of the selected sites (``mine``) depend on.

    The findings name a recipient's first owner by site name (a shared recipient, a
    secret encrypted to another site's key), and every other owner only when that first
    owner is a selected site. So the candidates are parsed in name order: for each
    recipient, until its first owner is found, or, once past the first selected owner,
    all the rest. With ``any_recipient``, until one site declares any recipient.
    """
    declared: dict[str, str | None] = {}

    def owner(site_id: str) -> str | None:
        if site_id not in declared:
            try:
                declared[site_id] = site_keys(repo, site_id).recipient
            except OutpostError:
                declared[site_id] = None
        return declared[site_id]

    needed: set[str] = set()
    ordered = sorted(texts)
    escaped = {s for s in ordered if b"\\" in texts[s]}
    holders: dict[bytes, set[str]] = {}  # a recipient-shaped run → the sites whose bytes hold it
    for site_id in ordered:
        for run in set(_recipient_runs(texts[site_id])):
            holders.setdefault(run, set()).add(site_id)
    # Each recipient's first owner among the selected sites (a shard has thousands of both).
    first_selected: dict[str, str] = {}
    for site_id, keys in sorted(mine.items()):
        if keys.recipient is not None:
            first_selected.setdefault(keys.recipient, site_id)
    for recipient in sorted(wanted):
        needle = recipient.encode()
        if _RECIPIENT_SHAPE.fullmatch(recipient):
            candidates = sorted(holders.get(needle, set()) | escaped)
        else:
            candidates = [s for s in ordered if needle in texts[s] or s in escaped]
        first = first_selected.get(recipient)
        for index, site_id in enumerate(candidates):
            if first is not None and site_id > first:
                needed.update(s for s in candidates[index:] if owner(s) == recipient)
                break
            if owner(site_id) == recipient:
                needed.add(site_id)
                break
    if any_recipient:
        needed.update(next(([s] for s in ordered if owner(s)), []))
    return needed


def _verify_macs(
    items: Sequence[tuple[str, str, bytes]], key_file: Path, sops: Sops
) -> list[Finding]:
    """Decrypt each file to check its MAC; the plaintext is dropped at once."""

    def verify(item: tuple[str, str, bytes]) -> Finding | None:
        site_id, path, data = item
        try:
            sops.decrypt(data, key_file=key_file, path=path)
        except OutpostError as exc:
            return Finding.from_error(exc, rule=RULE, site=site_id)
        return None

    from concurrent.futures import ThreadPoolExecutor  # only with a key to check MACs

    workers = max(1, min(4, os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(verify, items))
    return [f for f in results if f is not None]


# From this many files on, a working directory's files are scanned by forked workers.
PARALLEL_MIN_FILES = 3000


def scan_tree(repo: Repository, sites: Sequence[str]) -> list[Finding]:
    """Plaintext secret material in the tree outside the secrets folders.

    With a narrowed ``sites`` only those site folders are read, plus everything
    outside ``sites/``. Each file is scanned on its own, so a large working
    directory is scanned by forked workers in contiguous runs of paths; the
    findings come back in path order.
    """
    from reconciler.core._fork import map_runs

    wanted = {f"sites/{s}/" for s in sites}
    tree = repo.tree
    try:
        if set(sites).issuperset(repo.site_folders):
            paths = tree.files(lenient=True)
        else:  # a few sites: the rest of the tree and their folders, not every site's
            files, folders = tree.children("")
            paths = files + [
                p for top in folders if top != "sites" for p in tree.files(top, lenient=True)
            ]
            paths = sorted(paths + _site_files(tree, sorted(set(sites))))
    except OutpostError:
        return []  # layer 1 of validation reports an unreadable tree
    # Files validation's first layer read and scanned with ``scan_file`` as it read them.
    done: frozenset[str] = getattr(tree, "file_checked", frozenset())
    selected: list[tuple[str, str]] = []
    for path in paths:
        if path in done:
            continue
        site = ""
        if path.startswith("sites/"):
            parts = path.split("/")
            site = parts[1] if len(parts) > 2 else ""
            if f"sites/{site}/" not in wanted:
                continue
        selected.append((path, site))

    def scan(run: Sequence[tuple[str, str]]) -> list[Finding]:
        findings: list[Finding] = []
        for path, site in run:
            try:
                limit = MAX_SOPS_CONFIG_BYTES if path == SOPS_CONFIG else MAX_READ_BYTES
                data = tree.read(path, limit)
            except OutpostError as exc:
                # Unread is unscanned: a key could hide in a file too large or not regular.
                # Validation's file layer already reports the YAML files it reads, and the
                # recipients check above reports .sops.yaml.
                reported = path == SOPS_CONFIG or (
                    path.endswith(YAML_SUFFIXES) and path.startswith(_VALIDATED_DIRS)
                )
                if not reported:
                    findings.append(Finding.from_error(exc, rule=RULE, site=site))
                continue
            findings += scan_file(path, data)
        return findings

    return map_runs(scan, selected, PARALLEL_MIN_FILES, fork=tree.revision is None)


def scan_file(
    path: str, data: bytes, documents: Sequence[YamlDocument] | None = None
) -> list[Finding]:
    """``scan_tree``'s findings for one file it would read: key material, and in configuration
    files secret manifests and literal passwords (``documents``: ``data`` parsed already).

    Also a ``validate.FileCheck``: validation runs it on each file its first layer reads, so
    the scan does not read and parse those files a second time (``scan_tree`` skips them).
    """
    site = path.split("/")[1] if path.startswith("sites/") and path.count("/") >= 2 else ""
    findings = [_finding(p, site) for p in scan_key_material(path, data)]
    if in_config(path):
        findings += [_finding(p, site) for p in scan_config(path, data, documents)]
    return findings


Check = Callable[[Repository, Sequence[str]], Iterable[Finding]]


def secrets_check(
    key_file: Path | None = None, *, sops: Sops | None = None, holders: SiteHolders | None = None
) -> Check:
    """The check to pass to ``validate_tree(extra=[...])``, with the MAC key bound (or none)
    and, for a run over a few sites, how to find the other sites that may share a recipient
    (``holders``, see `_recipients`)."""

    def check(repo: Repository, sites: Sequence[str]) -> list[Finding]:
        return check_secrets(repo, sites, key_file=key_file, sops=sops, holders=holders)

    return check


def key_file_from_env(environ: dict[str, str] | None = None) -> Path | None:
    """``OUTPOST_AGE_KEY_FILE`` (CI's break-glass key for MAC checks), or None."""
    env = os.environ if environ is None else environ
    value = env.get(KEY_FILE_ENV, "").strip()
    return Path(value) if value else None
