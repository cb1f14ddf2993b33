"""`Ledger`: one record per attempt, in memory, in a SQLite file or in PostgreSQL, with summaries and export.

Feed it attempt events (`with ledger.observe(): ...`, or give it to a `Router`). With a path
(SQLite) or a `postgresql://` URL, every event is written by a background thread, batched,
within milliseconds: an attempt's row exists from its start, gains its remote job id as soon
as the provider returns one, and is completed at its end, so a crash loses at most the last
few milliseconds and `Router.recover()` (also from another process) finds remote jobs that
were started but never finished. The event loop never waits on the database. The store
behind a persistent ledger is `lightning_client.state` (`SqliteStore`, `PostgresStore`).
"""

from __future__ import annotations

import atexit
import contextlib
import csv
import functools
import json
import math
import queue
import threading
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from pydantic import BaseModel

from lightning_client._log import get_logger, mask_secrets
from lightning_client.generator import AttemptEvent, observe_attempts
from lightning_client.request import GenerationRequest
from lightning_client.result import Attempt, Cost, Timings
from lightning_client.state import Store, is_url, open_store
from lightning_client.state.schema import COLUMNS
from lightning_client.state.store import HEARTBEAT_S

__all__ = ["COLUMNS", "Ledger", "ProviderSummary", "attempt_from_row", "percentile"]

logger = get_logger("lightning_client")

_TIMINGS = ("queue_s", "inference_s", "download_s", "load_s", "total_s")
#: The request being served in this context (JSON), stored with its attempts' rows for recovery.
_current_request: ContextVar[str | None] = ContextVar("lightning_client_ledger_request", default=None)


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) of `values`, linearly interpolated; NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def _row(attempt: Attempt) -> dict[str, Any]:
    """The flat, secret-free row stored for an attempt."""
    return {
        "attempt_id": attempt.attempt_id,
        "provider": attempt.provider,
        "model": attempt.model,
        "request_id": attempt.request_id,
        "remote_ids": json.dumps(attempt.remote_ids),
        "outcome": attempt.outcome,
        "error_type": attempt.error_type,
        "error_message": None if attempt.error_message is None else mask_secrets(attempt.error_message),
        "status_code": attempt.status_code,
        "retryable": attempt.retryable,
        "started_at": attempt.started_at.isoformat(),
        "ended_at": None if attempt.ended_at is None else attempt.ended_at.isoformat(),
        **{name: getattr(attempt.timings, name) for name in _TIMINGS},
        "cost_usd": attempt.cost.usd,  # NULL: unknown (a job may have run); 0 with a basis: not billed
        "cost_known_usd": attempt.cost.known_usd,
        "cost_basis": attempt.cost.basis,
        "cost_estimated": attempt.cost.estimated,
        "num_images": attempt.num_images,
        "seed": attempt.seed,
        "steps": attempt.steps,
        "hedge": attempt.hedge,
        "note": attempt.note,
        "served_by": attempt.served_by,
        "read_retries": attempt.read_retries,
        "budget": attempt.budget,
        "client_request_id": attempt.client_request_id,
    }


def attempt_from_row(row: Mapping[str, Any]) -> Attempt:
    """The `Attempt` a stored row describes."""
    return Attempt(
        attempt_id=row["attempt_id"],
        provider=row["provider"],
        model=row["model"],
        request_id=row["request_id"],
        remote_ids=json.loads(row["remote_ids"] or "[]"),
        outcome=row["outcome"],
        error_type=row["error_type"],
        error_message=row["error_message"],
        status_code=row["status_code"],
        retryable=None if row["retryable"] is None else bool(row["retryable"]),
        started_at=datetime.fromisoformat(row["started_at"]),
        ended_at=None if row["ended_at"] is None else datetime.fromisoformat(row["ended_at"]),
        timings=Timings(**{name: row[name] for name in _TIMINGS}),
        cost=_cost(row),
        num_images=row["num_images"] or 0,
        seed=row["seed"],
        steps=row["steps"],
        hedge=bool(row["hedge"]),
        note=row["note"],
        served_by=row["served_by"],
        read_retries=row["read_retries"] or 0,
        budget=row.get("budget"),
        client_request_id=row["client_request_id"],
    )


