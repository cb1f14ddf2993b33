"""Local dynamic batching: images per second at 8 concurrent requests, batched against unbatched, side by side.

One random-weight pipeline serves two `LocalGenerator`s through `from_pipeline`: one with
`max_batch_size=1` (every request its own pipeline call) and one with `max_batch_size=4`.
Each round sends the same 8 concurrent requests (same steps and size, different prompts and
seeds) to one, then the other, alternating which goes first; images per second come from
the median round. It also checks that every batched image has the bytes of the unbatched
one (guaranteed on a CPU) and counts the pipeline calls per round.

    python benchmarks/local_batching.py                          # tiny pipeline on the CPU
    python benchmarks/local_batching.py --full-size --device cuda --dtype bf16 --json out.json
    python benchmarks/local_batching.py --full-size --dry-run    # the GPU mode's code path, tiny, on CPU
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from _common import write_result

from lightning_client import GenerationRequest
from lightning_client.providers.local import LocalGenerator

CONCURRENT = 8
BATCH = 4
PROMPTS = ("a red fox in the snow", "a lighthouse at dusk", "a bowl of ramen", "an owl on a branch")


def _requests(steps: int, size: int, fmt: str) -> list[GenerationRequest]:
    return [
        GenerationRequest(
            prompt=PROMPTS[i % len(PROMPTS)],
            steps=steps,
            width=size,
            height=size,
            seed=1000 + i,
            output_format=fmt,
            safety_checker=False,
        )
        for i in range(CONCURRENT)
    ]


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


async def measure(pipe: Any, *, device: str, steps: int, size: int, rounds: int, fmt: str = "png") -> dict[str, Any]:
    """Interleaved rounds of 8 concurrent requests through an unbatched and a batched generator."""
    unbatched = LocalGenerator.from_pipeline(pipe, max_batch_size=1)
    batched = LocalGenerator.from_pipeline(pipe, max_batch_size=BATCH)
    requests = _requests(steps, size, fmt)
    seconds: dict[str, list[float]] = {"unbatched": [], "batched": []}
    calls: list[int] = []
    outputs: dict[str, list[bytes]] = {}

    async def one_round(name: str, generator: LocalGenerator) -> None:
        before = generator.pipeline_calls
        _sync(device)
        start = time.perf_counter()
        results = await asyncio.gather(*(generator.agenerate(r) for r in requests))
        _sync(device)
        seconds[name].append(time.perf_counter() - start)
        outputs[name] = [r.images[0].data for r in results]
        if name == "batched":
            calls.append(generator.pipeline_calls - before)

    for warm in (unbatched, batched):  # first calls (and their allocations) outside the measurement
        await asyncio.gather(*(warm.agenerate(r) for r in requests))
    for index in range(rounds):
        order = [("unbatched", unbatched), ("batched", batched)]
        for name, generator in order if index % 2 == 0 else reversed(order):
            await one_round(name, generator)
    await unbatched.aclose()
    await batched.aclose()
    unbatched_s, batched_s = statistics.median(seconds["unbatched"]), statistics.median(seconds["batched"])
    return {
        "device": device,
        "steps": steps,
        "size": size,
        "format": fmt,
        "concurrent": CONCURRENT,
        "max_batch_size": BATCH,
        "rounds": rounds,
        "unbatched_images_per_s": round(CONCURRENT / unbatched_s, 3),
        "batched_images_per_s": round(CONCURRENT / batched_s, 3),
        "ratio": round(unbatched_s / batched_s, 3),
        "batched_pipeline_calls_per_round": max(calls),
        "same_bytes": outputs["batched"] == outputs["unbatched"],
        "load_average_1m": round(os.getloadavg()[0], 1),
    }


def _tiny_pipeline() -> Any:
    from lightning_client.testing.tiny import build_random_sdxl_pipeline

    return build_random_sdxl_pipeline("tiny", seed=0)


def run(quick: bool) -> dict[str, Any]:
    """run.py's entry: the tiny pipeline on the CPU, 4 steps at 64x64."""
    report = asyncio.run(measure(_tiny_pipeline(), device="cpu", steps=4, size=64, rounds=3 if quick else 7))
    print(_line(report), file=sys.stderr)
    return report


def _line(report: dict[str, Any]) -> str:
    return (
        f"{report['device']} {report['size']}x{report['size']} {report['steps']} steps, {CONCURRENT} concurrent: "
        f"unbatched {report['unbatched_images_per_s']} img/s, batched (max {BATCH}) "
        f"{report['batched_images_per_s']} img/s, ratio {report['ratio']}x, "
        f"{report['batched_pipeline_calls_per_round']} calls per round, same bytes: {report['same_bytes']}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full-size", action="store_true", help="full-size random-weight SDXL (GPU)")
    parser.add_argument("--device", default="cuda", help="device of the full-size pipeline")
    parser.add_argument("--dtype", default="bf16", choices=["bf16", "fp16", "fp32"])
    parser.add_argument("--dry-run", action="store_true", help="the full-size mode's code path, tiny, on the CPU")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--size", type=int, default=None, help="image side (tiny 64, full size 1024)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--format", default="jpeg", choices=["png", "jpeg", "webp"])
    parser.add_argument("--json", type=Path, default=None, help="write the report here")
    args = parser.parse_args(argv)
    if not args.full_size:
        report = run(quick=False)
        write_result("local_batching", report)
        return 0
    import torch

    from lightning_client.testing.tiny import build_random_sdxl_pipeline

    device = "cpu" if args.dry_run else args.device
    # The dry run checks the code path only; half precision on a CPU would just be slow.
    dtype = (
        torch.float32
        if args.dry_run
        else {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[args.dtype]
    )
    size = args.size or (64 if args.dry_run else 1024)
    start = time.perf_counter()
    pipe = build_random_sdxl_pipeline("tiny" if args.dry_run else "full", device=device, dtype=dtype)
    build_s = time.perf_counter() - start
    report = asyncio.run(measure(pipe, device=device, steps=args.steps, size=size, rounds=args.rounds, fmt=args.format))
    report.update(dtype=args.dtype, full_size=not args.dry_run, build_s=round(build_s, 2), target_ratio=2.0)
    if device.startswith("cuda"):
        report["gpu"] = torch.cuda.get_device_name()
        report["peak_gpu_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    print(_line(report) + f" (target on a GPU: >= 2x at batch {BATCH})", flush=True)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
