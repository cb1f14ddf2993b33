"""Deterministic stand-in images for the sandbox: flat shapes and colours from a hash, the prompt drawn in.

Same (prompt, seed, size, steps, index, format) gives the same bytes; a different prompt or seed gives a
visibly different picture. Flat shapes and a fast PNG level keep a 1024x1024 file well under 100 KB and
the encode in the low milliseconds.
"""

from __future__ import annotations

import hashlib
import io
import random
import threading
from collections import OrderedDict
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFont

__all__ = ["ImageSpec", "content_type", "render"]

_CONTENT_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
_CACHE_ENTRIES = 256


@dataclass(frozen=True)
class ImageSpec:
    """Everything that determines one sandbox image."""

    prompt: str
    seed: int
    width: int
    height: int
    steps: int
    index: int
    format: str = "png"
    blank: bool = False  # what a safety checker puts in place of a flagged image


def content_type(fmt: str) -> str:
    """The MIME type of an image format name."""
    return _CONTENT_TYPES[fmt]


_cache: OrderedDict[ImageSpec, bytes] = OrderedDict()
_cache_lock = threading.Lock()


def render(spec: ImageSpec) -> bytes:
    """The encoded image for `spec`, from a small LRU cache when it was rendered before."""
    with _cache_lock:
        hit = _cache.get(spec)
        if hit is not None:
            _cache.move_to_end(spec)
            return hit
    data = _encode(_draw(spec), spec.format)
    with _cache_lock:
        _cache[spec] = data
        while len(_cache) > _CACHE_ENTRIES:
            _cache.popitem(last=False)
    return data


def _draw(spec: ImageSpec) -> Image.Image:
    if spec.blank:
        return Image.new("RGB", (spec.width, spec.height), (0, 0, 0))
    key = f"{spec.prompt}\x00{spec.seed}\x00{spec.width}x{spec.height}\x00{spec.steps}\x00{spec.index}"
    rng = random.Random(hashlib.sha256(key.encode()).digest())
    w, h = spec.width, spec.height
    image = Image.new("RGB", (w, h), _colour(rng, 40, 200))
    draw = ImageDraw.Draw(image)
    for _ in range(6 + spec.steps):
        x0, y0 = rng.randrange(-w // 4, w), rng.randrange(-h // 4, h)
        x1, y1 = x0 + rng.randrange(w // 8, w // 2 + 1), y0 + rng.randrange(h // 8, h // 2 + 1)
        shape = rng.randrange(3)
        if shape == 0:
            draw.ellipse((x0, y0, x1, y1), fill=_colour(rng, 0, 255))
        elif shape == 1:
            draw.rectangle((x0, y0, x1, y1), fill=_colour(rng, 0, 255))
        else:
            draw.polygon([(x0, y1), ((x0 + x1) // 2, y0), (x1, y1)], fill=_colour(rng, 0, 255))
    _caption(draw, spec, w, h)
    return image


def _caption(draw: ImageDraw.ImageDraw, spec: ImageSpec, w: int, h: int) -> None:
    size = max(10, min(w, h) // 28)
    font = ImageFont.load_default(size=size)
    text = f"{spec.prompt[:60]}\nseed {spec.seed} · {spec.steps} steps · #{spec.index}"
    band = size * 3
    draw.rectangle((0, h - band, w, h), fill=(0, 0, 0))
    draw.multiline_text((size // 2, h - band + size // 4), text, fill=(255, 255, 255), font=font)


def _colour(rng: random.Random, lo: int, hi: int) -> tuple[int, int, int]:
    return (rng.randint(lo, hi), rng.randint(lo, hi), rng.randint(lo, hi))


def _encode(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    if fmt == "png":
        image.save(buffer, format="PNG", compress_level=1)
    elif fmt == "jpeg":
        image.save(buffer, format="JPEG", quality=85)
    elif fmt == "webp":
        image.save(buffer, format="WEBP", quality=80, method=0)
    else:
        raise ValueError(f"unsupported image format {fmt!r}; allowed: {', '.join(_CONTENT_TYPES)}")
    return buffer.getvalue()
