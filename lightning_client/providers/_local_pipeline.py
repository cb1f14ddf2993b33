"""The warm diffusers pipeline behind `LocalGenerator`: loading, per-step checkpoint swaps, one inference call.

Everything here blocks and imports torch/diffusers; it runs only on the generator's
worker thread.
"""

from __future__ import annotations

import importlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from lightning_client.errors import InvalidRequestError, ProviderUnavailableError
from lightning_client.providers._local_files import (
    Variant,
    checkpoint_name,
    resolve_checkpoint,
    resolve_model_dir,
)

if TYPE_CHECKING:
    import torch
    from PIL.Image import Image as PILImage

__all__ = ["CompileMode", "LoadOptions", "WarmPipeline", "import_backend", "resolve_device", "resolve_dtype"]

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

    Text encoders, tokenizers and VAE are loaded once; a step change swaps the UNet
    weights (`load_state_dict`) or the fused LoRA (unfuse, unload, load, fuse) and
    rebuilds the trailing Euler scheduler.
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
        self._checkpoint_path = checkpoint_path
        self._fuse_qkv = fuse_qkv
        self._scheduler_config = dict(pipe.scheduler.config)
        self._lora_loaded = False

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
                # file. Built on the meta device so the base UNet's weights are never read.
                config = diffusers.UNet2DConditionModel.load_config(
                    base, subfolder="unet", revision=options.revision, **hub
                )
                with torch.device("meta"):
                    unet = diffusers.UNet2DConditionModel.from_config(config)
                unet.load_state_dict(_read_state_dict(first_file, device), strict=True, assign=True)
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
        unet = self.pipe.unet
        state = _read_state_dict(path, self.device)
        if not self._fuse_qkv:
            unet.load_state_dict(state, strict=True)
            return
        # Fused projections add to_qkv/to_kv weights the file does not have: load the rest,
        # then fuse again from the new q/k/v weights.
        result = unet.load_state_dict(state, strict=False)
        unfused = [k for k in result.missing_keys if ".to_qkv." not in k and ".to_kv." not in k]
        if unfused or result.unexpected_keys:
            raise ProviderUnavailableError(
                f"checkpoint {path} does not match the UNet (missing {unfused[:3]}, unexpected {result.unexpected_keys[:3]})",
                provider=_PROVIDER,
                retryable=False,
            )
        self.pipe.fuse_qkv_projections()

    def _swap_lora(self, path: Any, steps: int) -> None:
        if self._lora_loaded:
            self.pipe.unfuse_lora()
            self.pipe.unload_lora_weights()
            self._lora_loaded = False
        self.pipe.load_lora_weights(str(path), adapter_name=f"lightning_{steps}step")
        self.pipe.fuse_lora()
        self._lora_loaded = True

    def run(
        self,
        *,
        prompt: str,
        steps: int,
        width: int,
        height: int,
        seed: int,
        num_images: int,
        cancel: threading.Event,
        on_step: Callable[[int, int], None] | None,
    ) -> list[PILImage]:
        """One batched pipeline call; image i uses a CPU `torch.Generator` seeded with seed + i."""
        import torch

        if cancel.is_set():
            raise Cancelled
        # CPU generators: the same seed gives the same initial noise on every device.
        generators = [torch.Generator("cpu").manual_seed(seed + i) for i in range(num_images)]

        def step_end(pipe: Any, index: int, timestep: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
            if cancel.is_set():
                # Raising (rather than setting pipe._interrupt) also skips the VAE decode.
                raise Cancelled
            if on_step is not None:
                on_step(index + 1, steps)
            return kwargs

        try:
            with torch.inference_mode():
                output = self.pipe(
                    prompt=prompt,
                    num_inference_steps=steps,
                    guidance_scale=0.0,
                    width=width,
                    height=height,
                    num_images_per_prompt=num_images,
                    generator=generators,
                    callback_on_step_end=step_end,
                    output_type="pil",
                )
        except torch.cuda.OutOfMemoryError:
            raise ProviderUnavailableError(
                f"out of GPU memory for {num_images} image(s) of {width}x{height}; "
                "ask for fewer images or a smaller size (or free the device)",
                provider=_PROVIDER,
                retryable=True,
            ) from None
        images: list[PILImage] = output.images
        return images


def _read_state_dict(path: Any, device: torch.device) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    # Straight onto the GPU when there is one; CPU tensors otherwise (MPS copies from CPU).
    state: dict[str, torch.Tensor] = load_file(str(path), device=str(device) if device.type == "cuda" else "cpu")
    return state
