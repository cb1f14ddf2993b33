"""The throwaway PostgreSQL server the state tests use answers queries, one database per test."""

from __future__ import annotations


def test_each_test_gets_its_own_empty_database(pg_url: str) -> None:
    import psycopg

    with psycopg.connect(pg_url) as db:
        tables = db.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone()
    assert tables == (0,)
