"""The collector's store: SQLite by default (a file), PostgreSQL by URL; one schema, versioned.

What is kept:

- ``sites``: the newest verified report per site, with the fields the API
  filters on lifted out of it, and the signed payload and signature
  themselves (an operator can re-verify any answer by hand);
- ``history``: earlier reports per site, bounded by `prune_history` to the
  newest ``keep`` per site (run by the collector every minute, not per report:
  a window function over the table is cheaper than a delete per insert);
- ``tokens``: the read API's bearer tokens, as SHA-256 hashes only;
- ``alerts``: which alert is firing since when and whether it was notified,
  shared by every collector on one database so a webhook fires once.

Rules:

- **Newest wins, atomically.** One statement per report,
  ``INSERT … ON CONFLICT (site) DO UPDATE … WHERE sites.report_us <
  excluded.report_us``: a replay (same time) or an older report changes
  nothing, and two collectors racing on one site cannot store the older one
  last. Rows of a batch are written in site order so that two collectors'
  batches take row locks in one order (no deadlock).
- **Versioned migrations** (`MIGRATIONS`) applied at open inside one
  transaction under a lock (``pg_advisory_xact_lock`` on PostgreSQL,
  ``BEGIN IMMEDIATE`` on SQLite), so collectors starting together migrate
  once. A store migrated by a newer collector is refused, not guessed at.
- **SQL is shared**; only placeholders (``?`` vs ``%s``) and the history key
  type differ between the two databases.

Every database error leaves this module as `StoreError` (or `StoreUnavailable`
when the database cannot be reached), naming the store and what was being done.
"""

from __future__ import annotations

import contextlib
import json
import queue
import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from reconciler.core.errors import PermanentError, TemporaryError

__all__ = [
    "MIGRATIONS",
    "HistoryRecord",
    "IngestResult",
    "Row",
    "SiteRecord",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "open_store",
]

IngestResult = Literal["stored", "replay", "older"]


class StoreError(PermanentError):
    """The store is not usable as it is (schema too new, bad URL, a failed statement)."""


class StoreUnavailable(TemporaryError):
    """The database did not answer."""


