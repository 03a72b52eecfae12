"""The node's memory between ticks: what was applied, what failed, what the source offered.

Every file here is written by ``core.files`` the way python-tuf persists metadata: a temporary
file in the same directory, ``fsync``, ``os.replace``, then ``fsync`` of the
directory. A kill at any instant leaves either the old file or the new one,
never a torn one, and the next tick converges from whichever it finds.

Two flushes are left out where a power cut can only cost what the next tick writes again:
the status and the metrics (rewritten by every tick), and state.json after a tick that
changed nothing in it but its clock readings (`AgentState.lasting`: when the source last
answered, when a tick last succeeded), which is nearly every tick. The rename still makes
each write whole for readers; after a power cut the file holds the old bytes or the new
(or, on a file system that does not write a renamed file's data first, nothing: a state
file that cannot be read is recovered as below). Anything else the tick decided, it flushes.

A state file that cannot be read (a disk error, a hand edit) is not guessed
at: it is moved aside as ``state.json.corrupt-<time>``, and the agent recovers
what it applied, refused and failed from the mirror's refs and the cluster's
inventory (`reconciler.node.recovery`): a lost file never lowers the floor.

The other records of the directory (``first-seen.json``, ``trust-roots.json``,
``heartbeat.json``) are read by `read_record`: bounded like every read
(`reconciler.core.source.read_file`: a FIFO, a link or a huge file is refused
before a byte is read), then checked to be the JSON object of the kind the agent
wrote. One that is not is `RecordUnreadable`, whose message names the file and
says what it should hold; its owner moves it aside (`set_aside`, as
``<name>.corrupt``) and goes on in the direction that is safe for that record.

Nothing secret is ever written here: rendered Secrets live only in memory.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from reconciler.core.envelope import loads, read_object
from reconciler.core.errors import ConfigError, DocumentError
from reconciler.core.files import atomic_write, json_bytes, write_into_folder, write_json
from reconciler.core.source import read_file

STATE_FILE = "state.json"
STATUS_FILE = "status.json"
METRICS_FILE = "outpost.prom"
LOCK_FILE = "agent.lock"
SLICE_FILE = "slice.json"
MAX_SLICE_BYTES = 16 * 1024 * 1024
SCHEMA_VERSION = 1
MAX_STATUS_BYTES = 4 * 1024 * 1024
MAX_STATE_BYTES = 4 * 1024 * 1024
"""state.json: bounded lists (`_bounded` in the agent) of commit ids and short reasons."""
STATE_DIRECTORY = "the state directory"


@dataclass(frozen=True)
class AgentState:
    """What the agent knows after its last tick. Revisions are full commit ids."""

    site: str = ""
    applied: str | None = None
    applied_at: float | None = None
    last_good: str | None = None
    failed: tuple[str, ...] = ()
    failed_reasons: Mapping[str, str] = field(default_factory=dict)
    refused: Mapping[str, str] = field(default_factory=dict)
    inventory: tuple[str, ...] = ()
    fetched: str | None = None
    fetched_at: float | None = None
    source_answered_at: float | None = None
    last_success_at: float | None = None
    schema: int = SCHEMA_VERSION

    def with_(self, **changes: Any) -> AgentState:
        return replace(self, **changes)

    def lasting(self) -> AgentState:
        """This state without the clock readings every tick moves (when the source last
        answered, when the last tick succeeded): what a power cut must not take back."""
        return replace(self, fetched_at=None, source_answered_at=None, last_success_at=None)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["failed"] = list(self.failed)
        data["inventory"] = list(self.inventory)
        data["refused"] = dict(self.refused)
        data["failed_reasons"] = dict(self.failed_reasons)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> AgentState:
        if data.get("schema") != SCHEMA_VERSION:
            raise ValueError(f"state schema {data.get('schema')!r}, expected {SCHEMA_VERSION}")
        inventory = tuple(data.get("inventory", ()))
        if not all(isinstance(key, str) for key in inventory):
            raise ValueError("inventory: expected a list of object keys (strings)")
        return cls(
            site=str(data.get("site", "")),
            applied=data.get("applied"),
            applied_at=data.get("applied_at"),
            last_good=data.get("last_good"),
            failed=tuple(data.get("failed", ())),
            failed_reasons=dict(data.get("failed_reasons", {})),
            refused=dict(data.get("refused", {})),
            inventory=inventory,
            fetched=data.get("fetched"),
            fetched_at=data.get("fetched_at"),
            source_answered_at=data.get("source_answered_at"),
            last_success_at=data.get("last_success_at"),
        )


class StateStore:
    """The state directory: state, status, metrics, lock."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    @property
    def state_path(self) -> Path:
        return self.directory / STATE_FILE

    def load(self, site: str, *, now: float) -> tuple[AgentState, str | None]:
        """The saved state (or a fresh one) and a warning if a corrupt file was set aside."""
        if not os.path.lexists(self.state_path):
            return AgentState(site=site), None
        try:
            raw = read_file(
                self.state_path, str(self.state_path), MAX_STATE_BYTES, holder=STATE_DIRECTORY
            )
            state = AgentState.from_json(loads(raw))
        except (DocumentError, ValueError, TypeError, AttributeError) as exc:
            aside = self.state_path.with_name(f"{STATE_FILE}.corrupt-{int(now)}")
            os.replace(self.state_path, aside)
            return AgentState(site=site), (
                f"{self.state_path} could not be read ({exc}); moved it to {aside.name} "
                "and started from the cluster's inventory"
            )
        if state.site and state.site != site:
            raise ConfigError(
                f"{self.state_path} belongs to site {state.site!r} but this node is configured "
                f"as {site!r}; a node serves one site (move the state directory away to re-enroll)"
            )
        return state, None

    def save(self, state: AgentState, *, durable: bool = True) -> None:
        """Write state.json; ``durable=False`` (a tick that moved only its clock readings,
        `AgentState.lasting`) leaves out the flush to disk, see the module docstring."""
        write_json(self.state_path, state.to_json(), durable=durable)

    def write_status(self, status: Mapping[str, Any], outbox: Path | None = None) -> str | None:
        """Write status.json, and a copy into ``outbox`` (removable media) when set.

        The outbox usually lives on a USB stick, which is not trusted: it is written only
        if it is a real folder (opened without following a link), never through a symlink.
        Returns why the copy was not written, or None.
        """
        data = json_bytes(status)
        atomic_write(self.directory / STATUS_FILE, data, durable=False)  # rewritten every tick
        if outbox is None:
            return None
        site = str(status.get("site", "site"))
        try:
            write_into_folder(outbox, f"outpost-status-{site}.json", data)
        except OSError as exc:
            return f"the status copy was not written to the outbox {outbox}: {exc.strerror or exc}"
        return None

    def read_status(self) -> dict[str, Any] | None:
        """The last tick's status; None before the first tick.

        `StatusUnreadable` (naming the file) when it is not a status document: a disk
        error, a hand edit, a truncated copy. The agent never reads it back, so the next
        tick rewrites it whole.
        """
        try:
            return read_record(self.directory / STATUS_FILE, "SiteStatus", MAX_STATUS_BYTES)
        except RecordUnreadable as exc:
            raise StatusUnreadable(f"{exc.message}; the next tick rewrites it") from None

    def slice_holds(self, record: Mapping[str, Any], keys: Sequence[str]) -> bool:
        """Whether every one of ``keys`` is in the slice ``record`` (`read_slice`) lists."""
        return {slice_key_digest(k) for k in keys} <= set(record["keys"])

    def read_slice(self, basis: str) -> dict[str, Any] | None:
        """The record of the applied slice (`write_slice`), if it was written under ``basis``.

        Anything else (no file, another basis, a file that does not read as a record) is
        None: the agent then renders the slice, as it would without a record.
        """
        try:
            data = loads(read_file(self.directory / SLICE_FILE, SLICE_FILE, MAX_SLICE_BYTES))
        except (DocumentError, ValueError):
            return None
        if not isinstance(data, dict) or data.get("basis") != basis:
            return None
        if not isinstance(data.get("objects"), list) or not isinstance(data.get("secrets"), bool):
            return None
        keys = data.get("keys")
        if not (isinstance(keys, list) and all(isinstance(k, str) for k in keys)):
            return None
        if not isinstance(data.get("secretVersions"), list):
            data["secretVersions"] = None  # not recorded: the Secrets are decrypted to check
        return data

    def write_slice(
        self,
        basis: str,
        revision: str,
        objects: list[Any],
        *,
        secrets: bool,
        keys: Sequence[str],
        secret_versions: list[Any] | None = None,
    ) -> None:
        """Record what the drift check needs of the applied slice without rendering it again:
        each object's fingerprint (`ResourceManager.record`: never a Secret's, never a value),
        whether the slice has Secrets, the uid and resourceVersion at which each Secret was
        last found in line (`ResourceManager.record_secrets`; None: not known, the Secrets
        are decrypted and checked), and the keys of the whole slice as digests, to tell an
        unfinished rollback: the state listing more than them."""
        write_json(
            self.directory / SLICE_FILE,
            {
                "basis": basis,
                "revision": revision,
                "secrets": secrets,
                "secretVersions": secret_versions,
                "objects": objects,
                "keys": sorted(slice_key_digest(k) for k in keys),
            },
        )

    def write_slice_secrets(self, record: Mapping[str, Any], versions: list[Any] | None) -> None:
        """The slice ``record`` (`read_slice`) written again with the Secrets' ``versions``
        just found in line; nothing is written without them."""
        if versions is not None:
            write_json(self.directory / SLICE_FILE, {**record, "secretVersions": versions})

    def write_metrics(self, text: str, textfile_dir: Path | None = None) -> None:
        """The Prometheus textfile, here and in node_exporter's folder (rewritten every tick:
        atomic, not flushed)."""
        atomic_write(self.directory / METRICS_FILE, text.encode(), durable=False)
        if textfile_dir is not None:
            atomic_write(textfile_dir / METRICS_FILE, text.encode(), durable=False)

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """One agent per node: a second instance fails at once instead of queueing."""
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno in (errno.EAGAIN, errno.EACCES):
                    holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
                    raise AgentBusy(
                        f"another outpost agent (pid {holder}) holds {self.directory / LOCK_FILE}; "
                        "this run exits without doing anything"
                    ) from None
                raise
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            self._clear_stale_temps()
            yield
        finally:
            os.close(fd)

    def _clear_stale_temps(self) -> None:
        """Remove the temporary files of writes a kill cut short (``.state.json.x1y2.tmp``).

        Only called with the lock held: no other writer can own one, so each was left by a
        process killed between writing it and renaming it into place. Without this, every
        power cut at the wrong instant would leave one more file behind for good.
        """
        for temp in self.directory.glob(".*.tmp"):
            if temp.is_file() and not temp.is_symlink():
                temp.unlink(missing_ok=True)


