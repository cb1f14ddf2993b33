"""The warm diffusers pipeline behind `LocalGenerator`: loading, per-step checkpoint swaps, one inference call.

Everything here blocks and imports torch/diffusers; it runs only on the generator's
worker thread.
"""

from __future__ import annotations

import importlib
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from lightning_client.errors import InvalidRequestError, ProviderUnavailableError
from lightning_client.providers.local.files import (
    Variant,
    checkpoint_name,
    resolve_checkpoint,
    resolve_model_dir,
)

if TYPE_CHECKING:
    import torch
    from PIL.Image import Image as PILImage

__all__ = [
    "BatchItem",
    "Cancelled",
    "CompileMode",
    "LoadOptions",
    "OutOfDeviceMemory",
    "WarmPipeline",
    "import_backend",
    "resolve_device",
    "resolve_dtype",
]

#: False/None: eager. "regional" (or True): `torch.compile` of the UNet's repeated transformer
#: blocks (compiles in seconds). "full": the whole UNet and the VAE decoder with CUDA graphs
#: ("reduce-overhead"): slower to compile, removes the per-kernel launch cost.
CompileMode = Literal["regional", "full"] | bool | None

_PROVIDER = "local"
_INSTALL_HINT = "pip install lightning-client[local]"
_DTYPES = {
    "float16": "float16",
    "fp16": "float16",
    "half": "float16",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float32": "float32",
    "fp32": "float32",
}


class Cancelled(Exception):
    """Raised from the step callback to stop a job whose caller went away (no VAE decode follows)."""


class OutOfDeviceMemory(ProviderUnavailableError):
    """The device ran out of memory for this pipeline call (its cache was emptied).

    Not retryable on the same device: the same call would need the same memory. A router
    fails over to another provider; `LocalGenerator` reruns the jobs of a failed batch one by one.
    """

    default_retryable = False


@dataclass(frozen=True)
class BatchItem:
    """One request's share of a pipeline call: its prompt, seed, image count and cancel flag."""

    prompt: str
    seed: int
    num_images: int
    cancel: threading.Event
    on_step: Callable[[int, int], None] | None = None


def import_backend(*, lora: bool = False) -> None:
    """Import the `local` extra's packages, or raise saying how to install them."""
    names = ["torch", "diffusers", "transformers", "safetensors", "huggingface_hub"] + (["peft"] if lora else [])
    missing: list[str] = []
    for name in names:
        try:
            __import__(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise ProviderUnavailableError(
            f"the local backend needs {', '.join(missing)}: {_INSTALL_HINT}", provider=_PROVIDER, retryable=False
        )


def resolve_device(device: str) -> torch.device:
    """'auto' picks cuda > mps > cpu; an explicit device must exist on this machine."""
    import torch

    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, ValueError):
        raise ProviderUnavailableError(
            f"device={device!r} is not a torch device (use 'auto', 'cuda', 'cuda:N', 'mps' or 'cpu')",
            provider=_PROVIDER,
            retryable=False,
        ) from None
    available = True
    if resolved.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        available = count > (resolved.index or 0)
        detail = f"torch {torch.__version__} sees {count} CUDA device(s)"
    elif resolved.type == "mps":
        available = torch.backends.mps.is_available()
        detail = "torch.backends.mps.is_available() is False"
    else:
        detail = ""
    if not available:
        raise ProviderUnavailableError(
            f"device={device!r} is not available on this machine ({detail}); use device='auto' or 'cpu'",
            provider=_PROVIDER,
            retryable=False,
        )
    return resolved


def resolve_dtype(dtype: str | torch.dtype, device: torch.device, *, fp16_safe_vae: bool) -> torch.dtype:
    """'auto': bf16 on CUDA (no fp16 VAE upcast), fp16 with an fp16-safe VAE or on MPS, fp32 on CPU."""
    import torch

    if not isinstance(dtype, str):
        return dtype
    if dtype == "auto":
        if device.type == "cuda":
            if fp16_safe_vae or not torch.cuda.is_bf16_supported():
                return torch.float16
            return torch.bfloat16
        return torch.float16 if device.type == "mps" else torch.float32
    if dtype not in _DTYPES:
        raise InvalidRequestError(
            f"dtype={dtype!r} is not supported (use 'auto', {', '.join(repr(k) for k in _DTYPES)})", field="dtype"
        )
    resolved: torch.dtype = getattr(torch, _DTYPES[dtype])
    return resolved


