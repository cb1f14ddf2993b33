"""The ledger on PostgreSQL (a URL selects it) and SQLite: same API, a versioned schema, many writers."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import lightning_client as lc
from lightning_client.result import Attempt, Cost
from lightning_client.state.schema import VERSION

_WRITER = """
import sys
import lightning_client as lc
from lightning_client.result import Attempt, Cost

ledger = lc.Ledger(sys.argv[1])
for i in range(int(sys.argv[2])):
    attempt = Attempt(provider=sys.argv[3], outcome="succeeded", num_images=1)
    attempt.cost = Cost(usd=0.001, basis="test", estimated=False)
    ledger.record("end", attempt)
ledger.close()
"""


def test_a_postgresql_url_selects_the_database_with_the_same_api(
    pg_url: str, fal: lc.FalGenerator, tmp_path: Path
) -> None:
    ledger = lc.Ledger(pg_url)
    assert ledger.path is None and ledger.url == pg_url and ledger.persistent
    with ledger.observe():
        result = fal.generate("a lighthouse", seed=3)
    records = ledger.records()
    assert [(a.provider, a.outcome, a.request_id) for a in records] == [("fal", "succeeded", result.request_id)]
    assert records[0].cost == result.cost
    [summary] = ledger.summary()
    assert summary.provider == "fal" and summary.succeeded == 1 and summary.total_cost == result.cost.usd
    csv_text = ledger.to_csv(tmp_path / "l.csv").read_text()
    assert csv_text.splitlines()[0].startswith("attempt_id,provider") and result.request_id in csv_text
    assert json.loads(ledger.to_json(tmp_path / "l.json").read_text())[0]["attempt_id"] == records[0].attempt_id
    ledger.close()
    assert not Path("postgresql:").exists()
    with lc.Ledger(pg_url) as reopened:
        assert len(reopened) == 1 and reopened.records()[0].request_id == result.request_id


def test_many_processes_write_one_postgresql_ledger(pg_url: str) -> None:
    children = [subprocess.Popen([sys.executable, "-c", _WRITER, pg_url, "50", f"p{i}"]) for i in range(4)]
    assert [child.wait(timeout=120) for child in children] == [0, 0, 0, 0]
    with lc.Ledger(pg_url) as ledger:
        assert len(ledger) == 200
        assert sorted(s.provider for s in ledger.summary()) == ["p0", "p1", "p2", "p3"]
        assert ledger.cost().usd is not None and abs(ledger.cost().usd - 0.2) < 1e-9


def test_an_unversioned_sqlite_file_is_upgraded_in_place(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    old = sqlite3.connect(path)
    old.execute(
        "CREATE TABLE attempts (attempt_id TEXT PRIMARY KEY, provider, model, request_id, remote_ids, outcome,"
        " started_at, ended_at, cost_usd, cost_basis, cost_estimated, num_images)"
    )
    old.execute(
        "INSERT INTO attempts VALUES ('a1', 'fal', 'm', 'r1', '[\"r1\"]', 'succeeded',"
        " '2026-01-01T00:00:00+00:00', '2026-01-01T00:00:01+00:00', 0.002, 'old', 0, 1)"
    )
    old.commit()
    old.close()
    with lc.Ledger(path) as ledger:
        [attempt] = ledger.records()
        assert (attempt.attempt_id, attempt.remote_ids, attempt.cost.usd, attempt.budget) == ("a1", ["r1"], 0.002, None)
        assert ledger.store.version == VERSION
        fresh = Attempt(provider="fal", outcome="failed", budget="team-a")
        fresh.cost = Cost(usd=0.0, basis="not billed", estimated=False)
        ledger.record("end", fresh)
        assert [a.budget for a in ledger.records()] == [None, "team-a"]
    columns = {row[1] for row in sqlite3.connect(path).execute("PRAGMA table_info(attempts)")}
    assert {"budget", "owner", "request", "read_retries"} <= columns


def test_the_writer_reconnects_after_the_connection_is_dropped(pg_url: str) -> None:
    import psycopg

    with lc.Ledger(pg_url) as ledger:
        ledger.record("end", Attempt(provider="fal", outcome="failed"))
        ledger.flush()
        with psycopg.connect(pg_url, autocommit=True) as admin:  # the server drops the ledger's connection
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        ledger.record("end", Attempt(provider="fal", outcome="succeeded"))
        ledger.flush()
        assert sorted(a.outcome or "" for a in ledger.records()) == ["failed", "succeeded"]
