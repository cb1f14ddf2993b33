"""`SqliteStore`: the embedded store, one SQLite file (WAL mode) shared by the processes of one host."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from lightning_client.state.store import Row, Store

__all__ = ["SqliteStore"]


def _dict_row(cursor: sqlite3.Cursor, row: tuple[Any, ...]) -> Row:
    return {column[0]: value for column, value in zip(cursor.description, row, strict=True)}


class SqliteStore(Store):
    """A SQLite file; a write transaction (`BEGIN IMMEDIATE`) is the lock across processes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.where = str(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, timeout=30.0, isolation_level=None)
        self._db.row_factory = _dict_row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._depth = 0
        super().__init__()

    @contextlib.contextmanager
    def _transaction(self, *, lock: str | None = None) -> Iterator[None]:
        if self._depth:  # nested: part of the transaction already open
            yield
            return
        self._db.execute("BEGIN IMMEDIATE")  # takes the file's write lock now: the budget check and hold are atomic
        self._depth += 1
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        else:
            self._db.execute("COMMIT")
        finally:
            self._depth -= 1

    def _execute(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return self._db.execute(sql, params).fetchall()

    def _execute_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        self._db.executemany(sql, rows)

    def _columns(self, table: str) -> set[str]:
        return {row["name"] for row in self._execute(f"PRAGMA table_info({table})")}

    def _close(self) -> None:
        self._db.close()
