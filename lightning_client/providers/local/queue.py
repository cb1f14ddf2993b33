"""The local job queue's policy: which queued jobs the device serves next, in one pipeline call.

Pure functions over queued jobs, so the policy is testable without a pipeline:

- a batch is jobs with the same step count and size (`Job.key`), at most `max_images`
  images in all (a request asking for more runs alone);
- the device prefers jobs for the step count whose checkpoint is already in place, so
  alternating step counts do not swap checkpoints on every job;
- fairness is bounded: a job that other batches have overtaken `max_overtakes` times is
  served next, whatever its step count.
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from lightning_client.request import GenerationRequest

__all__ = ["MAX_OVERTAKES", "Job", "note_overtaken", "pick_batch"]

#: How many batches may be served ahead of the oldest queued job before it goes next.
MAX_OVERTAKES = 2

BatchKey = tuple[int, int, int]


@dataclass(eq=False)
class Job:
    """One queued request (or, with `request=None`, a load of the `steps` checkpoint)."""

    steps: int
    request: GenerationRequest | None = None
    on_step: Callable[[int, int], None] | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    future: concurrent.futures.Future[Any] = field(default_factory=concurrent.futures.Future)
    submitted: float = field(default_factory=time.monotonic)
    overtaken: int = 0

    @property
    def key(self) -> BatchKey | None:
        """Jobs with equal keys can share a pipeline call (loads never do)."""
        if self.request is None:
            return None
        return (self.steps, self.request.width, self.request.height)

    @property
    def images(self) -> int:
        return 0 if self.request is None else self.request.num_images


def pick_batch(
    queue: Sequence[Job], loaded_steps: int | None, max_images: int, max_overtakes: int = MAX_OVERTAKES
) -> list[Job]:
    """The jobs to serve next, in queue order (empty only for an empty queue).

    Does not change `queue`; the caller removes the batch and calls `note_overtaken`.
    """
    if not queue:
        return []
    oldest = queue[0]
    lead = oldest
    if oldest.overtaken < max_overtakes and loaded_steps is not None:
        lead = next((job for job in queue if job.steps == loaded_steps), oldest)
    batch = [lead]
    if lead.key is None:
        return batch
    room = max_images - lead.images
    for job in queue:
        if room <= 0:
            break
        if job is not lead and job.key == lead.key and job.images <= room:
            batch.append(job)
            room -= job.images
    return sorted(batch, key=queue.index)


def note_overtaken(queue: Sequence[Job], batch: Sequence[Job]) -> None:
    """Count one overtake for every job still queued that was ahead of the batch's last job."""
    if not batch:
        return
    last = max(queue.index(job) for job in batch)
    chosen = set(map(id, batch))
    for job in queue[:last]:
        if id(job) not in chosen:
            job.overtaken += 1
