"""Random-weight SDXL pipelines built offline: a tiny one on disk for tests, full-size in memory for benchmarks.

`build_tiny_lightning(path)` writes, without any network and in seconds on a CPU:

- ``path/"base"``: a tiny SDXL pipeline in diffusers layout (``save_pretrained``), with
  CLIP tokenizers built from a hand-written vocabulary (``model_max_length=77``);
- ``path/"lightning"``: every SDXL-Lightning checkpoint file under its real name and in
  its real format: UNet state dicts in diffusers key layout (fp16) for 1/2/4/8 steps,
  each from a different seed, and kohya-format LoRAs (``lora_unet_...`` keys with
  ``.alpha``, non-zero up weights) for 2/4/8 steps.

The architecture configs (tiny, and the full-size SDXL values) ship as JSON beside this
module, so a full-size random pipeline has exactly the real model's compute.
"""

from __future__ import annotations

import importlib
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from lightning_client.providers.local.files import LORA_FILES, UNET_FILES

if TYPE_CHECKING:
    import torch

__all__ = [
    "CONFIG_DIR",
    "ConfigSize",
    "TinyLightning",
    "build_offline_clip_tokenizer",
    "build_random_sdxl_pipeline",
    "build_tiny_lightning",
    "load_sdxl_config",
]

ConfigSize = Literal["tiny", "full"]

#: ``tiny/`` and ``full/`` folders holding unet, vae, text_encoder, text_encoder_2 and scheduler JSON.
CONFIG_DIR = Path(__file__).with_name("sdxl_configs")

_SPECIALS = ("<|startoftext|>", "<|endoftext|>")
_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789!,.-'"
_LORA_RANK = 4
_LORA_ALPHA = 2.0
# Layers the real Lightning LoRA leaves out (paper §3.6: input/output convolutions and the
# shared time-embedding linears); everything else that is a Linear or Conv2d gets a LoRA.
_LORA_EXCLUDED = ("conv_in", "conv_out", "time_embedding.", "add_embedding.")


@dataclass(frozen=True)
class TinyLightning:
    """Where `build_tiny_lightning` wrote the base pipeline and the Lightning checkpoints."""

    root: Path
    base: Path
    lightning: Path


def load_sdxl_config(size: ConfigSize, component: str) -> dict[str, Any]:
    """One shipped architecture config ("unet", "vae", "text_encoder", "text_encoder_2", "scheduler")."""
    data: dict[str, Any] = json.loads((CONFIG_DIR / size / f"{component}.json").read_text())
    return data


def build_offline_clip_tokenizer(pad_token: str = "<|endoftext|>") -> Any:
    """A CLIPTokenizer from a hand-written character vocabulary, with ``model_max_length=77``.

    The end-of-text token has the highest id, as in real CLIP, so the text encoders'
    argmax pooling finds it. SDXL's second tokenizer pads with "!" (pass ``pad_token="!"``).
    """
    from transformers import CLIPTokenizer

    vocab: dict[str, int] = {}
    for char in _CHARS:
        vocab.setdefault(char, len(vocab))
        vocab.setdefault(char + "</w>", len(vocab))
    for special in _SPECIALS:
        vocab[special] = len(vocab)
    with tempfile.TemporaryDirectory() as tmp:
        vocab_file, merges_file = Path(tmp, "vocab.json"), Path(tmp, "merges.txt")
        vocab_file.write_text(json.dumps(vocab))
        merges_file.write_text("#version: 0.2\n")  # the reader skips the first line
        # Positional file paths work with both transformers 4 (vocab_file, merges_file) and 5 (vocab, merges).
        return CLIPTokenizer(str(vocab_file), str(merges_file), pad_token=pad_token, model_max_length=77)


def _diffusers() -> Any:
    """The diffusers module, typed loosely (its classes are only partly annotated)."""
    return importlib.import_module("diffusers")


def _unet(size: ConfigSize, seed: int, device: str | torch.device = "cpu") -> Any:
    import torch

    torch.manual_seed(seed)
    with torch.device(device):
        return _diffusers().UNet2DConditionModel.from_config(load_sdxl_config(size, "unet"))


