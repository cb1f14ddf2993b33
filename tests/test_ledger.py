"""Ledger: records, SQLite durability and reopen, orphans, summaries, export, concurrency."""

from __future__ import annotations

import csv
import json
import sqlite3
import threading
from pathlib import Path

import pytest

from lightning_client._log import register_secret
from lightning_client.ledger import Ledger, percentile
from lightning_client.result import Attempt, Cost, Timings


def finished(provider: str, outcome: str, total: float | None = None, usd: float = 0.0, images: int = 0) -> Attempt:
    return Attempt(
        provider=provider,
        outcome=outcome,  # type: ignore[arg-type]
        timings=Timings(total_s=total, inference_s=None if total is None else total / 2),
        cost=Cost(usd=usd, basis="billed" if usd else "", estimated=False),
        num_images=images,
    )


def test_percentile_interpolates() -> None:
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 95) == pytest.approx(3.85)
    assert percentile([7.0], 99) == 7.0


def test_summary_numbers_per_provider() -> None:
    ledger = Ledger()
    for i in range(1, 11):
        ledger.record("end", finished("fal", "succeeded", total=float(i), usd=0.002, images=1))
    ledger.record("end", finished("fal", "failed", total=0.5))
    ledger.record("end", finished("replicate", "failed", total=0.1))
    ledger.record("end", finished("replicate", "canceled", total=3.0, usd=0.001))
    ledger.record("end", finished("replicate", "succeeded", total=2.0, usd=0.004, images=2))
    ledger.record("end", Attempt(provider="replicate", outcome="skipped", note="breaker open"))
    fal, rep = ledger.summary()
    assert (fal.provider, fal.count, fal.succeeded, fal.failed) == ("fal", 11, 10, 1)
    assert fal.success_rate == pytest.approx(10 / 11)
    assert fal.p50_s == pytest.approx(5.5) and fal.p95_s == pytest.approx(9.55) and fal.p99_s == pytest.approx(9.91)
    assert fal.mean_inference_s == pytest.approx(2.75)
    assert fal.cost_per_image == pytest.approx(0.002) and fal.total_cost == pytest.approx(0.02)
    assert not fal.cost_estimated
    # a cancelled hedge loser is not a failure; its cost counts against the images delivered
    assert (rep.count, rep.skipped, rep.canceled) == (3, 1, 1)
    assert rep.success_rate == pytest.approx(0.5)
    assert rep.cost_per_image == pytest.approx(0.0025) and rep.total_cost == pytest.approx(0.005)


