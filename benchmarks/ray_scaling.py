"""Ray Serve scale-out: images per second of 2 worker replicas against 1, side by side in one run.

A local Ray cluster runs two applications at once on the tiny offline pipeline (CPU, one torch
thread per replica): one with 1 `LocalWorker` replica, one with 2. The same burst of concurrent
requests goes through a `RayWorkerPool` to each in turn, alternating, several rounds; the
ratio of median throughputs is reported (target: at least 1.6x on a 2-core machine).

    python benchmarks/ray_scaling.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import lightning_client as lc
from lightning_client.serving.ray import RaySettings, make_config, worker_pool
from lightning_client.serving.ray_pool import LocalWorker
from lightning_client.testing.tiny import build_tiny_lightning


async def _burst(pool: Any, requests: int, size: int, steps: int) -> float:
    started = time.perf_counter()
    await asyncio.gather(
        *(
            pool.agenerate(lc.GenerationRequest(prompt="a red fox", steps=steps, width=size, height=size, seed=i))
            for i in range(requests)
        )
    )
    return requests / (time.perf_counter() - started)


def run(quick: bool = False) -> dict[str, Any]:
    import ray
    from ray import serve

    requests, rounds = (8, 1) if quick else (16, 3)
    size, steps = 128, 4
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with tempfile.TemporaryDirectory() as tmp:
        tiny = build_tiny_lightning(Path(tmp))
        ray.init(num_cpus=3, include_dashboard=False, log_to_driver=False)
        try:
            pools = {}
            for replicas in (1, 2):
                config = make_config(
                    RaySettings(replicas=replicas, num_cpus=1, max_batch_size=1, torch_threads=1),
                    local_model=tiny.root,
                    device="cpu",
                )
                deployment = serve.deployment(
                    LocalWorker, name="LocalWorker", **config.ray.worker_options(config.device)
                )
                handle = serve.run(
                    deployment.bind(config.worker_spec().model_dump()), name=f"bench-{replicas}", route_prefix=None
                )
                pools[replicas] = worker_pool(handle, config)

            async def measure() -> dict[int, list[float]]:
                for pool in pools.values():  # warm: every replica reachable and has run the step count once
                    await pool.aload()
                    await _burst(pool, 4, size, steps)
                figures: dict[int, list[float]] = {1: [], 2: []}
                for _ in range(rounds):
                    for replicas, pool in pools.items():
                        figures[replicas].append(await _burst(pool, requests, size, steps))
                return figures

            figures = asyncio.run(measure())
        finally:
            serve.shutdown()
            ray.shutdown()
    one, two = statistics.median(figures[1]), statistics.median(figures[2])
    return {
        "load_average_1m_at_end": round(os.getloadavg()[0], 2),  # other work on the machine shrinks the ratio
        "requests": requests,
        "rounds": rounds,
        "size": size,
        "steps": steps,
        "images_per_s": {"1 replica": figures[1], "2 replicas": figures[2]},
        "median_images_per_s": {"1 replica": round(one, 3), "2 replicas": round(two, 3)},
        "ratio": round(two / one, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    print(json.dumps(run(parser.parse_args().quick), indent=2))


if __name__ == "__main__":
    main()