@dataclass(frozen=True)
class LoadOptions:
    """Where the weights come from and how the pipeline is placed and sped up."""

    base_model: str
    lightning_repo: str
    variant: Variant
    device: str
    dtype: str | Any
    vae: str | None
    cache_dir: str | None
    local_files_only: bool
    revision: str | None
    base_variant: str | None
    channels_last: bool
    compile: CompileMode
    fuse_qkv: bool


def _diffusers() -> Any:
    """The diffusers module, typed loosely (its classes are only partly annotated)."""
    return importlib.import_module("diffusers")


def _dtype_kwarg(value: torch.dtype) -> dict[str, Any]:
    """`dtype=` from diffusers 0.40 on (`torch_dtype=` is deprecated there), `torch_dtype=` before."""
    diffusers = _diffusers()
    major, minor = (int(p) for p in diffusers.__version__.split(".")[:2])
    return {"dtype": value} if (major, minor) >= (0, 40) else {"torch_dtype": value}


class WarmPipeline:
    """One loaded `StableDiffusionXLPipeline` that switches Lightning checkpoints per step count in place.

    Text encoders, tokenizers and VAE are loaded once; a step change copies the new UNet
    weights into the existing parameters (read on the CPU, one tensor at a time) or swaps
    the fused LoRA (restoring the pristine base weights first), and rebuilds the trailing
    Euler scheduler.

    On a CPU device in fp32 every call is batch-invariant: prompts are encoded one by one, the
    VAE decodes image by image, and the UNet's convolutions and linear layers over (batch,
    features) inputs run sample by sample (see `_batch_invariant_layers`), so an image's
    bytes do not depend on what else shared its pipeline call.
    """

    def __init__(
        self,
        pipe: Any,
        *,
        variant: Variant,
        checkpoint_path: Callable[[int], Any] | None,
        fuse_qkv: bool = False,
    ) -> None:
        self.pipe = pipe
        self.variant: Variant = variant
        self.steps: int | None = None
        self.checkpoint_loads = 0
        #: Pipeline calls made (a batch is one).
        self.calls = 0
        self._checkpoint_path = checkpoint_path
        self._fuse_qkv = fuse_qkv
        self._scheduler_config = dict(pipe.scheduler.config)
        self._lora_loaded = False
        #: Base weights the LoRA changes, as they were before any fuse (CPU copies).
        self._pristine: dict[str, torch.Tensor] = {}
        import torch

        # Half precision on a CPU is not batch-invariant anyway.
        self.batch_invariant = self.device.type == "cpu" and self.dtype == torch.float32
        if self.batch_invariant:
            pipe.vae.enable_slicing()
            _batch_invariant_layers(pipe.unet)

    @property
    def device(self) -> torch.device:
        device: torch.device = self.pipe.unet.device
        return device

    @property
    def dtype(self) -> torch.dtype:
        dtype: torch.dtype = self.pipe.unet.dtype
        return dtype

    @classmethod
    def load(cls, options: LoadOptions, first_steps: int) -> WarmPipeline:
        """Build the pipeline from `options` with the checkpoint for `first_steps` in place."""
        import_backend(lora=options.variant == "lora")
        import torch

        diffusers = _diffusers()
        device = resolve_device(options.device)
        dtype = resolve_dtype(options.dtype, device, fp16_safe_vae=options.vae is not None)
        base = resolve_model_dir(options.base_model, "base model")
        hub: dict[str, Any] = {"cache_dir": options.cache_dir, "local_files_only": options.local_files_only}

        def checkpoint(steps: int) -> Any:
            return resolve_checkpoint(
                options.lightning_repo,
                checkpoint_name(options.variant, steps),
                cache_dir=options.cache_dir,
                local_files_only=options.local_files_only,
                revision=options.revision,
            )

        first_file = checkpoint(first_steps)  # fail on a missing checkpoint before loading anything large
        components: dict[str, Any] = {}
        try:
            if options.vae is not None:
                vae_ref = resolve_model_dir(options.vae, "VAE")
                components["vae"] = diffusers.AutoencoderKL.from_pretrained(vae_ref, **_dtype_kwarg(dtype), **hub)
            if options.variant == "unet":
                # The model card's recipe: a UNet from the base config, weights from the Lightning
                # file. Built on the meta device so the base UNet's weights are never read; the
                # file is read on the CPU and converted while moving, so the device holds one UNet.
                config = diffusers.UNet2DConditionModel.load_config(
                    base, subfolder="unet", revision=options.revision, **hub
                )
                with torch.device("meta"):
                    unet = diffusers.UNet2DConditionModel.from_config(config)
                unet.load_state_dict(_read_cpu_state_dict(first_file), strict=True, assign=True)
                components["unet"] = unet.to(device=device, dtype=dtype)
            pipe = diffusers.StableDiffusionXLPipeline.from_pretrained(
                base,
                variant=options.base_variant,
                revision=options.revision,
                add_watermarker=False,
                **components,
                **_dtype_kwarg(dtype),
                **hub,
            )
        except (OSError, ValueError) as exc:  # diffusers/hub: missing or unreadable files, offline, bad repo
            raise ProviderUnavailableError(
                f"could not load the base model {options.base_model}: {type(exc).__name__}: {exc}",
                provider=_PROVIDER,
                retryable=False,
            ) from exc
        pipe.to(device)
        pipe.set_progress_bar_config(disable=True)
        warm = cls(pipe, variant=options.variant, checkpoint_path=checkpoint, fuse_qkv=options.fuse_qkv)
        if options.variant == "unet":
            warm.steps, warm.checkpoint_loads = first_steps, 1
            warm._set_scheduler(first_steps)
        warm.apply_speedups(channels_last=options.channels_last, compile=options.compile)
        return warm

    def apply_speedups(self, *, channels_last: bool, compile: CompileMode) -> None:
        """channels_last memory format, fused QKV projections, `torch.compile` (see `CompileMode`)."""
        import torch

        if compile not in (None, False, True, "regional", "full"):
            raise InvalidRequestError(
                f"compile={compile!r} is invalid; allowed: False, True/'regional', 'full'", field="compile"
            )
        if channels_last:
            self.pipe.unet.to(memory_format=torch.channels_last)
            self.pipe.vae.to(memory_format=torch.channels_last)
        if self._fuse_qkv:
            self.pipe.fuse_qkv_projections()
        # Modules are compiled in place (`Module.compile`), so state-dict keys, and the weight
        # swaps that copy into the same tensors, are unchanged.
        if compile in (True, "regional"):
            self.pipe.unet.compile_repeated_blocks(fullgraph=True)
        elif compile == "full":
            self.pipe.unet.compile(fullgraph=True, mode="reduce-overhead")
            self.pipe.vae.decoder.compile(mode="reduce-overhead")

    def prepare(self, steps: int) -> float:
        """Put the checkpoint and scheduler for `steps` in place; returns the seconds it took (0 if already)."""
        if self.steps == steps:
            return 0.0
        start = time.perf_counter()
        if self._checkpoint_path is not None:
            path = self._checkpoint_path(steps)
            if self.variant == "unet":
                self._swap_unet(path)
            else:
                self._swap_lora(path, steps)
            self.checkpoint_loads += 1
        self._set_scheduler(steps)
        self.steps = steps
        return time.perf_counter() - start

    def _set_scheduler(self, steps: int) -> None:
        # Trailing spacing starts sampling at t=999 (model card). The 1-step file is an x0
        # model, so it needs sample prediction; the others keep the base's (epsilon).
        prediction = "sample" if steps == 1 and self.variant == "unet" else self._scheduler_config["prediction_type"]
        self.pipe.scheduler = _diffusers().EulerDiscreteScheduler.from_config(
            self._scheduler_config, timestep_spacing="trailing", prediction_type=prediction
        )

    def _swap_unet(self, path: Any) -> None:
        """Copy the file's tensors into the UNet's parameters in place, one at a time from the CPU.

        The device never holds a second UNet (a whole state dict on the GPU would double
        the UNet's memory at the peak), and compiled graphs keep their tensors.
        """
        import torch
        from safetensors import safe_open

        unet = self.pipe.unet
        targets = dict(unet.state_dict(keep_vars=True))
        with safe_open(str(path), framework="pt", device="cpu") as file:
            keys = set(file.keys())
            fused = {k for k in targets if ".to_qkv." in k or ".to_kv." in k} if self._fuse_qkv else set()
            missing = sorted(set(targets) - keys - fused)
            unexpected = sorted(keys - set(targets))
            if missing or unexpected:
                raise ProviderUnavailableError(
                    f"checkpoint {path} does not match the UNet (missing {missing[:3]}, unexpected {unexpected[:3]})",
                    provider=_PROVIDER,
                    retryable=False,
                )
            with torch.no_grad():
                for key in keys:
                    targets[key].copy_(file.get_tensor(key))
        if self._fuse_qkv:
            # Fused projections hold to_qkv/to_kv weights the file does not have: fuse again
            # from the new q/k/v weights.
            self.pipe.fuse_qkv_projections()

    def _swap_lora(self, path: Any, steps: int) -> None:
        """Fuse the `steps` LoRA into the pristine base weights.

        Unfusing subtracts the LoRA again in the weights' precision, which in fp16/bf16 leaves
        a rounding residue that grows with every switch; restoring the saved base weights
        does not.
        """
        if self._lora_loaded:
            self.pipe.unload_lora_weights()  # removes the LoRA layers; the fused weights stay
            self._lora_loaded = False
            self._restore_pristine()
        self.pipe.load_lora_weights(str(path), adapter_name=f"lightning_{steps}step")
        self._save_pristine()
        self.pipe.fuse_lora()
        self._lora_loaded = True
        if self.batch_invariant:
            _batch_invariant_layers(self.pipe.unet)

    def _save_pristine(self) -> None:
        """Keep a CPU copy of every base weight a LoRA layer wraps (once per weight)."""
        from peft.tuners.tuners_utils import BaseTunerLayer

        for name, module in self.pipe.unet.named_modules():
            if isinstance(module, BaseTunerLayer):
                key = f"{name}.weight"
                if key not in self._pristine:
                    base: Any = module.get_base_layer()
                    self._pristine[key] = base.weight.detach().to("cpu", copy=True)

    def _restore_pristine(self) -> None:
        import torch

        params = dict(self.pipe.unet.named_parameters())
        with torch.no_grad():
            for key, saved in self._pristine.items():
                params[key].copy_(saved)

    def run_batch(
        self, items: Sequence[BatchItem], *, steps: int, width: int, height: int
    ) -> list[list[PILImage] | None]:
        """One pipeline call for `items`; image j of an item uses a CPU `torch.Generator` seeded with seed + j.

        Returns each item's images, or None for an item cancelled during the call: a
        cancelled item's rows leave the batch at the next step, the others go on. Raises
        `Cancelled` when every item was cancelled (no VAE decode follows) and
        `OutOfDeviceMemory` (device cache emptied) when the device ran out of memory.
        """
        import torch

        alive = [i for i, item in enumerate(items) if not item.cancel.is_set()]
        if not alive:
            raise Cancelled
        # CPU generators: the same seed gives the same initial noise on every device.
        generators = [
            torch.Generator("cpu").manual_seed(items[i].seed + j) for i in alive for j in range(items[i].num_images)
        ]

        def step_end(pipe: Any, index: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
            nonlocal alive
            still = [i for i in alive if not items[i].cancel.is_set()]
            if not still:
                # Raising (rather than setting pipe._interrupt) also skips the VAE decode.
                raise Cancelled
            if len(still) < len(alive):
                rows: list[int] = []
                start = 0
                for i in alive:
                    if i in still:
                        rows.extend(range(start, start + items[i].num_images))
                    start += items[i].num_images
                keep = torch.tensor(rows, device=tensors["latents"].device)
                tensors = {name: value.index_select(0, keep.to(value.device)) for name, value in tensors.items()}
                alive = still
            for i in alive:
                callback = items[i].on_step
                if callback is not None:
                    callback(index + 1, steps)
            return tensors

        try:
            with torch.inference_mode():
                embeds, pooled = self._encode_prompts([items[i] for i in alive])
                self.calls += 1
                output = self.pipe(
                    prompt_embeds=embeds,
                    pooled_prompt_embeds=pooled,
                    num_inference_steps=steps,
                    guidance_scale=0.0,
                    width=width,
                    height=height,
                    generator=generators,
                    callback_on_step_end=step_end,
                    callback_on_step_end_tensor_inputs=["latents", "prompt_embeds", "add_text_embeds", "add_time_ids"],
                    output_type="pil",
                )
        except torch.OutOfMemoryError:
            _empty_device_cache(self.device)
            wanted = sum(items[i].num_images for i in alive)
            raise OutOfDeviceMemory(
                f"out of {self.device.type} memory for {wanted} image(s) of {width}x{height}; "
                "ask for fewer images or a smaller size, or free the device",
                provider=_PROVIDER,
            ) from None
        images: list[PILImage] = output.images
        results: list[list[PILImage] | None] = [None] * len(items)
        start = 0
        for i in alive:
            results[i] = images[start : start + items[i].num_images]
            start += items[i].num_images
        return results

    def _encode_prompts(self, items: Sequence[BatchItem]) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompt embeddings for every image row, each distinct prompt encoded alone (batch 1)."""
        import torch

        encoded: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        for item in items:
            if item.prompt not in encoded:
                embeds, _, pooled, _ = self.pipe.encode_prompt(
                    item.prompt, device=self.device, num_images_per_prompt=1, do_classifier_free_guidance=False
                )
                encoded[item.prompt] = (embeds, pooled)
        rows = [encoded[item.prompt] for item in items for _ in range(item.num_images)]
        return torch.cat([r[0] for r in rows]), torch.cat([r[1] for r in rows])


def _batch_invariant_layers(module: Any) -> None:
    """Make the layers of `module` whose kernels depend on the batch size compute sample by sample.

    BLAS takes another path for one row (gemv) than for several (gemm), and oneDNN picks
    convolution kernels by batch size; either changes the last bits. So linear layers over
    (batch, features) inputs (a UNet's time and text embeddings) run row by row and
    convolutions image by image, each exactly as in a call of one. Idempotent.
    """
    import torch

    def rowwise(self: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2 and x.shape[0] > 1:
            rows = [x[i : i + 1] for i in range(x.shape[0])]
            return torch.cat([torch.nn.functional.linear(row, self.weight, self.bias) for row in rows])
        return torch.nn.functional.linear(x, self.weight, self.bias)

    def per_sample(self: torch.nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4 and x.shape[0] > 1:
            return torch.cat([self._conv_forward(x[i : i + 1], self.weight, self.bias) for i in range(x.shape[0])])
        out: torch.Tensor = self._conv_forward(x, self.weight, self.bias)
        return out

    for layer in module.modules():
        if "forward" in vars(layer):
            continue
        if type(layer) is torch.nn.Linear:
            layer.forward = rowwise.__get__(layer)  # type: ignore[method-assign]
        elif type(layer) is torch.nn.Conv2d:
            layer.forward = per_sample.__get__(layer)  # type: ignore[method-assign]


def _empty_device_cache(device: torch.device) -> None:
    """Give cached blocks back after an out-of-memory error, so the next call starts clean."""
    import torch

    torch.cuda.empty_cache()  # a no-op while CUDA is not initialised
    if device.type == "mps":
        torch.mps.empty_cache()


def _read_cpu_state_dict(path: Any) -> dict[str, torch.Tensor]:
    """A checkpoint's tensors in CPU memory (moved to the device by the caller)."""
    from safetensors.torch import load_file

    state: dict[str, torch.Tensor] = load_file(str(path), device="cpu")
    return state
