"""build_tiny_lightning writes a loadable tiny SDXL pipeline and every Lightning file in its real format."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

pytest.importorskip("diffusers", reason="the local extra is part of the dev environment")

import torch
from diffusers import StableDiffusionXLPipeline, UNet2DConditionModel
from safetensors.torch import load_file

import lightning_client as lc
from lightning_client.providers.local.files import LORA_FILES, UNET_FILES
from lightning_client.testing.tiny import CONFIG_DIR, TinyLightning, build_offline_clip_tokenizer


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> TinyLightning:
    return lc.testing.build_tiny_lightning(tmp_path_factory.mktemp("tiny"))


def test_builds_offline_in_seconds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    built = lc.testing.build_tiny_lightning(tmp_path / "t")
    assert time.monotonic() - start < 30
    assert (built.base, built.lightning) == (tmp_path / "t" / "base", tmp_path / "t" / "lightning")
    assert sorted(p.name for p in built.lightning.iterdir()) == sorted([*UNET_FILES.values(), *LORA_FILES.values()])


def test_base_loads_with_diffusers_offline(tiny: TinyLightning, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    pipe = StableDiffusionXLPipeline.from_pretrained(str(tiny.base))
    assert pipe.tokenizer.model_max_length == 77 and pipe.tokenizer_2.model_max_length == 77
    assert pipe.tokenizer_2.pad_token == "!"
    assert json.loads((tiny.base / "model_index.json").read_text())["_class_name"] == "StableDiffusionXLPipeline"
    ids = pipe.tokenizer("a red fox!", padding="max_length", max_length=77).input_ids
    assert len(ids) == 77 and max(ids) < pipe.text_encoder.config.vocab_size


def test_unet_files_are_distinct_diffusers_state_dicts(tiny: TinyLightning) -> None:
    reference = UNet2DConditionModel.from_pretrained(str(tiny.base), subfolder="unet").state_dict()
    states = [load_file(str(tiny.lightning / name)) for name in UNET_FILES.values()]
    for state in states:
        assert state.keys() == reference.keys()
        assert all(t.dtype == torch.float16 for t in state.values())
    weights = [s["conv_in.weight"] for s in states]
    assert all(not torch.equal(a, b) for i, a in enumerate(weights) for b in weights[i + 1 :])


def test_loras_are_kohya_format_with_nonzero_up_weights(tiny: TinyLightning) -> None:
    for name in LORA_FILES.values():
        state = load_file(str(tiny.lightning / name))
        assert all(key.startswith("lora_unet_") for key in state)
        layers = {key.rsplit(".", 2)[0] for key in state if key.endswith("lora_down.weight")}
        assert layers and all(f"{layer}.alpha" in state and f"{layer}.lora_up.weight" in state for layer in layers)
        assert all(state[f"{layer}.lora_up.weight"].abs().sum() > 0 for layer in layers)
        assert not any(layer.startswith(("lora_unet_conv_in", "lora_unet_time_embedding")) for layer in layers)


def test_loras_load_through_diffusers_onto_every_listed_layer(tiny: TinyLightning) -> None:
    pipe = StableDiffusionXLPipeline.from_pretrained(str(tiny.base))
    pipe.load_lora_weights(str(tiny.lightning / LORA_FILES[4]))
    state = load_file(str(tiny.lightning / LORA_FILES[4]))
    listed = {key.rsplit(".", 2)[0] for key in state if key.endswith("lora_down.weight")}
    wrapped = [name for name, module in pipe.unet.named_modules() if hasattr(module, "lora_A")]
    assert len(wrapped) == len(listed)


def test_full_size_configs_have_sdxl_compute() -> None:
    config = json.loads((CONFIG_DIR / "full" / "unet.json").read_text())
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(config)
    params = sum(p.numel() for p in unet.parameters())
    assert 2.55e9 < params < 2.58e9  # the 5,135,149,736-byte fp16 Lightning UNet file holds ~2.567 B
    assert config["projection_class_embeddings_input_dim"] == 6 * config["addition_time_embed_dim"] + 1280


def test_offline_tokenizer_pools_at_end_of_text() -> None:
    tokenizer = build_offline_clip_tokenizer()
    ids = tokenizer("a cat").input_ids
    assert ids[-1] == tokenizer.eos_token_id == max(tokenizer.get_vocab().values())
