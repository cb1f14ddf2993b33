"""Stores for state that outlives the process: the ledger's attempts, budget holds, and their owners.

`open_store(where)` picks the implementation: a `postgresql://` URL opens `PostgresStore`
(shared by many processes and hosts), anything else is a SQLite file path (`SqliteStore`,
shared by processes on one host). Both speak the `Store` interface and apply the same
versioned schema (`schema.MIGRATIONS`) when opened, upgrading older files in place.
"""

from __future__ import annotations

from pathlib import Path

from lightning_client.state.store import Store

__all__ = ["Store", "is_url", "open_store"]

_URL_SCHEMES = ("postgresql://", "postgres://")


def is_url(where: str | Path) -> bool:
    """Whether `where` names a database server (a `postgresql://` URL) rather than a file."""
    return isinstance(where, str) and where.startswith(_URL_SCHEMES)


def open_store(where: str | Path) -> Store:
    """The store at `where`: a PostgreSQL URL, else a SQLite file path (created when missing)."""
    if is_url(where):
        from lightning_client.state.postgres import PostgresStore

        return PostgresStore(str(where))
    from lightning_client.state.sqlite import SqliteStore

    return SqliteStore(Path(where))
