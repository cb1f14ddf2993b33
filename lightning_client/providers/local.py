"""`LocalGenerator`: SDXL-Lightning on a local diffusers pipeline (GPU, MPS or CPU).

The right checkpoint and scheduler per step count (model card): the 1/2/4/8-step UNet
files or the 2/4/8-step LoRAs, `EulerDiscreteScheduler` with trailing timesteps,
sample prediction for the 1-step x0 UNet, guidance 0. One warm pipeline per generator;
jobs run one at a time on a worker thread so the event loop stays free.

torch and diffusers are imported when the pipeline first loads, never on import.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import io
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lightning_client.errors import InvalidRequestError
from lightning_client.generator import AttemptContext, BaseGenerator, Capabilities, ProviderOption, as_request
from lightning_client.images import CONTENT_TYPES
from lightning_client.pricing import DEFAULT_PRICES, PriceTable
from lightning_client.providers._local_files import (
    LORA_FILES,
    UNET_FILES,
    Variant,
    checkpoint_name,
    is_hub_id,
    resolve_checkpoint,
)
from lightning_client.providers._local_pipeline import Cancelled, CompileMode, LoadOptions, WarmPipeline
from lightning_client.request import GenerationRequest
from lightning_client.result import Cost, GeneratedImage, GenerationResult, Timings

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

    from lightning_client.realtime import RealtimeBackend

__all__ = ["LocalGenerator", "ProgressCallback"]

#: Called on the event loop after each denoising step with (step, total_steps).
ProgressCallback = Callable[[int, int], None]

_PIL_FORMATS = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}
# PNG level 1 is much faster than Pillow's default (6) for slightly larger files; a 1024x1024
# PNG still costs ~0.2 s of CPU on noisy output (docs/benchmarks.md): latency-bound callers
# should ask for jpeg or webp. Encoding runs off the device worker, so it never delays the next job.
_ENCODE_OPTIONS: dict[str, dict[str, Any]] = {
    "png": {"compress_level": 1},
    "jpeg": {"quality": 95},
    "webp": {"quality": 95},
}


@dataclass
class _JobOutput:
    images: list[PILImage]
    queue_s: float
    load_s: float
    inference_s: float
    device: str


class LocalGenerator(BaseGenerator):
    """SDXL-Lightning on a local diffusers pipeline.

    Args:
        base_model: SDXL base pipeline, a hub id or a local folder in diffusers layout.
        lightning_repo: where the Lightning checkpoints are, a hub id or a local folder.
        variant: "unet" (full UNet files, 1/2/4/8 steps, best quality) or "lora" (2/4/8 steps,
            fused into the base UNet; works with other SDXL bases).
        device: "auto" (cuda > mps > cpu), or an explicit torch device that must exist.
        dtype: "auto" (bf16 on CUDA, fp16 there when `vae` is given, fp16 on MPS, fp32 on
            CPU), "float16"/"bfloat16"/"float32", or a torch dtype.
        vae: an fp16-safe VAE (e.g. "madebyollin/sdxl-vae-fp16-fix") replacing the base's; the
            base VAE is upcast to fp32 for every decode in fp16.
        cache_dir, local_files_only, revision: passed to huggingface_hub/diffusers;
            `HF_HUB_OFFLINE=1` is honoured by them.
        base_variant: weight-file variant of the base ("fp16" on the hub halves the download);
            "auto" uses "fp16" for a hub base in half precision, none for a local folder.
        channels_last, compile, fuse_qkv: optional speed-ups: channels_last memory format;
            `compile=True`/"regional" compiles the UNet's repeated transformer blocks, "full"
            the whole UNet and VAE decoder with CUDA graphs (bf16 or an fp16-safe VAE); fused
            QKV projections (unet variant only).
        prices: price table; cost = GPU seconds x `prices.local_gpu_hour`.
        progress: called on the event loop with (step, total) after each denoising step.
        name: what routers, ledgers and reports call this generator (default "local").

    Image i of a request uses a CPU `torch.Generator` seeded with `seed + i`, so a seed gives
    the same pixels on every run and device type.
    """

    kind = "local"
    name = "local"
    #: No published figure: an assumption for one 1024x1024 4-step image on a data-centre GPU.
    latency_prior_s = 2.0
    #: GPU seconds per image assumed before anything is measured.
    GPU_SECONDS_PRIOR_S = 1.0
    options = (
        ProviderOption("base_model", "SDXL base pipeline: a hub id or a local folder."),
        ProviderOption("lightning_repo", "Where the Lightning checkpoints are: a hub id or a local folder."),
        ProviderOption("variant", "unet (1/2/4/8 steps) or lora (2/4/8 steps).", choices=("unet", "lora")),
        ProviderOption("device", "auto, cuda, mps, cpu or a torch device."),
    )

    def prior_cost_per_image(self, prices: PriceTable) -> float | None:
        return self.prices.local_gpu_hour.usd / 3600 * self.GPU_SECONDS_PRIOR_S

    def __init__(
        self,
        base_model: str = "stabilityai/stable-diffusion-xl-base-1.0",
        lightning_repo: str = "ByteDance/SDXL-Lightning",
        *,
        variant: Variant = "unet",
        device: str = "auto",
        dtype: str | Any = "auto",
        vae: str | None = None,
        cache_dir: str | None = None,
        local_files_only: bool = False,
        revision: str | None = None,
        base_variant: str | None = "auto",
        channels_last: bool = False,
        compile: CompileMode = False,
        fuse_qkv: bool = False,
        prices: PriceTable = DEFAULT_PRICES,
        progress: ProgressCallback | None = None,
        name: str | None = None,
    ) -> None:
        self.name = self._check_name(name)
        if variant not in ("unet", "lora"):
            raise InvalidRequestError(f"variant={variant!r} is invalid; allowed: 'unet' or 'lora'", field="variant")
        if fuse_qkv and variant == "lora":
            raise InvalidRequestError(
                "fuse_qkv=True needs variant='unet' (LoRA swaps target to_q/to_k/to_v)", field="fuse_qkv"
            )
        if base_variant == "auto":
            half = dtype in ("auto", "float16", "fp16", "half", "bfloat16", "bf16") or "16" in str(dtype)
            base_variant = "fp16" if is_hub_id(base_model) and half else None
        self.model = lightning_repo
        self.variant: Variant = variant
        self.prices = prices
        self._progress = progress
        self._options = LoadOptions(
            base_model=base_model,
            lightning_repo=lightning_repo,
            variant=variant,
            device=device,
            dtype=dtype,
            vae=vae,
            cache_dir=cache_dir,
            local_files_only=local_files_only,
            revision=revision,
            base_variant=base_variant,
            channels_last=channels_last,
            compile=compile,
            fuse_qkv=fuse_qkv,
        )
        self._warm: WarmPipeline | None = None
        self._pipeline_loads = 0
        self._worker: concurrent.futures.ThreadPoolExecutor | None = None
        self._worker_lock = threading.Lock()

    @classmethod
    def from_pipeline(
        cls,
        pipeline: Any,
        *,
        variant: Variant = "unet",
        lightning_repo: str | None = None,
        cache_dir: str | None = None,
        local_files_only: bool = False,
        channels_last: bool = False,
        compile: CompileMode = False,
        fuse_qkv: bool = False,
        prices: PriceTable = DEFAULT_PRICES,
        progress: ProgressCallback | None = None,
        name: str | None = None,
    ) -> LocalGenerator:
        """Serve an already-built `StableDiffusionXLPipeline` (advanced).

        With `lightning_repo`, step changes swap checkpoints from it as usual. Without it
        the pipeline's weights are used as they are for every step count (only the
        scheduler changes per step); the caller vouches for them. The speed flags are
        applied to `pipeline` at once. Benchmarks use this to time random-weight
        full-size pipelines through the same inference path. Closing the generator
        releases the pipeline for good.
        """
        generator = cls(
            base_model="<in-memory pipeline>",
            lightning_repo=lightning_repo or "<in-memory pipeline>",
            variant=variant,
            device=str(pipeline.device),
            fuse_qkv=fuse_qkv,
            cache_dir=cache_dir,
            local_files_only=local_files_only,
            prices=prices,
            progress=progress,
            name=name,
        )
        source = None
        if lightning_repo is not None:
            repo = lightning_repo

            def source(steps: int) -> Any:
                return resolve_checkpoint(
                    repo,
                    checkpoint_name(variant, steps),
                    cache_dir=cache_dir,
                    local_files_only=local_files_only,
                    revision=None,
                )

        pipeline.set_progress_bar_config(disable=True)
        generator._warm = WarmPipeline(pipeline, variant=variant, checkpoint_path=source, fuse_qkv=fuse_qkv)
        generator._warm.apply_speedups(channels_last=channels_last, compile=compile)
        return generator

    @property
    def capabilities(self) -> Capabilities:
        steps = UNET_FILES if self.variant == "unet" else LORA_FILES
        return Capabilities(
            native_steps=frozenset(steps),
            max_images=8,
            max_images_per_call=8,
            formats=frozenset(CONTENT_TYPES),
            seed=True,
            negative_prompt=False,
            guidance=False,
        )

    @property
    def pipeline(self) -> Any:
        """The warm diffusers pipeline, or None before the first load."""
        return None if self._warm is None else self._warm.pipe

    @property
    def pipeline_loads(self) -> int:
        """How many times a base pipeline was loaded (1 after first use, whatever the step changes)."""
        return self._pipeline_loads

    @property
    def checkpoint_loads(self) -> int:
        """How many Lightning checkpoint files were loaded into the warm pipeline."""
        return 0 if self._warm is None else self._warm.checkpoint_loads

    async def agenerate(self, request: GenerationRequest | str | None = None, **fields: Any) -> GenerationResult:
        req = as_request(request, fields)
        checkpoint_name(self.variant, req.steps)  # says plainly that there is no 1-step LoRA
        return await super().agenerate(req)

    async def aload(self, steps: int = 4) -> float:
        """Load the pipeline (and the `steps` checkpoint) now; returns the seconds it took (0 when warm)."""
        checkpoint_name(self.variant, steps)
        seconds: float = await self._submit(lambda: self._prepare(steps))
        return seconds

    def load(self, steps: int = 4) -> float:
        """Synchronous `aload`."""
        from lightning_client._sync import run_sync

        return run_sync(self.aload(steps))

    async def _generate(self, ctx: AttemptContext) -> GenerationResult:
        req = ctx.request
        if req.safety_checker:
            ctx.warn("unsupported", "safety_checker", "SDXL has no safety checker; local images are not filtered")
        if req.options_for(self.name):
            ctx.warn("ignored", "provider_options", "the local backend takes no provider options")
        loop = asyncio.get_running_loop()
        on_step: Callable[[int, int], None] | None = None
        if self._progress is not None:
            progress = self._progress

            def on_step(step: int, total: int) -> None:
                loop.call_soon_threadsafe(progress, step, total)

        cancel = threading.Event()
        submitted = time.monotonic()
        try:
            job = await self._submit(lambda: self._run(req, cancel, on_step, submitted))
        except asyncio.CancelledError:
            cancel.set()  # the worker stops after the current step
            raise
        images = await asyncio.to_thread(_encode, job.images, req.output_format)
        gpu_s = job.load_s + job.inference_s
        rate = self.prices.local_gpu_hour
        cost = Cost(
            usd=gpu_s * rate.usd / 3600.0,
            basis=f"{gpu_s:.3f} {job.device} s x ${rate.usd}/{rate.unit} ({rate.source}, {rate.as_of})",
            estimated=True,
        )
        timings = Timings(queue_s=job.queue_s, load_s=job.load_s, inference_s=job.inference_s)
        model = checkpoint_name(self.variant, req.steps).removesuffix(".safetensors")
        return ctx.result(images, model=model, timings=timings, cost=cost)

    def _realtime_backend(self) -> RealtimeBackend:
        """Realtime sessions in process on the warm pipeline; a superseded job stops at its next step."""
        from lightning_client.realtime import GeneratorBackend

        return GeneratorBackend(self, transport="in-process", emulated=False)

    def _executor(self) -> concurrent.futures.ThreadPoolExecutor:
        with self._worker_lock:
            if self._worker is None:
                # One worker: one job on the device at a time, the rest wait in its queue.
                self._worker = concurrent.futures.ThreadPoolExecutor(
                    max_workers=1, thread_name_prefix="lightning-local"
                )
            return self._worker

    async def _submit(self, job: Callable[[], Any]) -> Any:
        return await asyncio.wrap_future(self._executor().submit(job))

    def _prepare(self, steps: int) -> float:
        """Worker thread: load on first use, then switch to `steps`; seconds spent."""
        start = time.perf_counter()
        if self._warm is None:
            self._warm = WarmPipeline.load(self._options, steps)
            self._pipeline_loads += 1
        self._warm.prepare(steps)
        return time.perf_counter() - start

    def _run(
        self,
        req: GenerationRequest,
        cancel: threading.Event,
        on_step: Callable[[int, int], None] | None,
        submitted: float,
    ) -> _JobOutput:
        """Worker thread: one request, start to PIL images."""
        queue_s = time.monotonic() - submitted
        if cancel.is_set():
            raise Cancelled
        load_s = self._prepare(req.steps)
        assert self._warm is not None
        start = time.perf_counter()
        images = self._warm.run(
            prompt=req.prompt,
            steps=req.steps,
            width=req.width,
            height=req.height,
            seed=req.seed,
            num_images=req.num_images,
            cancel=cancel,
            on_step=on_step,
        )
        return _JobOutput(
            images=images,
            queue_s=queue_s,
            load_s=load_s,
            inference_s=time.perf_counter() - start,
            device=str(self._warm.device),
        )

    def _close_all(self) -> None:
        with self._worker_lock:
            worker, self._worker = self._worker, None
        if worker is not None:
            worker.shutdown(wait=False, cancel_futures=True)
        self._warm = None

    async def _close(self) -> None:
        self._close_all()


def _encode(images: list[PILImage], fmt: str) -> list[GeneratedImage]:
    encoded: list[GeneratedImage] = []
    for image in images:
        buffer = io.BytesIO()
        image.convert("RGB").save(buffer, format=_PIL_FORMATS[fmt], **_ENCODE_OPTIONS[fmt])
        encoded.append(
            GeneratedImage(
                data=buffer.getvalue(), width=image.width, height=image.height, content_type=CONTENT_TYPES[fmt]
            )
        )
    return encoded