_COLUMNS = (
    "site",
    "node",
    "report_us",
    "received_us",
    "digest",
    "outcome",
    "health",
    "applied",
    "applied_at",
    "pending",
    "pending_reason",
    "pending_until",
    "last_error",
    "failed",
    "source_answered",
    "warnings",
    "payload",
    "signature",
)
_SUMMARY = tuple(c for c in _COLUMNS if c not in ("payload", "signature"))

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        # 1: latest report per site, bounded history, tokens, alerts.
        """CREATE TABLE sites (
            site TEXT PRIMARY KEY, node TEXT NOT NULL, report_us BIGINT NOT NULL,
            received_us BIGINT NOT NULL, digest TEXT NOT NULL, outcome TEXT NOT NULL,
            health TEXT NOT NULL, applied TEXT, applied_at TEXT, pending TEXT,
            pending_reason TEXT, pending_until TEXT, last_error TEXT, failed TEXT NOT NULL,
            source_answered TEXT, warnings TEXT NOT NULL, payload TEXT NOT NULL,
            signature TEXT NOT NULL)""",
        "CREATE INDEX sites_applied ON sites (applied)",
        """CREATE TABLE history (
            id {serial}, site TEXT NOT NULL, node TEXT NOT NULL, report_us BIGINT NOT NULL,
            received_us BIGINT NOT NULL, digest TEXT NOT NULL, outcome TEXT NOT NULL,
            health TEXT NOT NULL, applied TEXT, applied_at TEXT, pending TEXT,
            pending_reason TEXT, pending_until TEXT, last_error TEXT, failed TEXT NOT NULL,
            source_answered TEXT, warnings TEXT NOT NULL, payload TEXT NOT NULL,
            signature TEXT NOT NULL)""",
        "CREATE INDEX history_site ON history (site, report_us)",
        """CREATE TABLE tokens (
            name TEXT PRIMARY KEY, hash TEXT NOT NULL UNIQUE, created_us BIGINT NOT NULL)""",
        """CREATE TABLE alerts (
            key TEXT PRIMARY KEY, since_us BIGINT NOT NULL, detail TEXT NOT NULL)""",
    ),
    (
        # 2: the dashboard's predicted schedule per commit and trust root, computed once
        # by whichever collector verified that head first.
        """CREATE TABLE predictions (
            commit_id TEXT NOT NULL, trust TEXT NOT NULL, computed_us BIGINT NOT NULL,
            body TEXT NOT NULL, PRIMARY KEY (commit_id, trust))""",
    ),
)
# Statements built once from the fixed column names above (no input reaches them).
_PLACEHOLDERS = ", ".join("?" for _ in _COLUMNS)
_UPSERT = (
    f"INSERT INTO sites ({', '.join(_COLUMNS)}) VALUES ({_PLACEHOLDERS}) "  # noqa: S608
    "ON CONFLICT (site) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in _COLUMNS if c != "site")
    + " WHERE sites.report_us < excluded.report_us"
)
_TYPES = {"report_us": "bigint", "received_us": "bigint"}
_NAMES = ", ".join(_COLUMNS)
_ARRAYS = ", ".join(f"%b::{_TYPES.get(c, 'text')}[]" for c in _COLUMNS)  # binary: no escaping
_SET = ", ".join(f"{c} = excluded.{c}" for c in _COLUMNS if c != "site")
_UPSERT_BATCH = (
    # PostgreSQL: a whole batch (each site at most once) in one statement, one round trip:
    # the rows arrive as one array per column, the upsert returns the rows it stored, and
    # those go into the history in the same statement (so in the same transaction).
    "WITH incoming AS "  # noqa: S608 (only the fixed column names above are built in)
    f"(SELECT * FROM unnest({_ARRAYS}) WITH ORDINALITY AS t({_NAMES}, n)), "
    f"stored AS (INSERT INTO sites ({_NAMES}) SELECT {_NAMES} FROM incoming ORDER BY n "
    f"ON CONFLICT (site) DO UPDATE SET {_SET} WHERE sites.report_us < excluded.report_us "
    f"RETURNING {_NAMES}), "
    f"kept AS (INSERT INTO history ({_NAMES}) SELECT {_NAMES} FROM stored) "
    "SELECT site FROM stored"
)
_HISTORY_INSERT = f"INSERT INTO history ({', '.join(_COLUMNS)}) VALUES ({_PLACEHOLDERS})"  # noqa: S608
_SELECT_SITES = f"SELECT {', '.join(_SUMMARY)} FROM sites"  # noqa: S608
_SELECT_HISTORY = (
    f"SELECT {', '.join((*_SUMMARY, 'payload', 'signature'))} FROM history "  # noqa: S608
    "WHERE site = ? ORDER BY report_us DESC LIMIT ?"
)
_MIGRATION_LOCK = 0x6F7574706F7374  # "outpost": the advisory lock id used while migrating


def _us(moment: datetime) -> int:
    return int(moment.timestamp() * 1_000_000)


def _from_us(value: int) -> datetime:
    return datetime.fromtimestamp(value / 1_000_000, UTC)


@dataclass(frozen=True)
class Row:
    """One verified report, ready to store."""

    site: str
    node: str
    time: datetime
    received: datetime
    digest: str
    body: Mapping[str, Any] = field(hash=False, compare=False)
    payload: str = field(repr=False, default="")
    signature: str = field(repr=False, default="")

    def values(self) -> tuple[Any, ...]:
        body = self.body
        applied: Mapping[str, Any] = _mapping(body.get("applied"))
        pending: Mapping[str, Any] = _mapping(body.get("pending"))
        failed = [str(r) for r in body.get("failedRevisions") or [] if isinstance(r, str)]
        warnings = [str(w) for w in body.get("warnings") or []]
        return (
            self.site,
            self.node,
            _us(self.time),
            _us(self.received),
            self.digest,
            _text(body.get("outcome")) or "",
            _text(body.get("health")) or "",
            _text(applied.get("revision")),
            _text(applied.get("at")),
            _text(pending.get("revision")),
            _text(pending.get("reason")),
            _text(pending.get("until")),
            _text(body.get("lastError")),
            json.dumps(failed[-50:]),
            _text(body.get("sourceLastAnswered")),
            json.dumps(warnings[:50]),
            self.payload,
            self.signature,
        )


def _list(text: str) -> tuple[str, ...]:
    """A stored JSON list of strings; most are empty, and skip the parser."""
    return () if text == "[]" else tuple(json.loads(text))


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}