def test_sqlite_rows_exist_from_start_and_survive_reopen(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    ledger = Ledger(path)
    attempt = Attempt(provider="replicate", model="m", seed=7, steps=4)
    ledger.record("start", attempt)
    attempt.remote_ids.append("pred-1")
    attempt.request_id = "pred-1"
    ledger.record("job", attempt)
    assert ledger.flush()
    # another connection (a crash would leave exactly this on disk) already sees the remote id
    with sqlite3.connect(path) as other:
        assert other.execute("SELECT request_id, outcome FROM attempts").fetchall() == [("pred-1", None)]
    ledger.close()

    reopened = Ledger.open(path)
    assert [a.request_id for a in reopened.open_jobs()] == ["pred-1"]
    attempt.outcome = "succeeded"
    attempt.num_images = 1
    attempt.timings.total_s = 1.5
    attempt.cost = Cost(usd=0.0016, basis="1.63 s x $0.000975/s", estimated=False)
    reopened.record("end", attempt)
    reopened.record("end", finished("fal", "failed", total=0.2))
    reopened.close()

    again = Ledger(path)
    records = again.records()
    assert len(again) == 2 and [r.provider for r in records] == ["replicate", "fal"]
    assert records[0] == attempt  # every field round-trips
    assert again.open_jobs() == []
    assert again.summary()[0].cost_per_image == pytest.approx(0.0016)
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_exports_hold_every_record_without_secrets(tmp_path: Path) -> None:
    register_secret("r8_supersecret_token")
    ledger = Ledger()
    bad = finished("replicate", "failed", total=0.1)
    bad.error_message = "401 for token r8_supersecret_token"
    ledger.record("end", bad)
    ledger.record("end", finished("fal", "succeeded", total=1.0, usd=0.002, images=1))

    rows = list(csv.DictReader(ledger.to_csv(tmp_path / "out" / "l.csv").open()))
    assert [r["provider"] for r in rows] == ["replicate", "fal"]
    assert rows[1]["cost_usd"] == "0.002" and rows[1]["total_s"] == "1.0"
    data = json.loads(ledger.to_json(tmp_path / "l.json").read_text())
    assert data[1]["cost"]["usd"] == 0.002 and data[0]["outcome"] == "failed"
    for text in ((tmp_path / "out" / "l.csv").read_text(), (tmp_path / "l.json").read_text()):
        assert "supersecret" not in text and "**********" in text


def test_concurrent_writers_lose_nothing(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "c.db")

    def write(n: int) -> None:
        for i in range(50):
            attempt = Attempt(provider=f"p{n % 3}")
            ledger.record("start", attempt)
            attempt.outcome = "succeeded" if i % 2 else "failed"
            ledger.record("end", attempt)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ledger.close()
    reopened = Ledger(tmp_path / "c.db")
    assert len(reopened) == 400
    assert sum(row.count for row in reopened.summary()) == 400
    assert all(row.success_rate == pytest.approx(0.5, abs=0.05) for row in reopened.summary())


def test_records_are_copies_and_filterable() -> None:
    ledger = Ledger()
    ledger.record("end", finished("fal", "succeeded", total=1.0))
    ledger.record("end", finished("replicate", "failed"))
    copy = ledger.records("fal")[0]
    copy.provider = "changed"
    assert [a.provider for a in ledger.records()] == ["fal", "replicate"]
    assert "records=2" in repr(ledger)


def test_memory_ledger_keeps_the_most_recent_records() -> None:
    ledger = Ledger(max_records=3)
    attempts = [finished("fal", "succeeded", total=float(i)) for i in range(5)]
    for attempt in attempts:
        ledger.record("end", attempt)
    ledger.record("end", attempts[2])  # an update refreshes, it does not duplicate
    assert len(ledger) == 3
    assert {a.attempt_id for a in ledger.records()} == {a.attempt_id for a in attempts[2:]}
    with pytest.raises(ValueError, match="max_records must be >= 1"):
        Ledger(max_records=0)


def test_file_ledger_reads_see_other_writers_and_writes_after_close(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    reader, writer = Ledger(path), Ledger(path)
    writer.record("end", finished("fal", "succeeded", total=1.0, usd=0.002, images=1))
    writer.flush()
    assert [a.provider for a in reader.records()] == ["fal"]
    writer.close()
    writer.record("end", finished("replicate", "failed"))  # closed: written through at once
    assert [a.provider for a in reader.records("replicate")] == ["replicate"]
    assert len(reader) == 2 and reader.total_cost() == pytest.approx(0.002)
    reader.close()


def test_a_file_that_is_not_a_ledger_is_rejected(tmp_path: Path) -> None:
    bogus = tmp_path / "notes.db"
    bogus.write_text("not a database, just text that is long enough to have a header" * 10)
    with pytest.raises(sqlite3.DatabaseError):
        Ledger(bogus)


def test_served_by_is_stored_and_an_older_file_gains_the_column(tmp_path: Path) -> None:
    old = tmp_path / "old.sqlite"
    with sqlite3.connect(old) as db:  # the table as written before served_by existed
        db.execute("CREATE TABLE attempts (attempt_id TEXT PRIMARY KEY, provider, outcome, started_at)")
        db.execute("INSERT INTO attempts VALUES ('a1', 'fal', 'succeeded', '2026-12-01T00:00:00+00:00')")
    db.close()
    ledger = Ledger(old)
    ledger.record("end", Attempt(provider="local", outcome="succeeded", served_by="SERVE_REPLICA::app#w#1"))
    ledger.close()
    reread = Ledger(old)
    by_provider = {a.provider: a for a in reread.records()}
    assert by_provider["local"].served_by == "SERVE_REPLICA::app#w#1"
    assert by_provider["fal"].served_by is None
    reread.close()