def _cost(row: Mapping[str, Any]) -> Cost:
    basis = row["cost_basis"] or ""
    usd = row["cost_usd"]
    if usd is None and not basis:
        usd = 0.0  # nothing was recorded (an attempt still running, or a row written before unknown costs)
    return Cost(
        usd=usd,
        basis=basis,
        estimated=bool(row["cost_estimated"]),
        known_usd=row["cost_known_usd"] or (usd or 0.0),
    )


class ProviderSummary(BaseModel):
    """One provider's line of `Ledger.summary()`.

    `count` is the attempts actually sent (skipped ones and results served from the cache are
    counted apart);
    `success_rate` is succeeded / (succeeded + failed): a cancelled hedge loser is not
    a failure. Latency percentiles are of successful attempts' total seconds.
    `cost_per_image` divides every dollar spent with the provider (failed and cancelled
    attempts included) by the images it delivered; `cost_estimated` is True when any of
    those dollars is an estimate or a successful attempt had no price at all.
    `unknown` counts attempts whose create outcome is unknown; `unknown_costs` counts attempts
    whose cost is unknown (a job may have run and been billed). When it is not 0,
    `total_cost` and `cost_per_image` are None (unknown, never $0) and `known_cost` holds
    the dollars that are known. A known $0 is "not billed", with its reason in the basis.
    """

    provider: str
    count: int
    succeeded: int
    failed: int
    canceled: int
    skipped: int
    unknown: int = 0
    cached: int = 0
    success_rate: float | None
    p50_s: float | None
    p95_s: float | None
    p99_s: float | None
    mean_inference_s: float | None
    images: int
    cost_per_image: float | None
    total_cost: float | None
    cost_estimated: bool
    known_cost: float = 0.0
    unknown_costs: int = 0
    read_retries: int = 0


def _summarize(provider: str, attempts: list[Attempt]) -> ProviderSummary:
    sent = [a for a in attempts if a.outcome not in ("skipped", "cached")]
    by_outcome = {o: sum(a.outcome == o for a in sent) for o in ("succeeded", "failed", "canceled", "unknown")}
    decided = by_outcome["succeeded"] + by_outcome["failed"] + by_outcome["unknown"]
    totals = [a.timings.total_s for a in sent if a.succeeded and a.timings.total_s is not None]
    inference = [a.timings.inference_s for a in sent if a.succeeded and a.timings.inference_s is not None]
    images = sum(a.num_images for a in sent if a.succeeded)
    known_cost = sum(a.cost.known_usd for a in sent)
    unknown_costs = sum(a.cost.is_unknown for a in sent)
    total_cost = None if unknown_costs else known_cost

    def pct(q: float) -> float | None:
        return percentile(totals, q) if totals else None

    return ProviderSummary(
        provider=provider,
        count=len(sent),
        succeeded=by_outcome["succeeded"],
        failed=by_outcome["failed"],
        canceled=by_outcome["canceled"],
        unknown=by_outcome["unknown"],
        skipped=sum(a.outcome == "skipped" for a in attempts),
        cached=sum(a.outcome == "cached" for a in attempts),
        success_rate=by_outcome["succeeded"] / decided if decided else None,
        p50_s=pct(50),
        p95_s=pct(95),
        p99_s=pct(99),
        mean_inference_s=sum(inference) / len(inference) if inference else None,
        images=images,
        cost_per_image=total_cost / images if images and total_cost is not None else None,
        total_cost=total_cost,
        cost_estimated=any((a.cost.estimated and a.cost.recorded) or (a.succeeded and not a.cost.basis) for a in sent),
        known_cost=known_cost,
        unknown_costs=unknown_costs,
        read_retries=sum(a.read_retries for a in sent),
    )