def build_random_sdxl_pipeline(
    size: ConfigSize = "tiny", *, device: str = "cpu", dtype: torch.dtype | None = None, seed: int = 0
) -> Any:
    """A `StableDiffusionXLPipeline` with random weights from the shipped configs, built in memory.

    ``size="full"`` has the real SDXL architecture (about 2.57 B UNet parameters): build it
    directly on the GPU (``device="cuda"``), where initialisation takes seconds.
    """
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    diffusers = _diffusers()
    unet = _unet(size, seed, device)
    torch.manual_seed(seed + 1)
    with torch.device(device):
        vae = diffusers.AutoencoderKL.from_config(load_sdxl_config(size, "vae"))
        text_encoder = CLIPTextModel(CLIPTextConfig(**load_sdxl_config(size, "text_encoder")))
        text_encoder_2 = CLIPTextModelWithProjection(CLIPTextConfig(**load_sdxl_config(size, "text_encoder_2")))
    pipe = diffusers.StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=build_offline_clip_tokenizer(),
        tokenizer_2=build_offline_clip_tokenizer(pad_token="!"),
        unet=unet,
        scheduler=diffusers.EulerDiscreteScheduler.from_config(load_sdxl_config(size, "scheduler")),
        add_watermarker=False,
    )
    if dtype is not None:
        pipe.to(dtype=dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _kohya_lora(unet: Any, seed: int) -> dict[str, torch.Tensor]:
    """A kohya-format LoRA over every Linear/Conv2d of `unet` but the excluded ones (fp16)."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    tensors: dict[str, torch.Tensor] = {}
    for name, module in unet.named_modules():
        if not isinstance(module, torch.nn.Linear | torch.nn.Conv2d) or name.startswith(_LORA_EXCLUDED):
            continue
        key = "lora_unet_" + name.replace(".", "_")
        if isinstance(module, torch.nn.Linear):
            down_shape: tuple[int, ...] = (_LORA_RANK, module.in_features)
            up_shape: tuple[int, ...] = (module.out_features, _LORA_RANK)
        else:  # kohya conv LoRA: a k x k down-convolution and a 1 x 1 up-convolution
            down_shape = (_LORA_RANK, module.in_channels, *module.kernel_size)
            up_shape = (module.out_channels, _LORA_RANK, 1, 1)
        tensors[f"{key}.lora_down.weight"] = (0.3 * torch.randn(down_shape, generator=generator)).half()
        tensors[f"{key}.lora_up.weight"] = (0.3 * torch.randn(up_shape, generator=generator)).half()
        tensors[f"{key}.alpha"] = torch.tensor(_LORA_ALPHA).half()
    return tensors


def build_tiny_lightning(path: str | Path, *, seed: int = 0) -> TinyLightning:
    """Write a tiny SDXL base pipeline and all seven SDXL-Lightning checkpoint files under `path`.

    No network is used. Load them with
    ``LocalGenerator(base_model=str(t.base), lightning_repo=str(t.lightning), device="cpu")``;
    the outputs are 64x64 images.
    """
    import torch
    from safetensors.torch import save_file

    root = Path(path)
    base, lightning = root / "base", root / "lightning"
    lightning.mkdir(parents=True, exist_ok=True)
    pipe = build_random_sdxl_pipeline("tiny", seed=seed)
    pipe.save_pretrained(base, safe_serialization=True)
    for offset, (steps, filename) in enumerate(sorted(UNET_FILES.items()), start=1):
        unet = _unet("tiny", seed + 100 * offset)
        state = {key: value.to(torch.float16).contiguous() for key, value in unet.state_dict().items()}
        save_file(state, str(lightning / filename), metadata={"format": "pt", "steps": str(steps)})
    for offset, filename in enumerate(sorted(LORA_FILES.values()), start=1):
        save_file(_kohya_lora(pipe.unet, seed + 1000 * offset), str(lightning / filename))
    return TinyLightning(root=root, base=base, lightning=lightning)
