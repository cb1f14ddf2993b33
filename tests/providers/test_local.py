"""LocalGenerator on a real tiny diffusers pipeline (CPU, offline): checkpoints, scheduler, determinism, errors."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="the local extra is part of the dev environment")

import torch
from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
from safetensors.torch import load_file

import lightning_client as lc
from lightning_client.images import sniff_format
from lightning_client.pricing import PriceTable
from lightning_client.providers.local import LocalGenerator
from lightning_client.testing.tiny import TinyLightning, build_random_sdxl_pipeline, build_tiny_lightning


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> TinyLightning:
    return build_tiny_lightning(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def unet_gen(tiny: TinyLightning) -> Iterator[LocalGenerator]:
    generator = LocalGenerator(base_model=str(tiny.base), lightning_repo=str(tiny.lightning), device="cpu")
    yield generator
    generator.close()


@pytest.fixture(scope="module")
def lora_gen(tiny: TinyLightning) -> Iterator[LocalGenerator]:
    generator = LocalGenerator(
        base_model=str(tiny.base), lightning_repo=str(tiny.lightning), device="cpu", variant="lora"
    )
    yield generator
    generator.close()


def pixels(result: lc.GenerationResult, index: int = 0) -> np.ndarray:
    return np.asarray(result.images[index].to_pil().convert("RGB")).astype(int)


def card_recipe(tiny: TinyLightning, steps: int, seed: int) -> np.ndarray:
    """The model card's UNet recipe done by hand with diffusers (the reference output)."""
    name = "sdxl_lightning_1step_unet_x0" if steps == 1 else f"sdxl_lightning_{steps}step_unet"
    unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(str(tiny.base), subfolder="unet"))
    unet.load_state_dict(load_file(str(tiny.lightning / f"{name}.safetensors")))
    pipe = StableDiffusionXLPipeline.from_pretrained(str(tiny.base), unet=unet, add_watermarker=False)
    extra = {"prediction_type": "sample"} if steps == 1 else {}
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config, timestep_spacing="trailing", **extra)
    pipe.set_progress_bar_config(disable=True)
    image = pipe(
        "a red fox",
        num_inference_steps=steps,
        guidance_scale=0,
        width=64,
        height=64,
        generator=torch.Generator("cpu").manual_seed(seed),
    ).images[0]
    return np.asarray(image).astype(int)