class _Writer:
    """Writes rows to the store on its own thread, in batches, so the event loop never waits on the database.

    Items are attempt rows, budget holds to release (after the rows queued before them), flush
    markers, and None to stop. Between batches it keeps the store's owner heartbeat fresh.
    """

    def __init__(self, store: Store, name: str) -> None:
        self._store = store
        self._queue: queue.SimpleQueue[dict[str, Any] | str | threading.Event | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=f"lightning-client-ledger {name}", daemon=True)
        self._thread.start()

    def put(self, item: dict[str, Any] | str) -> None:
        self._queue.put(item)

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything queued so far is written."""
        done = threading.Event()
        self._queue.put(done)
        return done.wait(timeout)

    def close(self, timeout: float = 10.0) -> None:
        self._queue.put(None)
        self._thread.join(timeout)

    def _run(self) -> None:
        stop = False
        while not stop:
            rows: dict[str, dict[str, Any]] = {}
            released: list[str] = []
            markers: list[threading.Event] = []
            try:
                item = self._queue.get(timeout=HEARTBEAT_S)
            except queue.Empty:
                self._safely(self._store.heartbeat)
                continue
            while True:
                if item is None:
                    stop = True
                elif isinstance(item, threading.Event):
                    markers.append(item)
                elif isinstance(item, str):
                    released.append(item)
                else:
                    rows.pop(item["attempt_id"], None)  # the latest state of an attempt is enough
                    rows[item["attempt_id"]] = item
                if len(rows) >= 256:
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            if rows or released:
                self._safely(functools.partial(self._store.write, list(rows.values()), released), len(rows))
            for marker in markers:
                marker.set()

    @staticmethod
    def _safely(write: Callable[[], None], count: int = 0) -> None:
        try:
            write()
        except Exception:  # a full disk, a locked file or a lost connection must not kill the writer
            logger.exception("ledger: could not write %d attempt row(s)", count)


_open_ledgers: weakref.WeakSet[Ledger] = weakref.WeakSet()


@atexit.register
def _flush_open_ledgers() -> None:
    for ledger in list(_open_ledgers):
        ledger.close()


class Ledger:
    """Every attempt, successful or not; in memory, in a SQLite file (a path), or in PostgreSQL (a URL).

    Safe to share between threads and tasks. In memory, the most recent `max_records`
    attempts are kept. With a file or a database, nothing is held in memory: rows are
    written by a background thread within milliseconds of each event (`flush()` waits for
    them; `close()` and interpreter exit flush too; a closed ledger still records, writing
    each row at once), and reads (`records()`, `summary()`, exports) query the store, so
    they also see rows other processes wrote. Opening an existing store keeps its rows and
    upgrades its schema. `Ledger("postgresql://user@host:5432/db")` needs the `postgres` extra.
    """

    def __init__(self, path: str | Path | None = None, *, max_records: int = 100_000) -> None:
        if max_records < 1:
            raise ValueError(f"max_records must be >= 1, got {max_records}")
        #: The SQLite file (None in memory and for a database URL).
        self.path = None if path is None or is_url(path) else Path(path)
        #: The PostgreSQL URL (None otherwise).
        self.url = str(path) if path is not None and is_url(path) else None
        self.max_records = max_records
        self._lock = threading.Lock()
        self._attempts: dict[str, Attempt] = {}
        self._writer: _Writer | None = None
        self._store: Store | None = None
        where = self.url or self.path
        if where is not None:
            self._store = open_store(where)  # create, migrate or validate it now, not on the first write
            self._writer = _Writer(self._store, self.where)
            _open_ledgers.add(self)

    @property
    def where(self) -> str:
        """Where the rows are: "memory", a file path, or the database URL (password hidden)."""
        if self._store is not None:
            return self._store.where
        return "memory" if self.path is None and self.url is None else str(self.url or self.path)

    @property
    def persistent(self) -> bool:
        """True for a file or a database: rows outlive the process and other processes may share them."""
        return self.path is not None or self.url is not None

    @property
    def store(self) -> Store:
        """The open store of a persistent ledger (a new connection once the ledger is closed)."""
        with self._lock:
            if self._store is None:
                where = self.url or self.path
                if where is None:
                    raise RuntimeError("an in-memory ledger has no store")
                self._store = open_store(where)
            return self._store

    @classmethod
    def open(cls, path: str | Path) -> Ledger:
        """Open (or create) a SQLite ledger file, or a PostgreSQL ledger by URL."""
        return cls(path)

    @contextlib.contextmanager
    def recording(self, request: GenerationRequest) -> Iterator[None]:
        """Store `request` with the rows of the attempts made in this context, for recovery (a router
        sets it; nothing to do in memory)."""
        if not self.persistent:
            yield
            return
        token = _current_request.set(request.model_dump_json(exclude={"provider_options", "timeout_s"}))
        try:
            yield
        finally:
            _current_request.reset(token)

    def _stored_row(self, attempt: Attempt, owner: str) -> dict[str, Any]:
        return {**_row(attempt), "owner": owner, "request": _current_request.get()}

    def record(self, event: AttemptEvent, attempt: Attempt) -> None:
        """Store the current state of `attempt` (an `observe_attempts` callback)."""
        snapshot = attempt.snapshot()
        with self._lock:
            if self._writer is not None and self._store is not None:
                self._writer.put(self._stored_row(snapshot, self._store.owner))
                return
            if not self.persistent:
                self._attempts.pop(snapshot.attempt_id, None)
                self._attempts[snapshot.attempt_id] = snapshot
                while len(self._attempts) > self.max_records:
                    del self._attempts[next(iter(self._attempts))]
                return
        store = self.store  # closed: write through
        store.write([self._stored_row(snapshot, store.owner)])

    __call__ = record

    def release_hold(self, hold: str) -> None:
        """End a budget hold once every row recorded before this call is written (`SharedBudget`)."""
        with self._lock:
            writer = self._writer
            if writer is not None:
                writer.put(hold)
                return
        self.store.release(hold)

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every event recorded so far is in the store (True: done)."""
        writer = self._writer
        return True if writer is None else writer.flush(timeout)

    @contextlib.contextmanager
    def observe(self) -> Iterator[Ledger]:
        """Record every attempt made inside this block (also without a router)."""
        with observe_attempts(self.record):
            yield self

    def _sorted(self, provider: str | None = None) -> list[Attempt]:
        """Stored attempts in start order (memory snapshots are replaced, never changed)."""
        if not self.persistent:
            with self._lock:
                found = [a for a in self._attempts.values() if provider is None or a.provider == provider]
            return sorted(found, key=lambda a: a.started_at)
        self.flush()
        return [attempt_from_row(row) for row in self.store.attempts(provider)]

    def records(self, provider: str | None = None) -> list[Attempt]:
        """Copies of the stored attempts in start order, optionally of one provider."""
        found = self._sorted(provider)
        return found if self.persistent else [a.snapshot() for a in found]

    def open_jobs(self) -> list[Attempt]:
        """Attempts that started a remote job and never recorded an end (e.g. after a crash)."""
        return [a for a in self.records() if a.remote_ids and a.outcome is None]

    def summary(self) -> list[ProviderSummary]:
        """One row per provider, in order of first appearance."""
        grouped: dict[str, list[Attempt]] = {}
        for attempt in self._sorted():
            grouped.setdefault(attempt.provider, []).append(attempt)
        return [_summarize(provider, attempts) for provider, attempts in grouped.items()]

    def total_cost(self) -> float | None:
        """Dollars recorded across every stored attempt; None when any attempt's cost is unknown."""
        return self.cost().usd

    def cost(self) -> Cost:
        """The sum of every stored attempt's cost (unknown if any part is; `known_usd` has the rest)."""
        total = Cost(usd=0.0, basis="", estimated=False)
        for attempt in self._sorted():
            cost = attempt.cost
            total = Cost(
                usd=None if total.usd is None or cost.usd is None else total.usd + cost.usd,
                basis="",
                estimated=total.estimated or (cost.estimated and cost.recorded),
                known_usd=total.known_usd + cost.known_usd,
            )
        return total

    def to_csv(self, path: str | Path) -> Path:
        """Write every record as one CSV row (the SQLite columns); returns the path."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        with target.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=COLUMNS)
            writer.writeheader()
            for attempt in self._sorted():
                writer.writerow(_row(attempt))
        return target

    def to_json(self, path: str | Path) -> Path:
        """Write every record as a JSON list of attempts; returns the path."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        rows = []
        for attempt in self._sorted():
            data = attempt.model_dump(mode="json")
            if data["error_message"] is not None:
                data["error_message"] = mask_secrets(data["error_message"])
            rows.append(data)
        target.write_text(json.dumps(rows, indent=2), encoding="utf-8")
        return target

    def __len__(self) -> int:
        if not self.persistent:
            with self._lock:
                return len(self._attempts)
        self.flush()
        return self.store.count()

    def close(self) -> None:
        """Flush the store, stop its writer thread and close it (later records are written at once)."""
        with self._lock:
            writer, self._writer = self._writer, None
            store, self._store = self._store, None
        if writer is not None:
            writer.close()
            _open_ledgers.discard(self)
        if store is not None:
            store.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Ledger({self.where}, records={len(self)})"
