"""Sandbox images: deterministic, sized, formatted, small, different per prompt and seed."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from lightning_client.testing._render import ImageSpec, content_type, render


def spec(**change: object) -> ImageSpec:
    base: dict[str, object] = {"prompt": "a red fox", "seed": 1, "width": 1024, "height": 1024, "steps": 4, "index": 0}
    return ImageSpec(**{**base, **change})  # type: ignore[arg-type]


def test_same_spec_same_bytes_and_different_spec_different_picture() -> None:
    assert render(spec()) == render(spec())
    pixels = Image.open(io.BytesIO(render(spec()))).convert("RGB").tobytes()
    for change in ({"prompt": "a blue whale"}, {"seed": 2}, {"index": 1}, {"steps": 2}):
        other = Image.open(io.BytesIO(render(spec(**change)))).convert("RGB").tobytes()
        assert other != pixels, change


@pytest.mark.parametrize(("fmt", "pil_format"), [("png", "PNG"), ("jpeg", "JPEG"), ("webp", "WEBP")])
def test_size_format_and_weight(fmt: str, pil_format: str) -> None:
    data = render(spec(width=1024, height=768, format=fmt))
    image = Image.open(io.BytesIO(data))
    assert image.format == pil_format and image.size == (1024, 768)
    assert len(data) < 100_000
    assert content_type(fmt) == f"image/{fmt}"


def test_blank_image_is_black() -> None:
    image = Image.open(io.BytesIO(render(spec(blank=True, width=256, height=256)))).convert("RGB")
    assert image.getextrema() == ((0, 0), (0, 0), (0, 0))


def test_unknown_format() -> None:
    with pytest.raises(ValueError, match="gif"):
        render(spec(format="gif"))