def test_import_does_not_load_torch() -> None:
    code = (
        "import sys, lightning_client as lc; from lightning_client.providers.local import LocalGenerator; "
        "LocalGenerator(base_model='/nowhere', device='cpu'); lc.testing.build_tiny_lightning; "
        "heavy = [m for m in ('torch', 'diffusers', 'transformers', 'safetensors', 'huggingface_hub') if m in sys.modules]; "
        "print(heavy); sys.exit(1 if heavy else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("steps", [1, 2, 4, 8])
def test_every_step_count_generates_requested_size(unet_gen: LocalGenerator, steps: int) -> None:
    result = unet_gen.generate("a red fox", steps=steps, width=64, height=64, seed=1234)
    assert result.provider == "local"
    assert result.seed == 1234 and result.steps == steps
    assert [(i.width, i.height, i.content_type) for i in result.images] == [(64, 64, "image/png")]
    assert result.images[0].to_pil().size == (64, 64)
    expected = "sdxl_lightning_1step_unet_x0" if steps == 1 else f"sdxl_lightning_{steps}step_unet"
    assert result.model == expected
    assert result.timings.inference_s and result.timings.inference_s > 0
    assert result.timings.load_s is not None and result.timings.total_s >= result.timings.inference_s
    assert result.cost.estimated and result.cost.usd > 0 and "cpu" in result.cost.basis
    assert result.attempts[0].outcome == "succeeded"


def test_same_seed_same_bytes_other_seed_differs(unet_gen: LocalGenerator) -> None:
    first = unet_gen.generate("a red fox", steps=2, width=64, height=64, seed=7)
    again = unet_gen.generate("a red fox", steps=2, width=64, height=64, seed=7)
    other = unet_gen.generate("a red fox", steps=2, width=64, height=64, seed=8)
    assert first.images[0].data == again.images[0].data
    assert first.images[0].data != other.images[0].data


def test_step_counts_use_their_own_checkpoint(unet_gen: LocalGenerator) -> None:
    one = unet_gen.generate("a red fox", steps=1, width=64, height=64, seed=3)
    eight = unet_gen.generate("a red fox", steps=8, width=64, height=64, seed=3)
    assert np.abs(pixels(one) - pixels(eight)).mean() > 5


def test_batch_image_i_uses_seed_plus_i(unet_gen: LocalGenerator) -> None:
    batch = unet_gen.generate("a red fox", steps=2, width=64, height=64, seed=40, num_images=3)
    assert len(batch.images) == 3 and len({i.data for i in batch.images}) == 3
    for index in range(3):
        single = unet_gen.generate("a red fox", steps=2, width=64, height=64, seed=40 + index)
        # Batched and single convolutions may round differently in the last bit.
        assert np.abs(pixels(batch, index) - pixels(single)).max() <= 2


def test_matches_model_card_recipe_with_sample_prediction_at_one_step(
    unet_gen: LocalGenerator, tiny: TinyLightning
) -> None:
    result = unet_gen.generate("a red fox", steps=1, width=64, height=64, seed=5)
    scheduler = unet_gen.pipeline.scheduler.config
    assert (scheduler.prediction_type, scheduler.timestep_spacing) == ("sample", "trailing")
    assert np.abs(pixels(result) - card_recipe(tiny, 1, 5)).max() <= 1
    result = unet_gen.generate("a red fox", steps=4, width=64, height=64, seed=5)
    scheduler = unet_gen.pipeline.scheduler.config
    assert (scheduler.prediction_type, scheduler.timestep_spacing) == ("epsilon", "trailing")
    assert np.abs(pixels(result) - card_recipe(tiny, 4, 5)).max() <= 1


def test_switching_steps_keeps_the_warm_pipeline(tiny: TinyLightning) -> None:
    generator = LocalGenerator(base_model=str(tiny.base), lightning_repo=str(tiny.lightning), device="cpu")
    with generator:
        generator.generate("a red fox", steps=4, width=64, height=64, seed=1)
        pipe = generator.pipeline
        kept = [pipe.text_encoder, pipe.text_encoder_2, pipe.vae, pipe.tokenizer, pipe.unet]
        weight = pipe.unet.conv_in.weight
        before = weight.detach().clone()
        loads = []
        for steps in (1, 8, 2, 4, 4):
            result = generator.generate("a red fox", steps=steps, width=64, height=64, seed=1)
            loads.append(generator.checkpoint_loads)
            assert result.timings.load_s is not None
        assert generator.pipeline is pipe
        assert all(
            a is b
            for a, b in zip(
                kept, [pipe.text_encoder, pipe.text_encoder_2, pipe.vae, pipe.tokenizer, pipe.unet], strict=True
            )
        )
        assert pipe.unet.conv_in.weight is weight  # swapped in place
        assert generator.pipeline_loads == 1
        assert loads == [2, 3, 4, 5, 5]  # a repeated step count loads nothing
        assert torch.equal(weight.detach(), before)  # back on the 4-step weights


def test_lora_variant_changes_output_and_swaps_in_place(lora_gen: LocalGenerator, tiny: TinyLightning) -> None:
    four = lora_gen.generate("a red fox", steps=4, width=64, height=64, seed=9)
    loads = lora_gen.checkpoint_loads
    assert four.model == "sdxl_lightning_4step_lora"
    pipe = lora_gen.pipeline
    kept = [pipe.text_encoder, pipe.text_encoder_2, pipe.vae, pipe.unet]
    two = lora_gen.generate("a red fox", steps=2, width=64, height=64, seed=9)
    four_again = lora_gen.generate("a red fox", steps=4, width=64, height=64, seed=9)
    assert all(a is b for a, b in zip(kept, [pipe.text_encoder, pipe.text_encoder_2, pipe.vae, pipe.unet], strict=True))
    assert lora_gen.pipeline_loads == 1 and lora_gen.checkpoint_loads == loads + 2
    assert np.abs(pixels(four) - pixels(two)).mean() > 1
    assert np.abs(pixels(four) - pixels(four_again)).max() <= 2  # unfuse + refuse restores the weights

    base = StableDiffusionXLPipeline.from_pretrained(str(tiny.base), add_watermarker=False)
    base.scheduler = EulerDiscreteScheduler.from_config(base.scheduler.config, timestep_spacing="trailing")
    base.set_progress_bar_config(disable=True)
    plain = base(
        "a red fox",
        num_inference_steps=4,
        guidance_scale=0,
        width=64,
        height=64,
        generator=torch.Generator("cpu").manual_seed(9),
    ).images[0]
    assert np.abs(pixels(four) - np.asarray(plain).astype(int)).mean() > 1


async def test_lora_has_no_one_step(lora_gen: LocalGenerator) -> None:
    assert lora_gen.capabilities.native_steps == frozenset({2, 4, 8})
    with pytest.raises(lc.InvalidRequestError, match="no 1-step LoRA") as info:
        await lora_gen.agenerate("a red fox", steps=1, width=64, height=64)
    assert info.value.field == "steps" and info.value.provider == "local"


async def test_output_formats_are_encoded_locally(unet_gen: LocalGenerator) -> None:
    for fmt, content_type in (("jpeg", "image/jpeg"), ("webp", "image/webp")):
        result = await unet_gen.agenerate("a red fox", steps=2, width=128, height=64, seed=1, output_format=fmt)
        image = result.images[0]
        assert (image.content_type, sniff_format(image.data), image.width, image.height) == (
            content_type,
            fmt,
            128,
            64,
        )


async def test_unsupported_settings_are_warned(unet_gen: LocalGenerator) -> None:
    result = await unet_gen.agenerate(
        "a red fox", steps=2, width=64, height=64, negative_prompt="blurry", provider_options={"local": {"eta": 1}}
    )
    settings = {(w.kind, w.setting) for w in result.warnings}
    assert {
        ("unsupported", "negative_prompt"),
        ("unsupported", "safety_checker"),
        ("ignored", "provider_options"),
    } <= settings


async def test_progress_and_a_free_event_loop(tiny: TinyLightning) -> None:
    seen: list[tuple[int, int]] = []
    generator = LocalGenerator(
        base_model=str(tiny.base),
        lightning_repo=str(tiny.lightning),
        device="cpu",
        progress=lambda step, total: seen.append((step, total)),
    )
    await generator.aload(8)
    gaps: list[float] = []
    stop = asyncio.Event()

    async def ticker() -> None:
        last = time.monotonic()
        while not stop.is_set():
            await asyncio.sleep(0.005)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    task = asyncio.create_task(ticker())
    start = time.monotonic()
    await generator.agenerate("a red fox", steps=8, width=128, height=128, seed=2)
    elapsed = time.monotonic() - start
    stop.set()
    await task
    await asyncio.sleep(0)  # deliver the last progress call
    await generator.aclose()
    assert seen == [(i, 8) for i in range(1, 9)]
    # The loop kept ticking while the worker denoised (a blocked loop shows one gap ~ elapsed).
    assert len(gaps) > 10
    assert max(gaps) < elapsed / 3


async def test_deadline_stops_the_job_between_steps(tiny: TinyLightning) -> None:
    seen: list[int] = []
    generator = LocalGenerator(
        base_model=str(tiny.base),
        lightning_repo=str(tiny.lightning),
        device="cpu",
        progress=lambda step, total: seen.append(step),
    )
    await generator.aload(8)
    await generator.agenerate("a red fox", steps=8, width=64, height=64)  # warm
    seen.clear()
    with pytest.raises(lc.GenerationTimeoutError) as info:
        await generator.agenerate("a red fox", steps=8, width=256, height=256, timeout_s=0.3)
    assert info.value.attempt is not None and info.value.attempt.outcome == "failed"
    # The next job queues behind the abandoned one, which stops after its current step.
    after = await generator.agenerate("a red fox", steps=8, width=64, height=64, seed=1)
    await generator.aclose()
    assert len(after.images) == 1
    assert len(seen) < 16  # the abandoned 8-step job did not run to the end (8 + 8 otherwise)


async def test_concurrent_jobs_share_the_device_and_match_sequential_ones(unet_gen: LocalGenerator) -> None:
    requests = [lc.GenerationRequest(prompt="a red fox", steps=2, width=64, height=64, seed=s) for s in (1, 2, 3)]
    await unet_gen.aload(2)
    calls = unet_gen.pipeline_calls
    results = await asyncio.gather(*(unet_gen.agenerate(r) for r in requests))
    assert unet_gen.pipeline_calls - calls < 3  # batched, not one call each
    sequential = [await unet_gen.agenerate(r) for r in requests]
    assert [r.images[0].data for r in results] == [r.images[0].data for r in sequential]


def test_hub_ids_resolve_offline_from_the_cache(tiny: TinyLightning, tmp_path: Path, unet_gen: LocalGenerator) -> None:
    for repo, source in (
        ("stabilityai/stable-diffusion-xl-base-1.0", tiny.base),
        ("ByteDance/SDXL-Lightning", tiny.lightning),
    ):
        folder = tmp_path / ("models--" + repo.replace("/", "--"))
        shutil.copytree(source, folder / "snapshots" / ("a" * 40))
        (folder / "refs").mkdir()
        (folder / "refs" / "main").write_text("a" * 40)
    with LocalGenerator(cache_dir=str(tmp_path), device="cpu", base_variant=None) as generator:
        result = generator.generate("a red fox", steps=4, width=64, height=64, seed=6)
    reference = unet_gen.generate("a red fox", steps=4, width=64, height=64, seed=6)
    assert result.images[0].data == reference.images[0].data


def test_missing_base_directory_is_named(tiny: TinyLightning, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-base"
    generator = LocalGenerator(base_model=str(missing), lightning_repo=str(tiny.lightning), device="cpu")
    with generator, pytest.raises(lc.LightningError, match="no-such-base") as info:
        generator.generate("a red fox", steps=4, width=64, height=64)
    assert not info.value.retryable and info.value.provider == "local"


def test_missing_checkpoint_is_named(tiny: TinyLightning, tmp_path: Path) -> None:
    partial = tmp_path / "lightning"
    partial.mkdir()
    shutil.copy(tiny.lightning / "sdxl_lightning_4step_unet.safetensors", partial)
    with LocalGenerator(base_model=str(tiny.base), lightning_repo=str(partial), device="cpu") as generator:
        assert generator.generate("a red fox", steps=4, width=64, height=64).images
        with pytest.raises(lc.LightningError, match=r"sdxl_lightning_8step_unet\.safetensors"):
            generator.generate("a red fox", steps=8, width=64, height=64)
        assert generator.generate("a red fox", steps=4, width=64, height=64).images  # still warm
        assert generator.pipeline_loads == 1


def test_hub_checkpoint_missing_offline_is_named(tiny: TinyLightning, tmp_path: Path) -> None:
    generator = LocalGenerator(base_model=str(tiny.base), cache_dir=str(tmp_path), local_files_only=True, device="cpu")
    with pytest.raises(
        lc.ProviderUnavailableError, match=r"sdxl_lightning_2step_unet\.safetensors.*ByteDance/SDXL-Lightning"
    ):
        generator.generate("a red fox", steps=2, width=64, height=64)


@pytest.mark.parametrize(("device", "message"), [("cuda:99", "not available"), ("quantum", "not a torch device")])
def test_unavailable_device(tiny: TinyLightning, device: str, message: str) -> None:
    generator = LocalGenerator(base_model=str(tiny.base), lightning_repo=str(tiny.lightning), device=device)
    with pytest.raises(lc.ProviderUnavailableError, match=message) as info:
        generator.generate("a red fox", steps=4, width=64, height=64)
    assert device in str(info.value) and not info.value.retryable


def test_missing_local_extra_says_how_to_install(tiny: TinyLightning, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "diffusers", None)  # makes `import diffusers` fail
    generator = LocalGenerator(base_model=str(tiny.base), lightning_repo=str(tiny.lightning), device="cpu")
    with pytest.raises(lc.ProviderUnavailableError, match=r"pip install lightning-client\[local\]") as info:
        generator.generate("a red fox", steps=4, width=64, height=64)
    assert "diffusers" in str(info.value) and not info.value.retryable


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"variant": "full"}, "variant"),
        ({"variant": "lora", "fuse_qkv": True}, "fuse_qkv"),
        ({"dtype": "int8"}, "dtype"),
    ],
)
def test_bad_options_name_the_field(tiny: TinyLightning, kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(lc.InvalidRequestError) as info:
        generator = LocalGenerator(
            base_model=str(tiny.base), lightning_repo=str(tiny.lightning), device="cpu", **kwargs
        )  # type: ignore[arg-type]
        generator.generate("a red fox", steps=4, width=64, height=64)
    assert info.value.field == field


def test_from_pipeline_serves_a_built_pipeline(tiny: TinyLightning) -> None:
    pipe = build_random_sdxl_pipeline("tiny", seed=3)
    with LocalGenerator.from_pipeline(pipe) as generator:
        first = generator.generate("a red fox", steps=4, width=64, height=64, seed=1)
        assert generator.pipeline is pipe and generator.checkpoint_loads == 0
        assert pipe.scheduler.config.timestep_spacing == "trailing"
    with LocalGenerator.from_pipeline(
        build_random_sdxl_pipeline("tiny", seed=3), lightning_repo=str(tiny.lightning)
    ) as swapping:
        swapped = swapping.generate("a red fox", steps=4, width=64, height=64, seed=1)
        assert swapping.checkpoint_loads == 1
    assert first.images[0].data != swapped.images[0].data


def _raise_oom(module: object, args: object) -> None:
    raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


def test_out_of_memory_is_not_retryable_and_empties_the_cache(
    unet_gen: LocalGenerator, monkeypatch: pytest.MonkeyPatch
) -> None:
    emptied: list[bool] = []
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: emptied.append(True))
    unet_gen.generate("a red fox", steps=2, width=64, height=64, seed=1)  # warm
    hook = unet_gen.pipeline.unet.register_forward_pre_hook(_raise_oom)
    try:
        with pytest.raises(lc.ProviderUnavailableError, match="out of cpu memory") as info:
            unet_gen.generate("a red fox", steps=2, width=64, height=64, seed=1)
    finally:
        hook.remove()
    assert not info.value.retryable and info.value.attempt is not None
    assert info.value.attempt.retryable is False
    assert emptied
    assert unet_gen.generate("a red fox", steps=2, width=64, height=64, seed=1).images  # still serves


