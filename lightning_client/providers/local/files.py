"""SDXL-Lightning checkpoint names per step count, and resolving hub ids or local folders to files."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from lightning_client.errors import InvalidRequestError, ProviderUnavailableError

__all__ = [
    "LORA_FILES",
    "UNET_FILES",
    "Variant",
    "checkpoint_name",
    "is_hub_id",
    "resolve_checkpoint",
    "resolve_model_dir",
]

Variant = Literal["unet", "lora"]

# ByteDance/SDXL-Lightning file names (model card, "Add safetensors" commit). The 1-step
# UNet is an x0 (sample-prediction) model; there is no 1-step LoRA (paper §3.7.3).
UNET_FILES: dict[int, str] = {
    1: "sdxl_lightning_1step_unet_x0.safetensors",
    2: "sdxl_lightning_2step_unet.safetensors",
    4: "sdxl_lightning_4step_unet.safetensors",
    8: "sdxl_lightning_8step_unet.safetensors",
}
LORA_FILES: dict[int, str] = {
    2: "sdxl_lightning_2step_lora.safetensors",
    4: "sdxl_lightning_4step_lora.safetensors",
    8: "sdxl_lightning_8step_lora.safetensors",
}

_PROVIDER = "local"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def checkpoint_name(variant: Variant, steps: int) -> str:
    """The Lightning file for `steps` with `variant`; says so when none exists."""
    files = UNET_FILES if variant == "unet" else LORA_FILES
    if steps not in files:
        if variant == "lora" and steps == 1:
            raise InvalidRequestError(
                "steps=1 is not available with variant='lora': SDXL-Lightning has no 1-step LoRA; "
                "use LocalGenerator(variant='unet') for 1 step, or steps 2, 4 or 8",
                field="steps",
                provider=_PROVIDER,
            )
        raise InvalidRequestError(
            f"steps={steps} has no SDXL-Lightning {variant} checkpoint (available: {sorted(files)})",
            field="steps",
            provider=_PROVIDER,
        )
    return files[steps]


def is_hub_id(ref: str) -> bool:
    """True for 'owner/name' strings that are not an existing local folder."""
    return bool(_HUB_ID.match(ref)) and not Path(ref).exists()


def resolve_model_dir(ref: str, what: str) -> str:
    """Return `ref` if it is an existing folder or a hub id; raise naming it otherwise."""
    if Path(ref).is_dir() or is_hub_id(ref):
        return ref
    raise ProviderUnavailableError(
        f"{what} directory not found: {ref} (give an existing local folder or a Hugging Face hub id 'owner/name')",
        provider=_PROVIDER,
        retryable=False,
    )


def resolve_checkpoint(
    repo: str,
    filename: str,
    *,
    cache_dir: str | None,
    local_files_only: bool,
    revision: str | None,
) -> Path:
    """Path of `filename` in a local folder, or in the hub cache (downloading it unless offline)."""
    if not is_hub_id(repo):
        path = Path(repo) / filename
        if not path.is_file():
            raise ProviderUnavailableError(
                f"SDXL-Lightning checkpoint not found: {path}", provider=_PROVIDER, retryable=False
            )
        return path
    from huggingface_hub import hf_hub_download

    try:
        return Path(
            hf_hub_download(repo, filename, cache_dir=cache_dir, local_files_only=local_files_only, revision=revision)
        )
    except Exception as exc:  # hub errors: missing repo/file, offline with an empty cache, network
        raise ProviderUnavailableError(
            f"SDXL-Lightning checkpoint {filename} could not be resolved from {repo}: {type(exc).__name__}: {exc} "
            "(offline? set HF_HUB_OFFLINE=0, or pre-download the file into the cache)",
            provider=_PROVIDER,
            retryable=False,
        ) from exc
