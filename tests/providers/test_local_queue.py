"""The local queue's policy: batches of one shape, the loaded step count first, bounded overtaking."""

from __future__ import annotations

import itertools

from lightning_client.providers.local.queue import MAX_OVERTAKES, Job, note_overtaken, pick_batch
from lightning_client.request import GenerationRequest


def job(steps: int, size: int = 64, images: int = 1) -> Job:
    request = GenerationRequest(prompt="a fox", steps=steps, width=size, height=size, num_images=images)
    return Job(steps=steps, request=request)


def serve_all(queue: list[Job], loaded: int | None, max_images: int) -> list[list[Job]]:
    """Serve `queue` to the end as the worker would; the batches in order."""
    batches = []
    while queue:
        batch = pick_batch(queue, loaded, max_images)
        note_overtaken(queue, batch)
        for chosen in batch:
            queue.remove(chosen)
        loaded = batch[0].steps
        batches.append(batch)
    return batches


def test_same_shape_jobs_share_a_batch_up_to_the_image_limit() -> None:
    queue = [job(4), job(4, size=128), job(4), job(4, images=2), job(4)]
    batch = pick_batch(queue, 4, max_images=4)
    assert batch == [queue[0], queue[2], queue[3]]  # 1 + 1 + 2 images; the 128 px job cannot join


def test_a_request_larger_than_the_limit_runs_alone() -> None:
    queue = [job(4, images=6), job(4)]
    assert pick_batch(queue, 4, max_images=4) == [queue[0]]


def test_loads_are_never_batched() -> None:
    load = Job(steps=4)
    queue = [load, job(4)]
    assert pick_batch(queue, None, max_images=4) == [load]


def test_alternating_step_counts_are_grouped() -> None:
    queue = [job(2, size=64 + 64 * (i % 3)) if i % 2 else job(4, size=64 + 64 * (i % 3)) for i in range(8)]
    batches = serve_all(list(queue), loaded=4, max_images=1)
    steps = [b[0].steps for b in batches]
    switches = sum(1 for a, b in itertools.pairwise(steps) if a != b)
    fifo_switches = 7
    assert switches < fifo_switches
    assert sorted(j.steps for b in batches for j in b) == sorted(j.steps for j in queue)  # everyone served


def test_overtaking_is_bounded() -> None:
    waiting = job(2)
    queue = [waiting, *(job(4) for _ in range(10))]
    served_before = 0
    while True:
        batch = pick_batch(queue, 4, max_images=1)
        note_overtaken(queue, batch)
        for chosen in batch:
            queue.remove(chosen)
        if waiting in batch:
            break
        served_before += 1
    assert served_before == MAX_OVERTAKES


def test_without_a_loaded_checkpoint_the_oldest_goes_first() -> None:
    queue = [job(2), job(4)]
    assert pick_batch(queue, None, max_images=4) == [queue[0]]
    assert pick_batch([], 4, max_images=4) == []