async def test_a_batch_out_of_memory_reruns_its_jobs_one_by_one(tiny: TinyLightning) -> None:
    generator = LocalGenerator(
        base_model=str(tiny.base), lightning_repo=str(tiny.lightning), device="cpu", max_batch_size=4
    )
    async with generator:
        await generator.aload(2)

        def oom_when_batched(module: object, args: tuple[torch.Tensor, ...]) -> None:
            if args[0].shape[0] > 1:
                _raise_oom(module, args)

        generator.pipeline.unet.register_forward_pre_hook(oom_when_batched)
        requests = [lc.GenerationRequest(prompt="a red fox", steps=2, width=64, height=64, seed=s) for s in (1, 2)]
        results = await asyncio.gather(*(generator.agenerate(r) for r in requests))
        assert [len(r.images) for r in results] == [1, 1]
        assert generator.pipeline_calls == 3  # the batch that failed, then each job alone


def test_step_switch_reads_on_the_cpu_and_copies_in_place(tiny: TinyLightning, monkeypatch: pytest.MonkeyPatch) -> None:
    from lightning_client.providers.local.pipeline import WarmPipeline

    with LocalGenerator(base_model=str(tiny.base), lightning_repo=str(tiny.lightning), device="cpu") as generator:
        generator.load(4)
        unet = generator.pipeline.unet
        before = {name: (param, param.data_ptr()) for name, param in unet.named_parameters()}
        # As on a GPU: the file must still be read into CPU memory, never onto the device.
        monkeypatch.setattr(WarmPipeline, "device", property(lambda self: torch.device("cuda")))
        generator.load(8)
        monkeypatch.undo()
        state = load_file(str(tiny.lightning / "sdxl_lightning_8step_unet.safetensors"))
        for name, param in unet.named_parameters():
            assert before[name] == (param, param.data_ptr())  # same tensors, same storage
            assert torch.equal(param.detach(), state[name].to(param.dtype))


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_lora_switches_do_not_drift_the_base_weights(tiny: TinyLightning, dtype: str) -> None:
    with LocalGenerator(
        base_model=str(tiny.base), lightning_repo=str(tiny.lightning), device="cpu", variant="lora", dtype=dtype
    ) as generator:
        generator.load(4)
        fused = {k: v.detach().clone() for k, v in generator.pipeline.unet.state_dict().items()}
        for steps in (2, 8, 4, 2, 4, 8, 4):
            generator.load(steps)
        again = generator.pipeline.unet.state_dict()
        drifted = [k for k, v in fused.items() if not torch.equal(v, again[k].detach())]
        assert generator.checkpoint_loads == 8
    assert not drifted, drifted[:3]