class RecordUnreadable(ConfigError):
    """A file of the state directory is not the record the agent wrote there."""


def slice_key_digest(key: str) -> str:
    """A slice record's entry for an object's key: its SHA-256, hex."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def read_record(path: Path, kind: str, limit: int) -> dict[str, Any] | None:
    """The JSON object of ``kind`` in ``path``; None when there is no such file.

    `RecordUnreadable` naming the file and saying what it should hold when it is not a
    regular file of at most ``limit`` bytes, not JSON, or not an object of that kind.
    """
    if not os.path.lexists(path):
        return None

    def bad(reason: str) -> RecordUnreadable:
        return RecordUnreadable(
            f"{path}: {reason}; expected a JSON object of kind {kind} written by the agent"
        )

    try:
        raw = read_file(path, str(path), limit, holder=STATE_DIRECTORY)
    except DocumentError as exc:
        raise bad(exc.message) from None
    data = read_object(raw, cap=limit, what=f"a {kind} record", bad=bad)
    if data.get("kind") != kind:
        raise bad(f"found an object of kind {str(data.get('kind'))[:40]!r}")
    return data


_LATEST = 253_402_300_799  # 9999-12-31T23:59:59Z, the last second a datetime holds


def unix_time(value: object) -> float | None:
    """A record's unix time: a number a datetime can hold (not NaN, not infinite, not a
    boolean), as a float; None for anything else."""
    if isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value <= _LATEST:
        return float(value)
    return None


def wrong_field(path: Path, field: str, expected: str, found: object) -> RecordUnreadable:
    """The error for a record whose ``field`` is not what the agent writes there."""
    shown = repr(found)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    return RecordUnreadable(f"{path}: field {field} is {shown}; expected {expected}")


def set_aside(path: Path, problem: RecordUnreadable, then: str) -> str:
    """Move the unreadable record ``path`` to ``<name>.corrupt`` (for whoever looks into it;
    the one before is replaced) and return the warning: the problem, where the file went, and
    ``then``, what the node does instead."""
    aside = path.with_name(f"{path.name}.corrupt")
    try:
        os.replace(path, aside)
        kept = f"moved it to {aside.name}"
    except OSError as exc:
        kept = f"could not move it aside ({exc.strerror})"
    return f"{problem}; {kept}; {then}"


class StatusUnreadable(ConfigError):
    """status.json exists but is not a status document."""


class AgentBusy(ConfigError):
    """Another agent instance holds the lock."""


def prometheus_text(samples: Sequence[tuple[str, str, Mapping[str, str], float]]) -> str:
    """Prometheus text exposition: (name, help, labels, value) per sample, grouped by name."""
    lines: list[str] = []
    seen: set[str] = set()
    for name, help_text, labels, value in samples:
        if name not in seen:
            lines.append(f"# HELP {name} {help_text}")
            lines.append(f"# TYPE {name} gauge")
            seen.add(name)
        label_text = ",".join(f'{k}="{_escape_label(v)}"' for k, v in sorted(labels.items()))
        rendered = f"{name}{{{label_text}}}" if label_text else name
        number = str(int(value)) if float(value).is_integer() else repr(float(value))
        lines.append(f"{rendered} {number}")
    return "\n".join(lines) + "\n"


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
