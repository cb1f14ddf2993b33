"""The ledger's versioned schema, the same for SQLite and PostgreSQL, and its migrations.

`schema_version` holds one row with the version applied. A SQLite file written before
versioning (no such table) is version 0: its `attempts` table exists with untyped columns
and may lack some; migration 1 adds what is missing. Stores apply `MIGRATIONS` in order,
each in one transaction, under a lock so that processes opening the store at once migrate
it once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

__all__ = ["COLUMNS", "MIGRATIONS", "STORED_COLUMNS", "VERSION", "Migrator"]

#: Attempt columns, in order: the `attempts` table's and the CSV export's.
COLUMN_TYPES: dict[str, str] = {
    "attempt_id": "TEXT PRIMARY KEY",
    "provider": "TEXT",
    "model": "TEXT",
    "request_id": "TEXT",
    "remote_ids": "TEXT",
    "outcome": "TEXT",
    "error_type": "TEXT",
    "error_message": "TEXT",
    "status_code": "INTEGER",
    "retryable": "BOOLEAN",
    "started_at": "TEXT",
    "ended_at": "TEXT",
    "queue_s": "DOUBLE PRECISION",
    "inference_s": "DOUBLE PRECISION",
    "download_s": "DOUBLE PRECISION",
    "load_s": "DOUBLE PRECISION",
    "total_s": "DOUBLE PRECISION",
    "cost_usd": "DOUBLE PRECISION",
    "cost_known_usd": "DOUBLE PRECISION",
    "cost_basis": "TEXT",
    "cost_estimated": "BOOLEAN",
    "num_images": "INTEGER",
    "seed": "BIGINT",
    "steps": "INTEGER",
    "hedge": "BOOLEAN",
    "note": "TEXT",
    "served_by": "TEXT",
    "read_retries": "INTEGER",
}
#: Columns added by migration 2: the budget an attempt counts against (exported too), the process that
#: wrote it (`owners.owner`) and the request that made it (JSON, for recovery).
V2_COLUMNS: dict[str, str] = {"budget": "TEXT", "owner": "TEXT", "request": "TEXT"}
#: Columns added by migration 4: the request id a client of `lightning-client serve` sent (`X-Request-Id`).
V4_COLUMNS: dict[str, str] = {"client_request_id": "TEXT"}
COLUMNS: tuple[str, ...] = (*COLUMN_TYPES, "budget", *V4_COLUMNS)
STORED_COLUMNS: tuple[str, ...] = (*COLUMN_TYPES, *V2_COLUMNS, *V4_COLUMNS)


class Migrator(Protocol):
    """What a migration needs from a store's open transaction."""

    def execute(self, sql: str) -> None: ...

    def columns(self, table: str) -> set[str]: ...


def _v1(db: Migrator) -> None:
    """The attempts table (also completing a table written by an unversioned release)."""
    columns = ", ".join(f"{name} {kind}" for name, kind in COLUMN_TYPES.items())
    db.execute(f"CREATE TABLE IF NOT EXISTS attempts ({columns})")
    _add_columns(db, COLUMN_TYPES)
    db.execute("CREATE INDEX IF NOT EXISTS attempts_provider ON attempts (provider)")
    db.execute("CREATE INDEX IF NOT EXISTS attempts_started ON attempts (started_at)")


def _add_columns(db: Migrator, columns: dict[str, str]) -> None:
    """Add to `attempts` each of `columns` (name: SQL type) that it lacks."""
    present = db.columns("attempts")
    for name, kind in columns.items():
        if name not in present:
            db.execute(f"ALTER TABLE attempts ADD COLUMN {name} {kind}")


def _v2(db: Migrator) -> None:
    """Shared budgets, process owners (for recovery and expiring holds) and the request per attempt."""
    _add_columns(db, V2_COLUMNS)
    db.execute("CREATE INDEX IF NOT EXISTS attempts_budget ON attempts (budget, started_at)")
    db.execute("CREATE INDEX IF NOT EXISTS attempts_open ON attempts (outcome, owner)")
    db.execute(
        "CREATE TABLE IF NOT EXISTS owners (owner TEXT PRIMARY KEY, host TEXT NOT NULL, pid INTEGER NOT NULL,"
        " started_at DOUBLE PRECISION NOT NULL, heartbeat_at DOUBLE PRECISION NOT NULL)"
    )
    db.execute(
        "CREATE TABLE IF NOT EXISTS budget_holds (hold_id TEXT PRIMARY KEY, budget TEXT NOT NULL,"
        " owner TEXT NOT NULL, usd DOUBLE PRECISION NOT NULL, created_at DOUBLE PRECISION NOT NULL,"
        " expires_at DOUBLE PRECISION NOT NULL)"
    )
    db.execute("CREATE INDEX IF NOT EXISTS budget_holds_budget ON budget_holds (budget)")


def _v3(db: Migrator) -> None:
    """The result cache's index: one entry per request key, "pending" while its one provider call runs."""
    db.execute(
        "CREATE TABLE IF NOT EXISTS cache_entries (key TEXT PRIMARY KEY, state TEXT NOT NULL, owner TEXT NOT NULL,"
        " result TEXT, bytes BIGINT NOT NULL DEFAULT 0, created_at DOUBLE PRECISION NOT NULL,"
        " used_at DOUBLE PRECISION NOT NULL, expires_at DOUBLE PRECISION)"
    )
    db.execute("CREATE INDEX IF NOT EXISTS cache_entries_used ON cache_entries (used_at)")


def _v4(db: Migrator) -> None:
    """The caller's request id, joining a server's ledger to its clients' ledgers."""
    _add_columns(db, V4_COLUMNS)


#: Migration `i + 1` is `MIGRATIONS[i]`.
MIGRATIONS: tuple[Callable[[Migrator], None], ...] = (_v1, _v2, _v3, _v4)
VERSION = len(MIGRATIONS)
