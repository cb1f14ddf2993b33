"""`PostgresStore`: the shared store, a PostgreSQL database used by any number of processes and hosts.

Needs psycopg 3 (the `postgres` extra). Locks are transaction-scoped advisory locks, so the
budget check and its hold are atomic across every process using the database.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Sequence
from typing import Any

from lightning_client.errors import ConfigurationError
from lightning_client.state.store import Row, Store

__all__ = ["PostgresStore"]


def _redacted(url: str) -> str:
    return re.sub(r"//([^:/@]+):[^@]*@", r"//\1:***@", url)


class PostgresStore(Store):
    """A PostgreSQL database named by a `postgresql://user[:password]@host[:port]/db` URL."""

    def __init__(self, url: str) -> None:
        try:
            import psycopg
            from psycopg.rows import dict_row
        except ImportError:
            raise ConfigurationError(
                "a postgresql:// ledger needs psycopg: pip install 'lightning-client[postgres]'"
            ) from None
        self.url = url
        self.where = _redacted(url)
        self._psycopg, self._dict_row = psycopg, dict_row
        try:
            self._db: Any = self._connect()
        except psycopg.Error as exc:
            raise ConfigurationError(f"cannot connect to the ledger database {self.where}: {exc}") from None
        super().__init__()

    def _connect(self) -> Any:
        return self._psycopg.connect(self.url, autocommit=True, row_factory=self._dict_row, connect_timeout=10)

    def _reconnect(self) -> bool:
        if not self._db.closed and not self._db.broken:
            return False  # the connection is fine: the error was something else
        try:
            self._db = self._connect()
        except self._psycopg.Error:
            return False
        return True

    @contextlib.contextmanager
    def _transaction(self, *, lock: str | None = None) -> Iterator[None]:
        with self._db.transaction():
            if lock is not None:
                self._db.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (lock,))
            yield

    @staticmethod
    def _sql(sql: str) -> str:
        return sql.replace("%", "%%").replace("?", "%s")

    def _execute(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        cursor = self._db.execute(self._sql(sql), params)
        return list(cursor.fetchall()) if cursor.description else []

    def _execute_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        with self._db.cursor() as cursor:
            cursor.executemany(self._sql(sql), rows)

    def _columns(self, table: str) -> set[str]:
        rows = self._execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema()"
            " AND table_name = ?",
            (table,),
        )
        return {row["column_name"] for row in rows}

    def _close(self) -> None:
        self._db.close()
