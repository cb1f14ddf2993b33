"""`Store`: the one small interface behind the ledger and the shared budget, and what both stores share.

A store holds three tables (`schema`): `attempts` (one row per attempt, written by the ledger's
background thread), `owners` (one row per process that opened the store, with a heartbeat) and
`budget_holds` (money reserved by requests in flight). An owner is gone when its heartbeat is
older than `STALE_S`, or at once when it ran on this host and its process no longer exists; the
holds of a gone owner no longer count, and its attempts left without an outcome are orphans for
`Router.recover()`. Implementations only say how to connect, run SQL and take a lock.
"""

from __future__ import annotations

import contextlib
import functools
import os
import socket
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Concatenate, ParamSpec, TypeVar

from lightning_client.state.schema import MIGRATIONS, STORED_COLUMNS, VERSION, Migrator

__all__ = ["HEARTBEAT_S", "STALE_S", "Store", "Totals", "pid_alive"]

#: How often an open store refreshes its owner's heartbeat, and after how long without one it is gone.
HEARTBEAT_S = 10.0
STALE_S = 60.0

Row = dict[str, Any]

_UPSERT = (
    f"INSERT INTO attempts ({', '.join(STORED_COLUMNS)}) VALUES ({', '.join('?' * len(STORED_COLUMNS))}) "
    "ON CONFLICT (attempt_id) DO UPDATE SET "
    + ", ".join(
        f"{c} = COALESCE(excluded.{c}, attempts.{c})" if c == "request" else f"{c} = excluded.{c}"
        for c in STORED_COLUMNS[1:]
    )
)
_TOTALS = (
    "SELECT 'spent' AS kind, CAST(NULL AS TEXT) AS owner, CAST(NULL AS TEXT) AS host, CAST(NULL AS INTEGER) AS pid,"
    " COALESCE(SUM(cost_known_usd), 0) AS a,"
    " COALESCE(SUM(CASE WHEN started_at >= ? THEN cost_known_usd ELSE 0 END), 0) AS b"
    " FROM attempts WHERE COALESCE(budget, 'default') = ?"
    " UNION ALL"
    " SELECT 'hold', h.owner, o.host, o.pid, MAX(o.heartbeat_at), SUM(h.usd)"
    " FROM budget_holds h LEFT JOIN owners o ON o.owner = h.owner"
    " WHERE h.budget = ? AND h.expires_at > ? GROUP BY h.owner, o.host, o.pid"
)


def pid_alive(pid: int) -> bool:
    """Whether process `pid` exists on this host and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            return handle.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return True


P = ParamSpec("P")
R = TypeVar("R")


def _reconnecting(method: Callable[Concatenate[Store, P], R]) -> Callable[Concatenate[Store, P], R]:
    """Run `method`; after a lost connection (a server restart, a dropped link), once more on a new one."""

    def run(store: Store, /, *args: P.args, **kwargs: P.kwargs) -> R:
        with store._lock:
            try:
                return method(store, *args, **kwargs)
            except Exception:
                if not store._reconnect():
                    raise
                return method(store, *args, **kwargs)

    functools.update_wrapper(run, method)
    return run


@dataclass(frozen=True)
class Totals:
    """A budget's dollars: spent in total, spent today (UTC), and held by live requests in flight."""

    spent: float
    spent_today: float
    reserved: float


