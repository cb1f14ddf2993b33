"""Local generation benchmark: LocalGenerator overhead on CPU, full-size SDXL latency on a GPU.

CPU mode (default): the tiny offline model from `build_tiny_lightning`; `LocalGenerator`
(worker thread, checkpoint/scheduler logic, image encoding) against a raw diffusers
pipeline call on the same inputs (the model card's recipe). Reports the ratio of medians
(target <= 1.05) and checks that both produce the same pixels.

GPU mode (`--full-size --device cuda`): the full-size SDXL architecture with random
weights from the shipped configs (same compute as the real model), 1024x1024, steps
1/2/4/8, fp16 and bf16, eager or with regional `torch.compile`; ms per image through
`LocalGenerator.from_pipeline` and peak GPU memory. Results are appended to a JSON file
after every configuration, so a run cut short keeps what it measured.

    python benchmarks/local_generation.py
    python benchmarks/local_generation.py --full-size --device cuda --dtypes bf16,fp16 --steps 1,2,4,8
    python benchmarks/local_generation.py --full-size --device cuda --compile --dtypes bf16 --steps 4,1,2,8
    python benchmarks/local_generation.py --full-size --dry-run   # the GPU mode's code path, tiny, on CPU
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from lightning_client import GenerationRequest
from lightning_client.providers.local import LocalGenerator
from lightning_client.providers.local.pipeline import CompileMode
from lightning_client.testing.tiny import ConfigSize, build_random_sdxl_pipeline, build_tiny_lightning

PROMPT = "a photograph of an astronaut riding a horse on the moon, detailed, 35mm"
DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _environment(device: str) -> dict[str, Any]:
    import diffusers
    import torch

    env: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "device": device,
    }
    if device.startswith("cuda"):
        env["gpu"] = torch.cuda.get_device_name()
    return env


def _write(path: Path | None, report: dict[str, Any]) -> None:
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=2))


# --------------------------------------------------------------------------- CPU mode


async def cpu_mode(args: argparse.Namespace) -> dict[str, Any]:
    import torch
    from safetensors.torch import load_file

    diffusers: Any = importlib.import_module("diffusers")

    torch.set_num_threads(args.threads) if args.threads else None
    with tempfile.TemporaryDirectory() as tmp:
        tiny = build_tiny_lightning(tmp)
        request = GenerationRequest(
            prompt=PROMPT, steps=args.cpu_steps, width=args.size, height=args.size, seed=7, safety_checker=False
        )
        generator = LocalGenerator(base_model=str(tiny.base), lightning_repo=str(tiny.lightning), device="cpu")
        await generator.aload(request.steps)

        # The model card's recipe, by hand: base pipeline, Lightning UNet weights, trailing Euler.
        raw = diffusers.StableDiffusionXLPipeline.from_pretrained(str(tiny.base), add_watermarker=False)
        raw.unet.load_state_dict(
            load_file(str(tiny.lightning / f"sdxl_lightning_{request.steps}step_unet.safetensors"))
        )
        raw.scheduler = diffusers.EulerDiscreteScheduler.from_config(raw.scheduler.config, timestep_spacing="trailing")
        raw.set_progress_bar_config(disable=True)

        def raw_call() -> Any:
            with torch.inference_mode():
                return raw(
                    prompt=request.prompt,
                    num_inference_steps=request.steps,
                    guidance_scale=0.0,
                    width=request.width,
                    height=request.height,
                    generator=torch.Generator("cpu").manual_seed(request.seed),
                ).images[0]

        ours_s: list[float] = []
        raw_s: list[float] = []
        for i in range(args.warmup + args.repeats):  # interleaved so drift hits both alike
            start = time.perf_counter()
            result = await generator.agenerate(request)
            ours = time.perf_counter() - start
            start = time.perf_counter()
            raw_image = raw_call()
            raws = time.perf_counter() - start
            if i >= args.warmup:
                ours_s.append(ours)
                raw_s.append(raws)
        same = bool(np.array_equal(np.asarray(result.images[0].to_pil().convert("RGB")), np.asarray(raw_image)))
        await generator.aclose()
    ours_med, raw_med = statistics.median(ours_s), statistics.median(raw_s)
    report = {
        "mode": "cpu",
        "environment": _environment("cpu"),
        "size": args.size,
        "steps": request.steps,
        "repeats": args.repeats,
        "local_generator_ms": round(ours_med * 1000, 2),
        "raw_pipeline_ms": round(raw_med * 1000, 2),
        "ratio": round(ours_med / raw_med, 4),
        "target_ratio": 1.05,
        "same_pixels": same,
    }
    print(
        f"CPU tiny {args.size}x{args.size}, {request.steps} steps, median of {args.repeats}: "
        f"LocalGenerator {report['local_generator_ms']} ms, raw diffusers {report['raw_pipeline_ms']} ms, "
        f"ratio {report['ratio']} (target <= 1.05), same pixels: {same}"
    )
    return report


# --------------------------------------------------------------------------- GPU mode


def _request(steps: int, batch: int, size: int, fmt: str) -> GenerationRequest:
    return GenerationRequest(
        prompt=PROMPT,
        steps=steps,
        width=size,
        height=size,
        seed=11,
        num_images=batch,
        output_format=fmt,
        safety_checker=False,
    )


def _raw_call(pipe: Any, request: GenerationRequest) -> Any:
    """A bare pipeline call with the same inputs as LocalGenerator's (same scheduler object)."""
    import torch

    with torch.inference_mode():
        return pipe(
            prompt=request.prompt,
            num_inference_steps=request.steps,
            guidance_scale=0.0,
            width=request.width,
            height=request.height,
            num_images_per_prompt=request.num_images,
            generator=[torch.Generator("cpu").manual_seed(request.seed + i) for i in range(request.num_images)],
        ).images