async def test_closing_waits_for_the_running_job(tiny: TinyLightning) -> None:
    started = asyncio.Event()
    generator = LocalGenerator(
        base_model=str(tiny.base),
        lightning_repo=str(tiny.lightning),
        device="cpu",
        max_batch_size=1,
        progress=lambda step, total: started.set(),
    )
    await generator.aload(8)
    unet_calls: list[int] = []  # appended on the worker thread, as the UNet runs
    generator.pipeline.unet.register_forward_pre_hook(lambda module, args: unet_calls.append(1))
    running = asyncio.create_task(generator.agenerate("a red fox", steps=8, width=128, height=128, seed=1))
    queued = asyncio.create_task(generator.agenerate("a red fox", steps=8, width=128, height=128, seed=2))
    await started.wait()
    await generator.aclose()
    assert len(unet_calls) == 8  # the running job had finished when aclose returned
    assert generator.pipeline is None
    assert len((await running).images) == 1
    with pytest.raises(lc.ProviderUnavailableError, match="closed before this job started"):
        await queued


async def test_cost_is_inference_seconds_at_the_cpu_rate(tiny: TinyLightning) -> None:
    generator = LocalGenerator(base_model=str(tiny.base), lightning_repo=str(tiny.lightning), device="cpu")
    async with generator:
        first = await generator.agenerate("a red fox", steps=2, width=64, height=64, seed=1)  # pays the load
    rate = PriceTable().local_cpu_hour
    assert (rate.usd, rate.unit) == (0.36, "CPU hour")
    assert first.timings.load_s and first.timings.load_s > 0
    assert first.cost.usd == pytest.approx((first.timings.inference_s or 0) * rate.usd / 3600)
    assert "CPU hour" in first.cost.basis and "model load not billed" in first.cost.basis
