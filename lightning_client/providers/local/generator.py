"""`LocalGenerator`: SDXL-Lightning on a local diffusers pipeline (GPU, MPS or CPU).

The right checkpoint and scheduler per step count (model card): the 1/2/4/8-step UNet
files or the 2/4/8-step LoRAs, `EulerDiscreteScheduler` with trailing timesteps,
sample prediction for the 1-step x0 UNet, guidance 0. One warm pipeline per generator;
one worker thread serves the queue, so the event loop stays free: concurrent requests
with the same step count and size share a pipeline call (dynamic batching), and the
queue prefers the step count already loaded (see `_local_queue`).

torch and diffusers are imported when the pipeline first loads, never on import.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import io
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lightning_client.errors import InvalidRequestError, ProviderUnavailableError
from lightning_client.generator import AttemptContext, BaseGenerator, Capabilities, ProviderOption, as_request
from lightning_client.images import CONTENT_TYPES
from lightning_client.pricing import DEFAULT_PRICES, PriceTable
from lightning_client.providers.local.files import (
    LORA_FILES,
    UNET_FILES,
    Variant,
    checkpoint_name,
    is_hub_id,
    resolve_checkpoint,
)
from lightning_client.providers.local.pipeline import (
    BatchItem,
    Cancelled,
    CompileMode,
    LoadOptions,
    OutOfDeviceMemory,
    WarmPipeline,
)
from lightning_client.providers.local.queue import Job, note_overtaken, pick_batch
from lightning_client.request import GenerationRequest
from lightning_client.result import Cost, GeneratedImage, GenerationResult, Timings

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

    from lightning_client.realtime_backend import RealtimeBackend

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


#: Defaults of dynamic batching: up to 4 images per pipeline call (a GPU serves 4 images of
#: 1024x1024 in far less than 4 times one's time), gathered for at most 5 ms, which is all a
#: lone request on an idle generator pays.
DEFAULT_MAX_BATCH_SIZE = 4
DEFAULT_BATCH_WAIT_S = 0.005
#: Weight of the newest job in the running mean of seconds per job behind `expected_wait_s`.
_EWMA_WEIGHT = 0.3


@dataclass
class _JobOutput:
    images: list[PILImage]
    queue_s: float
    load_s: float
    inference_s: float
    batch_images: int
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
        prices: price table; cost = inference seconds x `prices.local_gpu_hour` on CUDA,
            x `prices.local_cpu_hour` on other devices. Model and checkpoint loads are not billed.
        progress: called on the event loop with (step, total) after each denoising step of
            every job (settable later through the `progress` attribute).
        max_batch_size: most images in one pipeline call; concurrent requests with the same
            step count and size are served together up to it (1 turns batching off).
        batch_wait_s: how long the worker waits for more requests to fill a batch before
            starting one that is not full (0 to 1 s).
        name: what routers, ledgers and reports call this generator (default "local").

    Image i of a request uses a CPU `torch.Generator` seeded with `seed + i`, so a seed gives
    the same pixels on every run and device type, batched or not: on a CPU the pipeline call
    is batch-invariant, so the bytes equal those of the request served alone (on a GPU they
    may differ in the last bits).

    Cancelling the task awaiting a request (or its deadline) is the per-job cancel: a queued
    job leaves the queue, a running one leaves its batch at the next denoising step while
    the other requests of the batch go on.
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

    folder_flag = "--local-model"
    folder_help = "a folder with base/ (a diffusers SDXL pipeline) and lightning/ (the Lightning checkpoints)"

    @classmethod
    def folder_options(cls, folder: Path) -> dict[str, Any]:
        return {"base_model": str(folder / "base"), "lightning_repo": str(folder / "lightning")}

    def prior_cost_per_image(self, prices: PriceTable) -> float | None:
        rate = self.prices.local_cpu_hour if self._options.device == "cpu" else self.prices.local_gpu_hour
        return rate.usd / 3600 * self.GPU_SECONDS_PRIOR_S

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
        max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
        batch_wait_s: float = DEFAULT_BATCH_WAIT_S,
        name: str | None = None,
    ) -> None:
        self.name = self._check_name(name)
        if variant not in ("unet", "lora"):
            raise InvalidRequestError(f"variant={variant!r} is invalid; allowed: 'unet' or 'lora'", field="variant")
        if fuse_qkv and variant == "lora":
            raise InvalidRequestError(
                "fuse_qkv=True needs variant='unet' (LoRA swaps target to_q/to_k/to_v)", field="fuse_qkv"
            )
        if isinstance(max_batch_size, bool) or not isinstance(max_batch_size, int) or max_batch_size < 1:
            raise InvalidRequestError(
                f"max_batch_size={max_batch_size!r} is invalid; allowed: an integer >= 1", field="max_batch_size"
            )
        if isinstance(batch_wait_s, bool) or not isinstance(batch_wait_s, int | float) or not 0 <= batch_wait_s <= 1:
            raise InvalidRequestError(
                f"batch_wait_s={batch_wait_s!r} is invalid; allowed: seconds from 0 to 1", field="batch_wait_s"
            )
        if base_variant == "auto":
            half = dtype in ("auto", "float16", "fp16", "half", "bfloat16", "bf16") or "16" in str(dtype)
            base_variant = "fp16" if is_hub_id(base_model) and half else None
        self.model = lightning_repo
        self.variant: Variant = variant
        self.prices = prices
        self.progress: ProgressCallback | None = progress
        self.max_batch_size = max_batch_size
        self.batch_wait_s = float(batch_wait_s)
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
        self._closed_calls = 0
        self._job_s: float | None = None
        # The queue, the batch on the device and the worker thread, guarded by one condition.
        self._cond = threading.Condition()
        self._queue: list[Job] = []
        self._running: list[Job] = []
        self._worker: threading.Thread | None = None
        self._closing = False

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
        max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
        batch_wait_s: float = DEFAULT_BATCH_WAIT_S,
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
            max_batch_size=max_batch_size,
            batch_wait_s=batch_wait_s,
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
    def pipeline_calls(self) -> int:
        """How many pipeline calls ran (a batch of concurrent requests is one call)."""
        return self._closed_calls + (0 if self._warm is None else self._warm.calls)

    @property
    def checkpoint_loads(self) -> int:
        """How many Lightning checkpoint files were loaded into the warm pipeline."""
        return 0 if self._warm is None else self._warm.checkpoint_loads

    def expected_wait_s(self) -> float | None:
        """Seconds a request sent now would wait before its own job runs: jobs queued or running x seconds per job.

        Seconds per job is a running mean of observed pipeline calls (batch time over its jobs,
        loads excluded). None (unknown) until a job has been observed, and while no
        pipeline is loaded (the next request pays the load). Never blocks.
        """
        per_job = self._job_s
        if per_job is None or self._warm is None:
            return None
        with self._cond:
            # A running job whose result is already handed over no longer holds anyone up.
            depth = len(self._queue) + sum(not job.future.done() for job in self._running)
        return depth * per_job

    async def agenerate(self, request: GenerationRequest | str | None = None, **fields: Any) -> GenerationResult:
        req = as_request(request, fields)
        checkpoint_name(self.variant, req.steps)  # says plainly that there is no 1-step LoRA
        return await super().agenerate(req)

    async def aload(self, steps: int = 4) -> float:
        """Load the pipeline (and the `steps` checkpoint) now; returns the seconds it took (0 when warm)."""
        checkpoint_name(self.variant, steps)
        seconds: float = await self._await(Job(steps=steps))
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

        def on_step(step: int, total: int) -> None:
            progress = self.progress
            if progress is not None:
                loop.call_soon_threadsafe(progress, step, total)

        job: _JobOutput = await self._await(Job(steps=req.steps, request=req, on_step=on_step))
        images = await asyncio.to_thread(_encode, job.images, req.output_format)
        timings = Timings(queue_s=job.queue_s, load_s=job.load_s, inference_s=job.inference_s)
        model = checkpoint_name(self.variant, req.steps).removesuffix(".safetensors")
        return ctx.result(images, model=model, timings=timings, cost=self._cost(job, req.num_images))

    def _cost(self, job: _JobOutput, images: int) -> Cost:
        """This request's share (by images) of its pipeline call's device seconds; loads are not billed."""
        rate = self.prices.local_gpu_hour if job.device.startswith("cuda") else self.prices.local_cpu_hour
        seconds = job.inference_s * images / job.batch_images
        share = "" if images == job.batch_images else f" ({images} of {job.batch_images} images of one call)"
        return Cost(
            usd=seconds * rate.usd / 3600.0,
            basis=f"{seconds:.3f} {job.device} s{share} x ${rate.usd}/{rate.unit} ({rate.source}, {rate.as_of}); "
            "model load not billed",
            estimated=True,
        )

    def _realtime_backend(self) -> RealtimeBackend:
        """Realtime sessions in process on the warm pipeline; a superseded job stops at its next step."""
        from lightning_client.realtime_backend import GeneratorBackend

        return GeneratorBackend(self, transport="in-process", emulated=False)

    # ------------------------------------------------------------------ the queue and its worker

    async def _await(self, job: Job) -> Any:
        """Queue `job` and wait for it; cancelling the caller takes it out of the queue or its batch."""
        self._enqueue(job)
        try:
            return await asyncio.wrap_future(job.future)
        except asyncio.CancelledError:
            job.cancel.set()  # a running job leaves its batch after the current step
            with self._cond:
                if job in self._queue:
                    self._queue.remove(job)
            raise
        except Cancelled:  # its cancel flag was set without its caller being cancelled
            raise ProviderUnavailableError("the local job was cancelled", provider=self.name) from None

    def _enqueue(self, job: Job) -> None:
        with self._cond:
            if self._closing:
                raise ProviderUnavailableError("the local generator is closing", provider=self.name)
            self._queue.append(job)
            if self._worker is None:
                self._worker = threading.Thread(target=self._serve, name="lightning-local", daemon=True)
                self._worker.start()
            self._cond.notify_all()

    def _serve(self) -> None:
        """Worker thread: take the next batch, run it, until closed with an empty queue."""
        while True:
            with self._cond:
                batch = self._next_batch()
                if not batch:
                    return
                self._running = batch
            try:
                self._execute(batch)
            finally:
                with self._cond:
                    self._running = []
                    self._cond.notify_all()

    def _next_batch(self) -> list[Job]:
        """Under the lock: wait for work, then choose and dequeue a batch (empty: closed)."""
        while not self._queue:
            if self._closing:
                return []
            self._cond.wait()
        loaded = None if self._warm is None else self._warm.steps
        batch = pick_batch(self._queue, loaded, self.max_batch_size)
        if batch[0].request is not None and self.batch_wait_s > 0:
            deadline = time.monotonic() + self.batch_wait_s
            while sum(j.images for j in batch) < self.max_batch_size and not self._closing:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
                if not self._queue:  # every candidate was cancelled meanwhile
                    return self._next_batch()
                batch = pick_batch(self._queue, loaded, self.max_batch_size)
        note_overtaken(self._queue, batch)
        for job in batch:
            self._queue.remove(job)
        return batch

    def _execute(self, batch: Sequence[Job]) -> None:
        """Worker thread: run one batch (or a load) and resolve its jobs' futures."""
        started = time.monotonic()
        try:
            load_s = self._prepare(batch[0].steps)
        except Exception as exc:  # noqa: BLE001 - every error goes to the waiting callers
            _fail(batch, exc)
            return
        if batch[0].request is None:
            _resolve(batch[0], load_s)
            return
        warm = self._warm
        assert warm is not None
        requests = [job.request for job in batch if job.request is not None]
        items = [
            BatchItem(prompt=r.prompt, seed=r.seed, num_images=r.num_images, cancel=job.cancel, on_step=job.on_step)
            for job, r in zip(batch, requests, strict=True)
        ]
        start = time.perf_counter()
        try:
            outputs = warm.run_batch(items, steps=batch[0].steps, width=requests[0].width, height=requests[0].height)
        except OutOfDeviceMemory as exc:
            if len(batch) == 1:
                _fail(batch, exc)
                return
            for job in batch:  # smaller calls may fit: each job alone
                self._execute([job])
            return
        except Exception as exc:  # noqa: BLE001 - every error goes to the waiting callers
            _fail(batch, exc)
            return
        inference_s = time.perf_counter() - start
        per_job = inference_s / len(batch)
        self._job_s = per_job if self._job_s is None else self._job_s + _EWMA_WEIGHT * (per_job - self._job_s)
        total = sum(item.num_images for item, out in zip(items, outputs, strict=True) if out is not None)
        for job, out in zip(batch, outputs, strict=True):
            if out is None:
                _fail([job], Cancelled())
                continue
            _resolve(
                job,
                _JobOutput(
                    images=out,
                    queue_s=started - job.submitted,
                    load_s=load_s,
                    inference_s=inference_s,
                    batch_images=total,
                    device=str(warm.device),
                ),
            )

    def _prepare(self, steps: int) -> float:
        """Worker thread: load on first use, then switch to `steps`; seconds spent."""
        start = time.perf_counter()
        if self._warm is None:
            self._warm = WarmPipeline.load(self._options, steps)
            self._pipeline_loads += 1
        self._warm.prepare(steps)
        return time.perf_counter() - start

    # ------------------------------------------------------------------ closing

    def _stop(self) -> threading.Thread | None:
        """Stop taking jobs, fail the queued ones; returns the worker to wait for."""
        with self._cond:
            self._closing = True
            queued, self._queue = self._queue, []
            worker = self._worker
            self._cond.notify_all()
        _fail(
            queued,
            ProviderUnavailableError("the local generator was closed before this job started", provider=self.name),
        )
        return worker

    def _release(self) -> None:
        with self._cond:
            if self._warm is not None:
                self._closed_calls += self._warm.calls
            self._warm = None
            self._worker = None
            self._closing = False

    def _close_all(self) -> None:
        """Let the running pipeline call finish (cancelled callers stop it at the next step), then release."""
        worker = self._stop()
        if worker is not None and worker is not threading.current_thread():
            worker.join()
        self._release()

    async def _close(self) -> None:
        worker = self._stop()
        if worker is not None:
            await asyncio.to_thread(worker.join)
        self._release()


def _resolve(job: Job, value: Any) -> None:
    if not job.future.done():
        try:
            job.future.set_result(value)
        except concurrent.futures.InvalidStateError:  # the caller cancelled it meanwhile
            pass


def _fail(jobs: Sequence[Job], exc: BaseException) -> None:
    for job in jobs:
        if not job.future.done():
            try:
                job.future.set_exception(exc)
            except concurrent.futures.InvalidStateError:
                pass


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