async def _time_config(
    generator: LocalGenerator, pipe: Any, device: str, request: GenerationRequest, args: argparse.Namespace
) -> dict[str, Any]:
    """Warm up, then time LocalGenerator (and, interleaved, the bare pipeline when asked)."""
    import torch

    first = time.perf_counter()
    await generator.agenerate(request)  # the first call of a configuration: warm-up (and compile)
    first_s = time.perf_counter() - first
    for _ in range(max(args.warmup - 1, 0)):
        await generator.agenerate(request)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    totals: list[float] = []
    inference: list[float] = []
    raw: list[float] = []
    for _ in range(args.repeats):
        _sync(device)
        start = time.perf_counter()
        result = await generator.agenerate(request)
        totals.append(time.perf_counter() - start)
        inference.append(result.timings.inference_s or 0.0)
        if args.raw:
            _sync(device)
            start = time.perf_counter()
            _raw_call(pipe, request)
            _sync(device)
            raw.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else None
    again = await generator.agenerate(request)
    batch = request.num_images
    row: dict[str, Any] = {
        "steps": request.steps,
        "batch": batch,
        "format": request.output_format,
        "first_call_s": round(first_s, 3),
        "ms_per_image": round(statistics.median(totals) * 1000 / batch, 2),
        "ms_per_image_min": round(min(totals) * 1000 / batch, 2),
        "pipeline_ms_per_image": round(statistics.median(inference) * 1000 / batch, 2),
        "peak_gpu_gib": None if peak is None else round(peak, 2),
        "same_bytes_same_seed": again.images[0].data == result.images[0].data,
    }
    if raw:
        row["raw_pipeline_ms_per_image"] = round(statistics.median(raw) * 1000 / batch, 2)
        row["ratio_vs_raw"] = round(statistics.median(totals) / statistics.median(raw), 3)
    return row


def _breakdown(pipe: Any, device: str, size: int, repeats: int) -> dict[str, float]:
    """Median ms of the parts of one 1-image call: prompt encoding, one UNet call, VAE decode, PNG/JPEG encode."""
    import torch

    from lightning_client.providers.local.generator import _encode

    def timed(fn: Any) -> float:
        fn()
        times = []
        for _ in range(repeats):
            _sync(device)
            start = time.perf_counter()
            fn()
            _sync(device)
            times.append(time.perf_counter() - start)
        return round(statistics.median(times) * 1000, 2)

    with torch.inference_mode():
        embeds, _, pooled, _ = pipe.encode_prompt(PROMPT, device=pipe.device, do_classifier_free_guidance=False)
        latent = size // pipe.vae_scale_factor
        sample = torch.randn(1, 4, latent, latent, device=pipe.device, dtype=pipe.unet.dtype)
        time_ids = torch.tensor([[size, size, 0, 0, size, size]], device=pipe.device, dtype=pipe.unet.dtype)
        t = torch.tensor(999, device=pipe.device)
        cond = {"text_embeds": pooled, "time_ids": time_ids}
        parts = {
            "encode_prompt_ms": timed(
                lambda: pipe.encode_prompt(PROMPT, device=pipe.device, do_classifier_free_guidance=False)
            ),
            "unet_call_ms": timed(lambda: pipe.unet(sample, t, encoder_hidden_states=embeds, added_cond_kwargs=cond)),
            "vae_decode_ms": timed(lambda: pipe.vae.decode(sample.to(pipe.vae.dtype)).sample),
        }
        image = pipe.image_processor.postprocess(pipe.vae.decode(sample.to(pipe.vae.dtype)).sample, output_type="pil")
    parts["png_encode_ms"] = timed(lambda: _encode(image, "png"))
    parts["jpeg_encode_ms"] = timed(lambda: _encode(image, "jpeg"))
    return parts