class Store(ABC):
    """Attempts, owners and budget holds in one database; safe to share between threads."""

    #: Where the store is, for messages (a path, or a URL without its password).
    where: str

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self.host = socket.gethostname()
        self.owner = f"{self.host}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._heartbeat_at = 0.0
        with self._lock, self._transaction(lock="lightning-client-migrate"):
            self._migrate()
            self.heartbeat()

    # -- what an implementation provides --------------------------------------------------------

    @abstractmethod
    def _transaction(self, *, lock: str | None = None) -> contextlib.AbstractContextManager[None]:
        """A transaction, holding the database-wide lock named `lock` until it ends (when given)."""

    @abstractmethod
    def _execute(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """Run one statement (`?` placeholders); the rows it returns as dicts."""

    @abstractmethod
    def _execute_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None: ...

    @abstractmethod
    def _columns(self, table: str) -> set[str]: ...

    @abstractmethod
    def _close(self) -> None: ...

    def _reconnect(self) -> bool:
        """After a lost connection: connect again (True), where the implementation can."""
        return False

    # -- schema ---------------------------------------------------------------------------------

    def _migrate(self) -> None:
        self._execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        found = self._execute("SELECT version FROM schema_version")
        version = int(found[0]["version"]) if found else 0
        if version > VERSION:
            raise RuntimeError(
                f"ledger {self.where} has schema version {version}, newer than this release's {VERSION}: upgrade "
                "lightning-client"
            )
        store = self

        class _Migrator(Migrator):
            def execute(self, sql: str) -> None:
                store._execute(sql)

            def columns(self, table: str) -> set[str]:
                return store._columns(table)

        for migration in MIGRATIONS[version:]:
            migration(_Migrator())
        if not found:
            self._execute("INSERT INTO schema_version (version) VALUES (?)", (VERSION,))
        elif version != VERSION:
            self._execute("UPDATE schema_version SET version = ?", (VERSION,))

    @property
    def version(self) -> int:
        with self._lock:
            return int(self._execute("SELECT version FROM schema_version")[0]["version"])

    # -- owners ---------------------------------------------------------------------------------

    @_reconnecting
    def heartbeat(self) -> None:
        """Say this process is alive (the writer thread calls it every `HEARTBEAT_S`)."""
        now = time.time()
        with self._lock:
            self._execute(
                "INSERT INTO owners (owner, host, pid, started_at, heartbeat_at) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (owner) DO UPDATE SET heartbeat_at = excluded.heartbeat_at",
                (self.owner, self.host, os.getpid(), now, now),
            )
            self._heartbeat_at = now

    def heartbeat_due(self) -> bool:
        return time.time() - self._heartbeat_at >= HEARTBEAT_S

    def _gone(self, owner: str | None, host: str | None, pid: int | None, heartbeat_at: float | None) -> bool:
        if owner == self.owner:
            return False
        if owner is None or host is None or pid is None or heartbeat_at is None:
            return True  # written by a release without owners, or an owner row that is gone
        if host == self.host and not pid_alive(int(pid)):
            return True
        return heartbeat_at < time.time() - STALE_S

    # -- attempts -------------------------------------------------------------------------------

    @_reconnecting
    def write(self, rows: Sequence[Row], released: Sequence[str] = ()) -> None:
        """Upsert attempt rows, then drop the budget holds `released`, in one transaction (in that order:
        a hold ends only once the cost it stood for is counted)."""
        with self._lock, self._transaction():
            if rows:
                self._execute_many(_UPSERT, [[row.get(c) for c in STORED_COLUMNS] for row in rows])
            for hold in released:
                self._execute("DELETE FROM budget_holds WHERE hold_id = ?", (hold,))
            if self.heartbeat_due():
                self.heartbeat()

    @_reconnecting
    def attempts(self, provider: str | None = None) -> list[Row]:
        query = "SELECT * FROM attempts" + (" WHERE provider = ?" if provider else "") + " ORDER BY started_at"
        with self._lock:
            return self._execute(query, (provider,) if provider else ())

    @_reconnecting
    def count(self) -> int:
        with self._lock:
            return int(self._execute("SELECT COUNT(*) AS n FROM attempts")[0]["n"])

    @_reconnecting
    def orphans(self) -> list[Row]:
        """Attempts without an outcome whose writing process is gone (the oldest first)."""
        with self._lock:
            rows = self._execute(
                "SELECT a.*, o.host AS owner_host, o.pid AS owner_pid, o.heartbeat_at AS owner_heartbeat"
                " FROM attempts a LEFT JOIN owners o ON o.owner = a.owner"
                " WHERE a.outcome IS NULL ORDER BY a.started_at"
            )
        return [r for r in rows if self._gone(r["owner"], r["owner_host"], r["owner_pid"], r["owner_heartbeat"])]

    def claim(self, attempt_id: str, owner: str | None) -> bool:
        """Take over an orphan from `owner` (False: another process took it first, or it has ended)."""
        with self._lock, self._transaction():
            params: tuple[str, ...] = (self.owner, attempt_id) if owner is None else (self.owner, attempt_id, owner)
            sql = "owner IS NULL" if owner is None else "owner = ?"
            found = self._execute(
                f"UPDATE attempts SET owner = ? WHERE attempt_id = ? AND outcome IS NULL AND {sql} RETURNING attempt_id",
                params,
            )
        return bool(found)

    def claim_release(self, attempt_id: str) -> None:
        """Give back a claimed orphan that could not be recovered now (a later `recover()` tries again)."""
        with self._lock, self._transaction():
            self._execute(
                "UPDATE attempts SET owner = NULL WHERE attempt_id = ? AND owner = ? AND outcome IS NULL",
                (attempt_id, self.owner),
            )

    # -- result cache ---------------------------------------------------------------------------

    def cache_lookup(self, key: str) -> tuple[str, Row | None]:
        """("ready", entry), ("pending", None) while a live process computes it, or ("missing", None)."""
        now = time.time()
        with self._lock:
            rows = self._execute(
                "SELECT c.*, o.host, o.pid, o.heartbeat_at FROM cache_entries c"
                " LEFT JOIN owners o ON o.owner = c.owner WHERE c.key = ?",
                (key,),
            )
            if not rows:
                return "missing", None
            row = rows[0]
            if row["state"] == "ready":
                if row["expires_at"] is not None and row["expires_at"] <= now:
                    return "missing", None
                self._execute("UPDATE cache_entries SET used_at = ? WHERE key = ?", (now, key))
                return "ready", row
            if self._gone(row["owner"], row["host"], row["pid"], row["heartbeat_at"]):
                return "missing", None
            return "pending", None

    def cache_claim(self, key: str) -> bool:
        """Become the one process computing `key` (False: a live process already is, or it is ready)."""
        now = time.time()
        with self._lock, self._transaction(lock=f"lightning-client-cache:{key}"):
            state, _ = self.cache_lookup(key)
            if state != "missing":
                return False
            self._execute("DELETE FROM cache_entries WHERE key = ?", (key,))
            self._execute(
                "INSERT INTO cache_entries (key, state, owner, created_at, used_at) VALUES (?, 'pending', ?, ?, ?)",
                (key, self.owner, now, now),
            )
        return True

    def cache_store(self, key: str, result: str, size: int, ttl_s: float | None) -> None:
        now = time.time()
        with self._lock, self._transaction():
            self._execute("DELETE FROM cache_entries WHERE key = ?", (key,))
            self._execute(
                "INSERT INTO cache_entries (key, state, owner, result, bytes, created_at, used_at, expires_at)"
                " VALUES (?, 'ready', ?, ?, ?, ?, ?, ?)",
                (key, self.owner, result, size, now, now, None if ttl_s is None else now + ttl_s),
            )

    def cache_drop(self, key: str, *, pending_only: bool = False) -> None:
        with self._lock, self._transaction():
            self._execute(
                "DELETE FROM cache_entries WHERE key = ?"
                + (" AND state = 'pending' AND owner = ?" if pending_only else ""),
                (key, self.owner) if pending_only else (key,),
            )

    def cache_evict(self, max_bytes: int | None, max_entries: int | None) -> list[str]:
        """Drop expired entries, then the least recently used until within the bounds; their results."""
        now = time.time()
        with self._lock, self._transaction(lock="lightning-client-cache-evict"):
            dropped = self._execute(
                "SELECT key, result FROM cache_entries WHERE state = 'ready' AND expires_at IS NOT NULL AND expires_at <= ?",
                (now,),
            )
            ready = self._execute(
                "SELECT key, result, bytes FROM cache_entries WHERE state = 'ready'"
                " AND (expires_at IS NULL OR expires_at > ?) ORDER BY used_at DESC",
                (now,),
            )
            total = 0
            for count, row in enumerate(ready, start=1):
                total += int(row["bytes"])
                if (max_bytes is not None and total > max_bytes) or (max_entries is not None and count > max_entries):
                    dropped.append(row)
            for row in dropped:
                self._execute("DELETE FROM cache_entries WHERE key = ?", (row["key"],))
        return [str(row["result"]) for row in dropped]

    def cache_results(self) -> list[str]:
        """Every ready entry's result (to tell which image files are still referenced)."""
        with self._lock:
            return [str(r["result"]) for r in self._execute("SELECT result FROM cache_entries WHERE state = 'ready'")]

    # -- budgets --------------------------------------------------------------------------------

    def _totals(self, budget: str) -> Totals:
        today = datetime.now(timezone.utc).date().isoformat()
        spent = spent_today = reserved = 0.0
        for row in self._execute(_TOTALS, (today, budget, budget, time.time())):
            if row["kind"] == "spent":
                spent, spent_today = float(row["a"] or 0.0), float(row["b"] or 0.0)
            elif not self._gone(row["owner"], row["host"], row["pid"], row["a"]):
                reserved += float(row["b"] or 0.0)
        return Totals(spent=spent, spent_today=spent_today, reserved=reserved)

    @_reconnecting
    def totals(self, budget: str) -> Totals:
        """What budget `budget` has spent and holds (holds of gone processes and expired ones left out)."""
        with self._lock:
            return self._totals(budget)

    @_reconnecting
    def reserve(self, budget: str, usd: float, ttl_s: float, check: Callable[[Totals], None]) -> str:
        """Atomically: `check(totals)` (it raises when `usd` does not fit), then hold `usd`; the hold's id."""
        hold = uuid.uuid4().hex
        now = time.time()
        with self._lock, self._transaction(lock=f"lightning-client-budget:{budget}"):
            check(self._totals(budget))
            self._execute(
                "INSERT INTO budget_holds (hold_id, budget, owner, usd, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?)",
                (hold, budget, self.owner, usd, now, now + ttl_s),
            )
        return hold

    def release(self, hold: str) -> None:
        self.write((), (hold,))

    def close(self) -> None:
        """Drop this process's holds and owner row, and close the connection."""
        with self._lock:
            with contextlib.suppress(Exception), self._transaction():
                self._execute("DELETE FROM budget_holds WHERE owner = ?", (self.owner,))
                self._execute("DELETE FROM owners WHERE owner = ?", (self.owner,))
            self._close()