def _text(value: Any) -> str | None:
    return None if value is None else str(value)[:4000]


@dataclass(frozen=True)
class SiteRecord:
    """What the store knows of one site from its newest report."""

    site: str
    node: str
    time: datetime
    received: datetime
    digest: str
    outcome: str
    health: str
    applied: str | None
    applied_at: str | None
    pending: str | None
    pending_reason: str | None
    pending_until: str | None
    last_error: str | None
    failed: tuple[str, ...]
    source_answered: str | None
    warnings: tuple[str, ...]

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> SiteRecord:
        """A row of ``_SUMMARY`` columns, whose order is this class's field order."""
        r = row
        return cls(
            r[0], r[1], _from_us(r[2]), _from_us(r[3]), r[4], r[5], r[6], r[7], r[8], r[9],
            r[10], r[11], r[12], _list(r[13]), r[14], _list(r[15]),
        )  # fmt: skip


@dataclass(frozen=True)
class HistoryRecord:
    record: SiteRecord
    payload: str = field(repr=False)
    signature: str = field(repr=False)


class Store:
    """A pool of connections to one database, and every statement the collector runs."""

    def __init__(self, target: str, *, dialect: Literal["sqlite", "postgresql"]) -> None:
        self.target = target
        self.dialect = dialect
        self._pool: queue.LifoQueue[Any] = queue.LifoQueue()
        self._lock = threading.Lock()
        self._shown = _redact(target)

    # -- connections -------------------------------------------------------------

    def _connect(self) -> Any:
        if self.dialect == "sqlite":
            try:
                conn = sqlite3.connect(
                    self.target, timeout=30, isolation_level=None, check_same_thread=False
                )
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.execute("PRAGMA busy_timeout=30000")
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"cannot open the store {self._shown}: {exc}") from None
            return conn
        import psycopg

        try:
            return psycopg.connect(self.target, connect_timeout=10, autocommit=True)
        except psycopg.Error as exc:
            raise StoreUnavailable(f"cannot connect to the store {self._shown}: {exc}") from None

    @contextlib.contextmanager
    def _conn(self) -> Iterator[Any]:
        try:
            conn = self._pool.get_nowait()
        except queue.Empty:
            conn = self._connect()
        broken = False
        try:
            yield conn
        except BaseException:
            broken = True
            raise
        finally:
            if broken:
                with contextlib.suppress(Exception):
                    conn.close()
            else:
                self._pool.put(conn)

    @contextlib.contextmanager
    def _cursor(self, what: str) -> Iterator[Any]:
        """A pooled connection's cursor; database errors become StoreError/StoreUnavailable."""
        errors = self._errors()
        try:
            with self._conn() as conn:
                yield conn.cursor()
        except errors[1] as exc:
            raise StoreUnavailable(f"{self._shown}: {what}: {exc}") from None
        except errors[0] as exc:
            raise StoreError(f"{self._shown}: {what}: {exc}") from None

    @contextlib.contextmanager
    def _transaction(self, *, write: bool, what: str) -> Iterator[Any]:
        """A cursor in one transaction; database errors become StoreError/StoreUnavailable."""
        with self._cursor(what) as cursor:
            cursor.execute("BEGIN IMMEDIATE" if write and self.dialect == "sqlite" else "BEGIN")
            try:
                yield cursor
            except BaseException:
                with contextlib.suppress(Exception):
                    cursor.execute("ROLLBACK")
                raise
            cursor.execute("COMMIT")

    def _errors(self) -> tuple[type[Exception], type[Exception]]:
        if self.dialect == "sqlite":
            return sqlite3.Error, sqlite3.OperationalError
        import psycopg

        return psycopg.Error, psycopg.OperationalError

    def _sql(self, text: str) -> str:
        return text.replace("?", "%s") if self.dialect == "postgresql" else text

    def close(self) -> None:
        while True:
            try:
                conn = self._pool.get_nowait()
            except queue.Empty:
                return
            with contextlib.suppress(Exception):
                conn.close()

    # -- schema ------------------------------------------------------------------

    def version(self) -> int | None:
        """The schema version the store is at (0: empty), or None when it cannot be told
        without taking the migration lock (a store being created right now)."""
        errors = self._errors()
        try:
            with self._conn() as conn:
                cursor = conn.cursor()
                cursor.execute("SELECT COALESCE(MAX(version), 0) FROM outpost_schema")
                return int(cursor.fetchone()[0])
        except errors[1] as exc:
            if self.dialect == "sqlite" and "no such table" in str(exc):
                return None
            raise StoreUnavailable(f"{self._shown}: reading the schema version: {exc}") from None
        except errors[0]:
            return None  # PostgreSQL: undefined table (the pooled connection was dropped)

    def migrate(self, *, now: datetime) -> int:
        """Bring the schema to the newest version; the version it is at afterwards.

        A store already at the newest version is only read (no write lock): readers
        such as ``outpost fleet status`` open it often, and next to a busy collector.
        """
        if self.version() == len(MIGRATIONS):
            return len(MIGRATIONS)
        serial = (
            "INTEGER PRIMARY KEY AUTOINCREMENT"
            if self.dialect == "sqlite"
            else "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY"
        )
        with self._transaction(write=True, what="migrating the schema") as cur:
            if self.dialect == "postgresql":
                cur.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            cur.execute(
                "CREATE TABLE IF NOT EXISTS outpost_schema "
                "(version INTEGER PRIMARY KEY, applied_us BIGINT NOT NULL)"
            )
            cur.execute("SELECT COALESCE(MAX(version), 0) FROM outpost_schema")
            current = int(cur.fetchone()[0])
            if current > len(MIGRATIONS):
                raise StoreError(
                    f"{self._shown} is at schema version {current}, newer than this collector "
                    f"knows ({len(MIGRATIONS)}); upgrade outpost before using this store"
                )
            for version in range(current + 1, len(MIGRATIONS) + 1):
                for statement in MIGRATIONS[version - 1]:
                    cur.execute(statement.replace("{serial}", serial))
                cur.execute(
                    self._sql("INSERT INTO outpost_schema (version, applied_us) VALUES (?, ?)"),
                    (version, _us(now)),
                )
        return len(MIGRATIONS)

    # -- reports -----------------------------------------------------------------

    def ingest(self, rows: Sequence[Row]) -> list[IngestResult]:
        """Store each row that is newer than the site's stored report; outcomes in order.

        Rows are applied in (site, time) order. On PostgreSQL a batch is one statement
        (`_UPSERT_BATCH`) per round, a round holding each site at most once (a second
        report of one site in a batch goes in the next round, as if it had come a moment
        later): a batch of distinct sites costs one round trip and one commit.
        """
        order = sorted(range(len(rows)), key=lambda i: (rows[i].site, rows[i].time))
        values = [rows[i].values() for i in order]
        if self.dialect == "postgresql":
            stored, current = self._ingest_postgresql(values)
        else:
            stored, current = self._ingest_sqlite(values)
        results: dict[int, IngestResult] = {}
        for index, value, ok in zip(order, values, stored, strict=True):
            if ok:
                results[index] = "stored"
            else:
                results[index] = "replay" if current.get(value[0]) == value[2] else "older"
        return [results[i] for i in range(len(rows))]

    def _ingest_sqlite(self, values: list[tuple[Any, ...]]) -> tuple[list[bool], dict[str, int]]:
        with self._transaction(write=True, what=f"storing {len(values)} report(s)") as cur:
            stored = []
            for value in values:
                cur.execute(_UPSERT, value)
                stored.append(cur.rowcount == 1)
            kept = [value for value, ok in zip(values, stored, strict=True) if ok]
            if kept:
                cur.executemany(_HISTORY_INSERT, kept)
            return stored, self._current(cur, values, stored)

    def _ingest_postgresql(
        self, values: list[tuple[Any, ...]]
    ) -> tuple[list[bool], dict[str, int]]:
        rounds: list[list[int]] = []
        seen: dict[str, int] = {}
        for index, value in enumerate(values):  # in (site, time) order
            number = seen.get(value[0], -1) + 1
            seen[value[0]] = number
            if number == len(rounds):
                rounds.append([])
            rounds[number].append(index)
        stored = [False] * len(values)
        what = f"storing {len(values)} report(s)"
        if len(rounds) == 1:  # one statement is its own transaction: no BEGIN/COMMIT trips
            with self._cursor(what) as cur:
                self._upsert_round(cur, values, rounds[0], stored)
                if all(stored):
                    return stored, {}
            with self._transaction(write=False, what=what) as cur:
                return stored, self._current(cur, values, stored)
        with self._transaction(write=True, what=what) as cur:
            for each in rounds:
                self._upsert_round(cur, values, each, stored)
            return stored, self._current(cur, values, stored)

    @staticmethod
    def _upsert_round(
        cur: Any, values: list[tuple[Any, ...]], indexes: list[int], stored: list[bool]
    ) -> None:
        """One `_UPSERT_BATCH` over ``values[i] for i in indexes``; marks what it stored."""
        columns = [list(column) for column in zip(*(values[i] for i in indexes), strict=True)]
        cur.execute(_UPSERT_BATCH, columns, prepare=True)
        written = {str(site) for (site,) in cur.fetchall()}
        for i in indexes:
            if values[i][0] in written:
                stored[i] = True

    def _current(
        self, cur: Any, values: list[tuple[Any, ...]], stored: list[bool]
    ) -> dict[str, int]:
        """The stored report time of each site with a row that was not stored (replay or older).

        On PostgreSQL's one-statement path this is read just after that statement's commit:
        if another collector stored a newer report in between, a replay is answered as
        "older". Either answer means the same to the node: nothing changed.
        """
        lost = sorted({value[0] for value, ok in zip(values, stored, strict=True) if not ok})
        current: dict[str, int] = {}
        for start in range(0, len(lost), 500):
            chunk = lost[start : start + 500]
            marks = ", ".join("?" for _ in chunk)
            cur.execute(
                self._sql(f"SELECT site, report_us FROM sites WHERE site IN ({marks})"),  # noqa: S608
                chunk,
            )
            current.update((str(site), int(us)) for site, us in cur.fetchall())
        return current

    def prune_history(self, keep: int) -> int:
        """Delete all but the newest ``keep`` history rows per site; how many went."""
        statement = self._sql(
            "DELETE FROM history WHERE id IN (SELECT id FROM (SELECT id, ROW_NUMBER() OVER "
            "(PARTITION BY site ORDER BY report_us DESC) AS n FROM history) AS ranked "
            "WHERE n > ?)"
        )
        with self._transaction(write=True, what="pruning history") as cur:
            cur.execute(statement, (keep,))
            return int(cur.rowcount)

    def sites(self, *, revision: str | None = None) -> list[SiteRecord]:
        """Every site's newest report (without the payload), by site id."""
        query = _SELECT_SITES
        args: tuple[Any, ...] = ()
        if revision:
            query += " WHERE applied = ? OR pending = ?"
            args = (revision, revision)
        with self._transaction(write=False, what="reading sites") as cur:
            if self.dialect == "postgresql":  # binary rows: no integer parsed from text
                cur.execute(self._sql(query + " ORDER BY site"), args, binary=True)
            else:
                cur.execute(query + " ORDER BY site", args)
            return [SiteRecord.from_row(row) for row in cur.fetchall()]

    def site(
        self, site: str, *, history: int = 20
    ) -> tuple[SiteRecord | None, list[HistoryRecord]]:
        """One site's newest report and up to ``history`` earlier ones, newest first."""
        with self._transaction(write=False, what=f"reading site {site}") as cur:
            cur.execute(self._sql(_SELECT_SITES + " WHERE site = ?"), (site,))
            row = cur.fetchone()
            cur.execute(self._sql(_SELECT_HISTORY), (site, history))
            rows = cur.fetchall()
        latest = SiteRecord.from_row(row) if row else None
        return latest, [HistoryRecord(SiteRecord.from_row(r), r[-2], r[-1]) for r in rows]

    def count(self) -> tuple[int, int]:
        """(sites, history rows)."""
        with self._transaction(write=False, what="counting") as cur:
            cur.execute("SELECT COUNT(*) FROM sites")
            sites = int(cur.fetchone()[0])
            cur.execute("SELECT COUNT(*) FROM history")
            return sites, int(cur.fetchone()[0])

    # -- tokens ------------------------------------------------------------------

    def add_token(self, name: str, digest: str, *, now: datetime) -> None:
        with self._transaction(write=True, what=f"adding token {name}") as cur:
            cur.execute(self._sql("SELECT 1 FROM tokens WHERE name = ?"), (name,))
            if cur.fetchone() is not None:
                raise StoreError(f"a token named {name!r} exists; remove it first")
            cur.execute(
                self._sql("INSERT INTO tokens (name, hash, created_us) VALUES (?, ?, ?)"),
                (name, digest, _us(now)),
            )

    def remove_token(self, name: str) -> bool:
        with self._transaction(write=True, what=f"removing token {name}") as cur:
            cur.execute(self._sql("DELETE FROM tokens WHERE name = ?"), (name,))
            return bool(cur.rowcount)

    def token_hashes(self) -> dict[str, str]:
        """hash → token name."""
        with self._transaction(write=False, what="reading tokens") as cur:
            cur.execute("SELECT hash, name FROM tokens")
            return {str(h): str(n) for h, n in cur.fetchall()}

    # -- predictions ---------------------------------------------------------------

    def prediction(self, commit: str, trust: str) -> str | None:
        """The kept prediction of ``commit`` under the trust root whose digest is ``trust``."""
        with self._transaction(write=False, what=f"reading the prediction of {commit[:12]}") as cur:
            cur.execute(
                self._sql("SELECT body FROM predictions WHERE commit_id = ? AND trust = ?"),
                (commit, trust),
            )
            found = cur.fetchone()
        return None if found is None else str(found[0])

    def keep_prediction(self, commit: str, trust: str, body: str, *, now: datetime) -> None:
        """Keep a prediction (the first one kept for a commit and trust root stays)."""
        with self._transaction(write=True, what=f"keeping the prediction of {commit[:12]}") as cur:
            cur.execute(
                self._sql(
                    "INSERT INTO predictions (commit_id, trust, computed_us, body) "
                    "VALUES (?, ?, ?, ?) ON CONFLICT (commit_id, trust) DO NOTHING"
                ),
                (commit, trust, _us(now), body),
            )

    def prune_predictions(self, keep: int) -> int:
        """Delete all but the ``keep`` most recently computed predictions; how many went."""
        with self._transaction(write=True, what="pruning predictions") as cur:
            cur.execute(
                self._sql(
                    "DELETE FROM predictions WHERE computed_us < (SELECT computed_us FROM "
                    "predictions ORDER BY computed_us DESC LIMIT 1 OFFSET ?)"
                ),
                (keep - 1,),
            )
            return int(cur.rowcount)

    # -- alerts ------------------------------------------------------------------

    def alerts(self) -> dict[str, tuple[datetime, str]]:
        """The alerts firing now: key → (since, detail)."""
        with self._transaction(write=False, what="reading alerts") as cur:
            cur.execute("SELECT key, since_us, detail FROM alerts")
            return {str(k): (_from_us(int(s)), str(d)) for k, s, d in cur.fetchall()}

    def claim_alert(self, key: str, *, firing: bool, now: datetime, detail: str) -> bool:
        """Record that ``key`` fires (or resolved). True for the one caller that changed it,
        which alone notifies: several collectors on one database notify once."""
        with self._transaction(write=True, what=f"recording alert {key}") as cur:
            if firing:
                cur.execute(
                    self._sql(
                        "INSERT INTO alerts (key, since_us, detail) VALUES (?, ?, ?) "
                        "ON CONFLICT (key) DO NOTHING"
                    ),
                    (key, _us(now), detail[:2000]),
                )
            else:
                cur.execute(self._sql("DELETE FROM alerts WHERE key = ?"), (key,))
            return bool(cur.rowcount == 1)


def _redact(target: str) -> str:
    """The store as shown in messages: a URL without its password."""
    if "://" not in target:
        return target
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(target)
    if parts.password is None:
        return target
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


def open_store(target: str, *, now: datetime) -> Store:
    """A path (SQLite) or a ``postgresql://`` URL; migrated to the newest schema."""
    if target.startswith(("postgresql://", "postgres://")):
        store = Store(target, dialect="postgresql")
    elif "://" in target:
        raise StoreError(f"{_redact(target)}: expected a file path (SQLite) or a postgresql:// URL")
    else:
        path = Path(target)
        if path.parent and not path.parent.is_dir():
            raise StoreError(f"{target}: the folder {path.parent} does not exist")
        store = Store(str(path), dialect="sqlite")
    store.migrate(now=now)
    return store
