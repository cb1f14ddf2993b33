"""The sandbox's job engine: queue delay, a bounded pool of workers, deadlines, cancellation and counters.

It runs on the sandbox's event loop. Every state change happens under one lock and wakes the waiters of
that job (sync waits, SSE streams) through asyncio events, so nothing here polls. Other threads read
snapshots (`stats`, `snapshot`) under the same lock.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import itertools
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from lightning_client._compat import TIMEOUT_ERRORS, async_timeout

__all__ = ["TERMINAL", "Finisher", "Job", "JobEngine", "JobState", "Progress", "wait_event"]

JobState = Literal["queued", "running", "succeeded", "failed", "canceled", "aborted"]
TERMINAL: frozenset[str] = frozenset({"succeeded", "failed", "canceled", "aborted"})
_COUNTED = ("created", "succeeded", "failed", "canceled", "aborted")


@dataclass(eq=False)
class Job:
    """One remote job as the emulated provider sees it."""

    id: str
    input: dict[str, Any]
    seed: int
    queue_s: float
    inference_s: float
    fault: str | None = None
    #: The run is `inference_s` split into this many equal steps; the engine's progress hook sees each one.
    steps: int = 1
    #: Wall-clock time after which the job expires; before it started it ends in `expire_state`.
    deadline: float | None = None
    deadline_while_running: bool = False  # when true, a deadline reached while running cancels it
    expire_state: JobState = "aborted"
    expire_error: str | None = None
    expire_error_type: str | None = None
    created_at: float = field(default_factory=time.time)
    started_at: float | None = None
    completed_at: float | None = None
    state: JobState = "queued"
    error: str | None = None
    error_type: str | None = None
    outputs: list[Any] = field(default_factory=list)
    logs: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)  # provider-specific facts (model, app, sync mode...)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    changed: asyncio.Event = field(default_factory=asyncio.Event)  # set and replaced on every change
    seq: int = 0
    holds_slot: bool = False
    task: asyncio.Task[None] | None = None

    @property
    def terminal(self) -> bool:
        """True once the job can no longer change."""
        return self.state in TERMINAL

    def predict_time(self) -> float | None:
        """Seconds it ran, once it has started and ended."""
        if self.started_at is None or self.completed_at is None:
            return None
        return self.completed_at - self.started_at


#: Decides how a job that ran to the end finishes: sets outputs and logs, returns (state, error, error_type).
Finisher = Callable[[Job], tuple[JobState, str | None, str | None]]
#: Called as a job runs: step 0 when it starts, then step k after its k-th step (it may append logs).
Progress = Callable[[Job, int], None]


class JobEngine:
    """Jobs of one emulated provider, run through `workers` slots after their queue delay."""

    def __init__(self, workers: Callable[[], int], finish: Finisher, progress: Progress | None = None) -> None:
        self._workers = workers
        self._finish = finish
        self._progress = progress
        self._lock = threading.Lock()
        self._jobs: dict[str, Job] = {}
        self._queued_seqs: list[int] = []
        self._waiting: deque[tuple[Job, asyncio.Future[None]]] = deque()
        self._running = 0  # worker slots held
        self._running_count = 0  # jobs in state "running"
        self._seq = itertools.count()
        self._counts = dict.fromkeys(_COUNTED, 0)

    # -- reading -------------------------------------------------------------------------------

    def get(self, job_id: str) -> Job | None:
        """The job with this id, if any."""
        return self._jobs.get(job_id)

    def newest_first(self) -> list[Job]:
        """All jobs, newest first."""
        with self._lock:
            return list(reversed(self._jobs.values()))

    def queue_position(self, job: Job) -> int:
        """How many queued jobs are ahead of `job` (0 when it is next or not queued)."""
        with self._lock:
            return bisect.bisect_left(self._queued_seqs, job.seq) if job.state == "queued" else 0

    def counts(self) -> dict[str, int]:
        """Cumulative counters plus the current number of queued and running jobs."""
        with self._lock:
            return {**self._counts, "queued": len(self._queued_seqs), "running": self._running_count}

    def snapshot(self) -> list[dict[str, Any]]:
        """A plain copy of every job, oldest first."""
        with self._lock:
            jobs = list(self._jobs.values())
        return [
            {
                "id": j.id,
                "status": j.state,
                "input": dict(j.input),
                "seed": j.seed,
                "fault": j.fault,
                "error": j.error,
                "created_at": j.created_at,
                "started_at": j.started_at,
                "completed_at": j.completed_at,
            }
            for j in jobs
        ]

    # -- changing (on the sandbox loop) --------------------------------------------------------

    def submit(self, job: Job) -> Job:
        """Register `job` and start its lifecycle."""
        self._register(job)
        job.task = asyncio.get_running_loop().create_task(self._lifecycle(job))
        return job

    def reject(self, job: Job, error: str) -> Job:
        """Register `job` as failed at once, without running it (e.g. its input is invalid)."""
        self._register(job)
        self._end(job, "failed", error, None)
        return job

    def _register(self, job: Job) -> None:
        with self._lock:
            job.seq = next(self._seq)
            self._jobs[job.id] = job
            self._queued_seqs.append(job.seq)
            self._counts["created"] += 1

    def cancel(self, job: Job, error: str | None = None, error_type: str | None = None) -> bool:
        """End a queued or running job as canceled; False if it had already ended."""
        if job.terminal:
            return False
        self._end(job, "canceled", error, error_type)
        if job.task is not None:
            job.task.cancel()
        return True

    def pump(self) -> None:
        """Hand free worker slots to waiting jobs, oldest first."""
        while self._waiting and self._running < self._workers():
            job, slot = self._waiting.popleft()
            if slot.done() or job.terminal:
                continue
            self._running += 1
            job.holds_slot = True
            slot.set_result(None)

    def clear(self) -> None:
        """Cancel every job and forget it; counters back to zero."""
        with self._lock:
            jobs = list(self._jobs.values())
            self._jobs.clear()
            self._queued_seqs.clear()
            self._counts = dict.fromkeys(_COUNTED, 0)
            self._running_count = 0
        for job in jobs:
            if job.task is not None:
                job.task.cancel()
            job.done.set()
            job.changed.set()
        self._waiting.clear()
        self._running = 0

    async def _lifecycle(self, job: Job) -> None:
        try:
            try:
                async with async_timeout(self._until(job.deadline)):
                    await asyncio.sleep(job.queue_s)
                    await self._acquire(job)
            except TIMEOUT_ERRORS:
                self._end(job, job.expire_state, job.expire_error, job.expire_error_type)
                return
            if job.fault == "aborted":  # reached its deadline before it could start
                self._end(job, "aborted", None, None)
                return
            self._start(job)
            try:
                async with async_timeout(self._until(job.deadline) if job.deadline_while_running else None):
                    for step in range(1, job.steps + 1):
                        await asyncio.sleep(job.inference_s / job.steps)
                        if self._progress is not None and not job.terminal:
                            self._progress(job, step)
                            self._notify(job)
            except TIMEOUT_ERRORS:
                self._end(job, "canceled", None, None)
                return
            if not job.terminal:
                self._end(job, *self._finish(job))
        finally:
            self._release(job)

    async def _acquire(self, job: Job) -> None:
        slot: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((job, slot))
        self.pump()
        try:
            await slot
        finally:
            if not slot.done():
                slot.cancel()

    def _release(self, job: Job) -> None:
        if job.holds_slot:
            job.holds_slot = False
            self._running = max(0, self._running - 1)
            self.pump()

    def _start(self, job: Job) -> None:
        with self._lock:
            self._unqueue(job)
            job.state = "running"
            self._running_count += 1
            job.started_at = time.time()
        if self._progress is not None:
            self._progress(job, 0)
        self._notify(job)

    def _end(self, job: Job, state: JobState, error: str | None, error_type: str | None) -> None:
        with self._lock:
            if job.terminal:
                return
            self._unqueue(job)
            if job.state == "running" and job.id in self._jobs:
                self._running_count -= 1
            job.state, job.error, job.error_type = state, error, error_type
            job.completed_at = time.time()
            if job.id in self._jobs:
                self._counts[state] += 1
        job.done.set()
        self._notify(job)

    def _unqueue(self, job: Job) -> None:
        if job.state == "queued":
            index = bisect.bisect_left(self._queued_seqs, job.seq)
            if index < len(self._queued_seqs) and self._queued_seqs[index] == job.seq:
                del self._queued_seqs[index]

    @staticmethod
    def _notify(job: Job) -> None:
        previous, job.changed = job.changed, asyncio.Event()
        previous.set()

    @staticmethod
    def _until(deadline: float | None) -> float | None:
        return None if deadline is None else max(0.0, deadline - time.time())


async def wait_event(event: asyncio.Event, timeout: float) -> bool:
    """Wait until `event` is set or `timeout` passes; True if it was set."""
    with contextlib.suppress(*TIMEOUT_ERRORS):
        async with async_timeout(timeout):
            await event.wait()
    return event.is_set()