async def gpu_mode(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    device = "cpu" if args.dry_run else args.device
    size_name: ConfigSize = "tiny" if args.dry_run else "full"
    size = 64 if args.dry_run else args.size
    deadline = time.monotonic() + args.time_budget
    compile_mode: CompileMode = {"none": False, "regional": "regional", "full": "full"}[args.compile]  # type: ignore[assignment]
    report: dict[str, Any] = {
        "mode": "gpu" if not args.dry_run else "dry-run",
        "environment": _environment(device),
        "size": size,
        "compile": args.compile,
        "results": [],
        "breakdown": {},
        "skipped": [],
    }
    steps_list = [int(s) for s in args.steps.split(",")]
    batches = [int(b) for b in args.batches.split(",")]
    for dtype_name in args.dtypes.split(","):
        if time.monotonic() > deadline:
            report["skipped"].append({"dtype": dtype_name, "why": "time budget"})
            continue
        dtype = getattr(torch, DTYPES[dtype_name])
        start = time.perf_counter()
        pipe = build_random_sdxl_pipeline(size_name, device=device, dtype=dtype)
        build_s = time.perf_counter() - start
        generator = LocalGenerator.from_pipeline(pipe, variant="unet", compile=compile_mode)
        if args.breakdown:
            report["breakdown"][dtype_name] = parts = _breakdown(pipe, device, size, args.repeats)
            print(f"{dtype_name} breakdown (ms): {parts}", flush=True)
        for steps in steps_list:
            for batch in batches if steps == args.batch_steps else [1]:
                if time.monotonic() > deadline:
                    report["skipped"].append(
                        {"dtype": dtype_name, "steps": steps, "batch": batch, "why": "time budget"}
                    )
                    continue
                request = _request(steps, batch, size, args.format)
                row = await _time_config(generator, pipe, device, request, args)
                row.update(dtype=dtype_name, compiled=args.compile, build_s=round(build_s, 2))
                report["results"].append(row)
                _write(args.json, report)
                raw = (
                    f", raw pipeline {row['raw_pipeline_ms_per_image']:.1f} (x{row['ratio_vs_raw']})"
                    if args.raw
                    else ""
                )
                print(
                    f"{dtype_name:>4} {args.compile:>8} steps={steps} batch={batch}: "
                    f"{row['ms_per_image']:8.1f} ms/image (pipeline {row['pipeline_ms_per_image']:.1f}{raw}), "
                    f"first call {row['first_call_s']:.1f} s, peak {row['peak_gpu_gib']} GiB",
                    flush=True,
                )
        await generator.aclose()
        del generator, pipe
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
    _write(args.json, report)
    return report


def print_table(report: dict[str, Any]) -> None:
    rows = [r for r in report.get("results", []) if not r.get("raw_pipeline")]
    if not rows:
        return
    print(
        "\n| dtype | compile | steps | batch | format | ms/image | pipeline ms/image | raw pipeline ms/image | first call s | peak GiB |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['dtype']} | {r['compiled']} | {r['steps']} | {r['batch']} | {r['format']} | {r['ms_per_image']} | "
            f"{r['pipeline_ms_per_image']} | {r.get('raw_pipeline_ms_per_image', '')} | {r['first_call_s']} | {r['peak_gpu_gib']} |"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full-size", action="store_true", help="GPU mode: full-size random-weight SDXL")
    parser.add_argument("--device", default="cuda", help="GPU mode device (default cuda)")
    parser.add_argument("--dry-run", action="store_true", help="GPU mode's code path with the tiny model on CPU")
    parser.add_argument("--dtypes", default="bf16,fp16", help="comma-separated: bf16, fp16, fp32")
    parser.add_argument("--steps", default="1,2,4,8", help="comma-separated step counts, timed in this order")
    parser.add_argument("--batches", default="1", help="batch sizes tried at --batch-steps (others use 1)")
    parser.add_argument("--batch-steps", type=int, default=4)
    parser.add_argument("--raw", action="store_true", help="also time the bare pipeline call, interleaved")
    parser.add_argument("--breakdown", action="store_true", help="time prompt encoding, one UNet call, VAE decode")
    parser.add_argument("--format", default="png", choices=["png", "jpeg", "webp"], help="output format")
    parser.add_argument(
        "--compile", default="none", choices=["none", "regional", "full"], help="LocalGenerator compile="
    )
    parser.add_argument("--size", type=int, default=None, help="image side (CPU default 64, GPU default 1024)")
    parser.add_argument("--cpu-steps", type=int, default=4)
    parser.add_argument("--threads", type=int, default=0, help="CPU mode torch threads (0: torch default)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--time-budget", type=float, default=3600.0, help="seconds; later configurations are skipped")
    parser.add_argument("--json", type=Path, default=None, help="write the report here")
    args = parser.parse_args(argv)
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.set_verbosity_error()  # the fp16 VAE upcast logs on every call
    if args.size is None:
        args.size = 1024 if args.full_size else 64
    if args.full_size:
        report = asyncio.run(gpu_mode(args))
        print_table(report)
    else:
        report = asyncio.run(cpu_mode(args))
        _write(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
