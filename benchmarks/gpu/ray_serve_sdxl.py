"""Full-size SDXL (random weights, the real architecture) served through Ray Serve: images per second.

Two applications share the GPU on one local Ray cluster (`num_gpus` 0.5 each): `unbatched`
(`max_batch_size=1`) and `batched` (`max_batch_size=--batch`), each one `LocalWorker` replica
holding a `LocalGenerator` around a random-weight full-size pipeline (as the local GPU benchmark
does). For 1 and N concurrent clients, the same burst goes through a `RayWorkerPool` to each
in turn, alternating, so both see the same GPU state; the figures are images per second at
1024x1024, 4 steps, bf16, JPEG. Results are written to the JSON file after every measurement.

    python benchmarks/gpu/ray_serve_sdxl.py --json out.json                # on a GPU machine
    python benchmarks/gpu/ray_serve_sdxl.py --dry-run --json /tmp/out.json # tiny, CPU: the logic only
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import lightning_client as lc
from lightning_client.providers.local import LocalGenerator
from lightning_client.serving.ray import RaySettings, make_config, worker_pool
from lightning_client.serving.ray_pool import LocalWorker, RayWorkerPool

PROMPT = "a photograph of an astronaut riding a horse on the moon, detailed, 35mm"
DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}


def random_sdxl(
    *, size: str, device: str, dtype: str, max_batch_size: int, batch_wait_s: float | None = None
) -> LocalGenerator:
    """A replica's generator: `LocalGenerator.from_pipeline` on a random-weight pipeline (the worker's factory)."""
    import torch

    from lightning_client.testing.tiny import build_random_sdxl_pipeline

    pipe = build_random_sdxl_pipeline(size, device=device, dtype=getattr(torch, dtype))
    options: dict[str, Any] = {"max_batch_size": max_batch_size}
    if batch_wait_s is not None:
        options["batch_wait_s"] = batch_wait_s
    return LocalGenerator.from_pipeline(pipe, variant="unet", **options)


async def _burst(pool: RayWorkerPool, clients: int, requests: int, side: int, steps: int) -> dict[str, Any]:
    """`requests` generations, at most `clients` at a time; images per second and latencies."""
    gate = asyncio.Semaphore(clients)
    latencies: list[float] = []
    served: set[str] = set()

    async def one(seed: int) -> None:
        async with gate:
            started = time.perf_counter()
            result = await pool.agenerate(
                lc.GenerationRequest(
                    prompt=PROMPT, steps=steps, width=side, height=side, seed=seed, output_format="jpeg"
                )
            )
            latencies.append(time.perf_counter() - started)
            served.add(result.served_by or "")

    started = time.perf_counter()
    await asyncio.gather(*(one(seed) for seed in range(requests)))
    wall = time.perf_counter() - started
    latencies.sort()
    return {
        "clients": clients,
        "requests": requests,
        "wall_s": round(wall, 3),
        "images_per_s": round(requests / wall, 3),
        "p50_s": round(latencies[len(latencies) // 2], 3),
        "replicas": len(served),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--json", type=Path, required=True, help="results file, rewritten after every measurement")
    parser.add_argument("--dry-run", action="store_true", help="tiny pipeline on CPU, 64x64: checks the logic")
    parser.add_argument("--clients", default="1,4", help="concurrent clients to measure (comma-separated)")
    parser.add_argument("--batch", type=int, default=4, help="max_batch_size of the batched application")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="bf16")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds per client count")
    parser.add_argument("--per-client", type=int, default=4, help="requests per client in one burst")
    args = parser.parse_args()

    import ray
    from ray import serve

    dry = args.dry_run
    device, size, side = ("cpu", "tiny", 64) if dry else ("cuda", "full", 1024)
    dtype = "float32" if dry else DTYPES[args.dtype]
    clients = [int(c) for c in args.clients.split(",")]
    report: dict[str, Any] = {
        "python": platform.python_version(),
        "device": device,
        "size": f"{side}x{side}",
        "steps": args.steps,
        "dtype": dtype,
        "batch": args.batch,
        "dry_run": dry,
        "measurements": [],
    }

    def save() -> None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    here = str(Path(__file__).resolve().parent)  # the replicas import `random_sdxl` from this file
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH", "")) if p)
    ray.init(
        num_cpus=max(os.cpu_count() or 2, 2),
        num_gpus=0 if dry else None,
        include_dashboard=False,
        log_to_driver=False,
    )
    try:
        pools: dict[str, RayWorkerPool] = {}
        started = time.perf_counter()
        for name, batch in (("unbatched", 1), ("batched", args.batch)):
            settings = RaySettings(
                replicas=1,
                num_cpus=1,
                num_gpus=0 if dry else 0.5,
                max_batch_size=batch,
                max_ongoing_requests=max(2 * batch, max(clients)),
            )
            config = make_config(settings, local_model=None, device=device)
            spec = config.worker_spec().model_copy(
                update={
                    "factory": "ray_serve_sdxl:random_sdxl",
                    "local": {"size": size, "device": device, "dtype": dtype, "max_batch_size": batch},
                    "warm_steps": args.steps,
                }
            )
            deployment = serve.deployment(name="LocalWorker", **settings.worker_options(device))(LocalWorker)
            handle = serve.run(deployment.bind(spec.model_dump()), name=name, route_prefix=None)
            pools[name] = worker_pool(handle, config)
        report["startup_s"] = round(time.perf_counter() - started, 1)
        save()

        async def measure() -> None:
            for pool in pools.values():  # the first calls of each shape pay for kernel selection
                await _burst(pool, max(clients), max(clients), side, args.steps)
            for count in clients:
                for round_index in range(args.rounds):
                    for name, pool in pools.items():
                        figures = await _burst(pool, count, count * args.per_client, side, args.steps)
                        report["measurements"].append({"app": name, "round": round_index, **figures})
                        print(json.dumps(report["measurements"][-1]), flush=True)
                        save()

        asyncio.run(measure())
        summary: dict[str, dict[str, float]] = {}
        for row in report["measurements"]:
            key = f"{row['app']} x{row['clients']}"
            summary.setdefault(key, {"images_per_s": 0.0})
            summary[key]["images_per_s"] = max(summary[key]["images_per_s"], row["images_per_s"])
        report["best_images_per_s"] = summary
        save()
        print(json.dumps(summary, indent=2))
    finally:
        serve.shutdown()  # type: ignore[no-untyped-call]
        ray.shutdown()


if __name__ == "__main__":
    main()
