"""Result models: JSON round trip, image saving with metadata."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

import lightning_client as lc


def _png(width: int = 16, height: int = 8, colour: tuple[int, int, int] = (200, 10, 10)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buf, format="PNG")
    return buf.getvalue()


def _result() -> lc.GenerationResult:
    image = lc.GeneratedImage(data=_png(), width=16, height=8, content_type="image/png", url="https://x/1.png")
    attempt = lc.Attempt(provider="fal", model="fal-ai/fast-lightning-sdxl", request_id="r1", outcome="succeeded")
    return lc.GenerationResult(
        images=[image],
        seed=7,
        provider="fal",
        model="fal-ai/fast-lightning-sdxl",
        prompt="a red fox",
        steps=4,
        request_id="r1",
        timings=lc.Timings(queue_s=0.1, inference_s=0.5, download_s=0.05, total_s=0.7),
        cost=lc.Cost(usd=0.002, basis="1 image x $0.002", estimated=False),
        attempts=[attempt],
        warnings=[lc.Warning(kind="converted", setting="output_format", message="webp converted", provider="fal")],
    )


def test_json_round_trip_keeps_image_bytes_and_every_field() -> None:
    result = _result()
    again = lc.GenerationResult.model_validate_json(result.model_dump_json())
    assert again == result
    assert again.images[0].data == result.images[0].data
    assert again.attempts[0].request_id == "r1"
    assert again.warnings[0].kind == "converted"


def test_images_carry_generation_metadata() -> None:
    meta = _result().images[0].metadata
    assert meta["prompt"] == "a red fox"
    assert meta["seed"] == "7"
    assert meta["steps"] == "4"
    assert meta["provider"] == "fal"
    assert meta["model"] == "fal-ai/fast-lightning-sdxl"


def test_save_writes_png_text_chunks(tmp_path: Path) -> None:
    result = _result()
    (path,) = result.save(tmp_path)
    with Image.open(path) as img:
        assert img.size == (16, 8)
        assert img.text["prompt"] == "a red fox"  # type: ignore[attr-defined]
        assert img.text["seed"] == "7"  # type: ignore[attr-defined]
        assert img.text["provider"] == "fal"  # type: ignore[attr-defined]
    single = result.images[0].save(tmp_path / "one.png")
    assert single.exists()


def test_non_png_images_are_written_unchanged(tmp_path: Path) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, format="JPEG")
    img = lc.GeneratedImage(data=buf.getvalue(), width=8, height=8, content_type="image/jpeg")
    path = img.save(tmp_path / "x.jpg")
    assert path.read_bytes() == buf.getvalue()
    assert img.extension == "jpg"


def test_to_pil_decodes() -> None:
    assert _result().images[0].to_pil().getpixel((0, 0)) == (200, 10, 10)


def test_summary_has_no_bytes_and_flat_timings() -> None:
    summary = _result().summary()
    assert summary["total_s"] == 0.7
    assert summary["cost_usd"] == 0.002
    assert "data" not in str(summary)


def test_costs_add_up_with_their_basis() -> None:
    total = lc.Cost(usd=0.1, basis="a", estimated=False) + lc.Cost(usd=0.2, basis="b", estimated=True)
    assert round(total.usd, 9) == 0.3
    assert total.basis == "a + b"
    assert total.estimated is True


def test_attempt_snapshots_do_not_share_mutable_parts() -> None:
    attempt = lc.Attempt(provider="fal", remote_ids=["a"], timings=lc.Timings(total_s=1.0))
    copy = attempt.snapshot()
    attempt.remote_ids.append("b")
    attempt.timings.total_s = 2.0
    attempt.cost.usd = 5.0
    assert (copy.remote_ids, copy.timings.total_s, copy.cost.usd) == (["a"], 1.0, 0.0)
    assert copy.attempt_id == attempt.attempt_id


def test_save_writes_the_format_its_extension_names(tmp_path: Path) -> None:
    image = _result().images[0]  # PNG bytes
    for name, magic, fmt in (("x.jpg", b"\xff\xd8\xff", "JPEG"), ("x.JPEG", b"\xff\xd8\xff", "JPEG")):
        path = image.save(tmp_path / name)
        assert path.read_bytes().startswith(magic)
        with Image.open(path) as opened:
            assert opened.format == fmt and opened.size == (16, 8)
    webp = image.save(tmp_path / "x.webp")
    assert webp.read_bytes()[8:12] == b"WEBP"
    with pytest.raises(ValueError, match=r"'x.gif'.*allowed: .png, .jpg, .jpeg, .webp"):
        image.save(tmp_path / "x.gif")
    assert not (tmp_path / "x.gif").exists()


def test_result_save_refuses_a_stem_with_directory_parts(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="stem"):
        _result().save(tmp_path / "in", stem="../escape")
    assert not list(tmp_path.rglob("*.png"))
