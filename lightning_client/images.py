"""Image handling shared by every provider: download, validation, decoding, conversion."""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import io
import ipaddress
import struct
import time
import warnings
import zlib
from dataclasses import dataclass, field
from urllib.parse import unquote_to_bytes, urljoin, urlsplit

import httpx

from lightning_client.errors import ProviderResponseError, ProviderUnavailableError
from lightning_client.result import GeneratedImage

__all__ = [
    "CONTENT_TYPES",
    "MAX_IMAGE_BYTES",
    "MAX_IMAGE_PIXELS",
    "DecodedImage",
    "convert_image",
    "decode_data_uri",
    "decode_image",
    "download_image",
    "is_loopback_host",
    "is_loopback_url",
    "sniff_format",
]

#: Refuse downloads larger than this many bytes.
MAX_IMAGE_BYTES = 40 * 1024 * 1024
#: Refuse images with more pixels than this (decompression-bomb guard: 8 x 4096^2).
MAX_IMAGE_PIXELS = 8 * 4096 * 4096
MAX_REDIRECTS = 3
_INLINE_DECODE_BYTES = 128 * 1024

CONTENT_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
_PIL_FORMATS = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}
_CHUNK_HEAD = struct.Struct(">I4s")
_IHDR_SIZE = struct.Struct(">II")


def sniff_format(data: bytes) -> str | None:
    """'png', 'jpeg' or 'webp' from the magic number, else None."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return None


@dataclass(frozen=True)
class DecodedImage:
    """A validated image: its bytes, format and size."""

    data: bytes = field(repr=False)
    format: str
    width: int
    height: int

    @property
    def content_type(self) -> str:
        return CONTENT_TYPES[self.format]

    def to_generated(self, *, url: str | None = None, nsfw: bool | None = None) -> GeneratedImage:
        return GeneratedImage(
            data=self.data, width=self.width, height=self.height, content_type=self.content_type, url=url, nsfw=nsfw
        )


def _png_size(data: bytes, provider: str | None) -> tuple[int, int]:
    """Width and height of a whole, uncorrupted PNG: IHDR first, every chunk's CRC through IEND.

    This is what Pillow's `verify()` checks, read straight from the chunk layout (PNG spec, section 5)
    without building an image object; the pixels are not inflated. A damaged file is retryable:
    most often the transfer was cut short, and reading it again may deliver it whole.
    """

    def damaged(problem: str) -> ProviderResponseError:
        return ProviderResponseError(
            f"image cannot be decoded (png, {len(data)} bytes): {problem}", provider=provider, retryable=True
        )

    view = memoryview(data)
    offset, size = 8, None
    while offset + 12 <= len(data):
        length, kind = _CHUNK_HEAD.unpack_from(data, offset)
        end = offset + 8 + length
        if end + 4 > len(data):
            break
        if zlib.crc32(view[offset + 4 : end]) != int.from_bytes(view[end : end + 4], "big"):
            raise damaged(f"bad CRC in its {kind.decode('latin-1')!r} chunk")
        if size is None:
            if kind != b"IHDR" or length != 13:
                raise damaged("its first chunk is not IHDR")
            size = _IHDR_SIZE.unpack_from(data, offset + 8)
            if not all(size):
                raise damaged(f"its IHDR gives a size of {size[0]}x{size[1]}")
        elif kind == b"IEND":
            if size[0] * size[1] > MAX_IMAGE_PIXELS:
                raise ProviderResponseError(
                    f"image of {size[0]}x{size[1]} pixels exceeds the {MAX_IMAGE_PIXELS}-pixel limit",
                    provider=provider,
                )
            return size
        offset = end + 4
    raise damaged("truncated before its IEND chunk")


def decode_image(data: bytes, *, provider: str | None = None, declared_type: str | None = None) -> DecodedImage:
    """Check magic number, declared type and integrity, with a pixel-count cap.

    A PNG's integrity is its chunks' CRCs through IEND (`_png_size`), so a truncated or corrupted
    transfer is caught without inflating the pixels; JPEG and WebP, which carry no such checksums,
    are fully decoded with Pillow.
    """
    fmt = sniff_format(data)
    if fmt is None:
        raise ProviderResponseError(
            f"response is not a PNG, JPEG or WebP image (declared {declared_type or 'no type'}, {len(data)} bytes)",
            provider=provider,
        )
    if declared_type:
        declared = declared_type.split(";")[0].strip().lower()
        if declared.startswith("image/") and declared not in (CONTENT_TYPES[fmt], "image/jpg"):
            raise ProviderResponseError(f"image declared as {declared} but its bytes are {fmt}", provider=provider)
    if fmt == "png":
        width, height = _png_size(data, provider)
        return DecodedImage(data=data, format=fmt, width=width, height=height)
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
                if width * height > MAX_IMAGE_PIXELS:
                    raise ProviderResponseError(
                        f"image of {width}x{height} pixels exceeds the {MAX_IMAGE_PIXELS}-pixel limit",
                        provider=provider,
                    )
                image.load()
    except ProviderResponseError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ProviderResponseError(f"image rejected as a decompression bomb: {exc}", provider=provider) from None
    except (OSError, SyntaxError, ValueError) as exc:
        # Most often a transfer cut short: reading the file again may deliver it whole.
        raise ProviderResponseError(
            f"image cannot be decoded ({fmt}, {len(data)} bytes): {exc}", provider=provider, retryable=True
        ) from None
    return DecodedImage(data=data, format=fmt, width=width, height=height)


def convert_image(image: DecodedImage, fmt: str) -> DecodedImage:
    """Re-encode into `fmt` ('png', 'jpeg' or 'webp'); returns `image` when already there."""
    if image.format == fmt:
        return image
    from PIL import Image

    with Image.open(io.BytesIO(image.data)) as src:
        pixels = src.convert("RGB") if fmt == "jpeg" else src.copy()
    out = io.BytesIO()
    pixels.save(out, format=_PIL_FORMATS[fmt], **({"quality": 95} if fmt in ("jpeg", "webp") else {}))
    return DecodedImage(data=out.getvalue(), format=fmt, width=image.width, height=image.height)


def decode_data_uri(uri: str, *, provider: str | None = None) -> tuple[bytes, str | None]:
    """Bytes and media type of a `data:` URI (base64 or percent-encoded)."""
    if not uri.startswith("data:") or "," not in uri:
        raise ProviderResponseError("malformed data: URI", provider=provider)
    header, payload = uri[5:].split(",", 1)
    media_type = header.split(";")[0] or None
    if len(payload) > MAX_IMAGE_BYTES * 4 // 3 + 4:
        raise ProviderResponseError(f"data: URI larger than {MAX_IMAGE_BYTES} bytes", provider=provider)
    try:
        data = base64.b64decode(payload, validate=True) if header.endswith(";base64") else unquote_to_bytes(payload)
    except (binascii.Error, ValueError) as exc:
        raise ProviderResponseError(f"malformed base64 in data: URI: {exc}", provider=provider) from None
    return data, media_type


def is_loopback_url(url: str) -> bool:
    """True for URLs whose host is localhost or a loopback address."""
    return is_loopback_host(urlsplit(url).hostname or "")


@functools.lru_cache(maxsize=256)
def is_loopback_host(host: str) -> bool:
    """Whether `host` (a name or an address, IPv6 bracketed or not) is localhost or a loopback address.

    Remembered: every download asks.
    """
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _check_url(url: str, provider: str | None, allow_loopback_http: bool) -> None:
    parts = urlsplit(url)
    if parts.scheme == "https" or (
        allow_loopback_http and parts.scheme == "http" and is_loopback_host(parts.hostname or "")
    ):
        return
    allowed = (
        "only https URLs (or http on loopback, when allowed) are" if allow_loopback_http else "only https URLs are"
    )
    raise ProviderResponseError(f"refusing to download image from {url!r}: {allowed} allowed", provider=provider)


async def download_image(
    client: httpx.AsyncClient,
    url: str,
    *,
    provider: str | None = None,
    headers: dict[str, str] | None = None,
    max_bytes: int = MAX_IMAGE_BYTES,
    allow_loopback_http: bool = False,
) -> tuple[DecodedImage, float]:
    """Fetch and validate one image (or decode a `data:` URI); returns it and the seconds spent.

    Only https URLs are fetched; plain http only to a loopback host and only with
    `allow_loopback_http` (a sandbox or a local server: otherwise a hostile response could
    make us fetch local services). Redirects are followed only to the same host
    (credentials never leave it), up to three; bodies over `max_bytes` are refused while
    streaming.
    """
    start = time.monotonic()
    if url.startswith("data:"):
        data, media_type = decode_data_uri(url, provider=provider)
        return decode_image(data, provider=provider, declared_type=media_type), time.monotonic() - start
    current = url
    for _ in range(MAX_REDIRECTS + 1):
        _check_url(current, provider, allow_loopback_http)
        try:
            async with client.stream("GET", current, headers=headers, follow_redirects=False) as response:
                if response.is_redirect:
                    target = urljoin(current, response.headers.get("location", ""))
                    if urlsplit(target).netloc != urlsplit(current).netloc:
                        raise ProviderResponseError(
                            f"image download redirected to another host ({urlsplit(target).netloc}); not followed",
                            provider=provider,
                            status_code=response.status_code,
                        )
                    current = target
                    continue
                if response.status_code >= 500 or response.status_code in (408, 429):
                    raise ProviderUnavailableError(
                        f"image download failed with HTTP {response.status_code}",
                        provider=provider,
                        status_code=response.status_code,
                    )
                if response.status_code != 200:
                    raise ProviderResponseError(
                        f"image download failed with HTTP {response.status_code}",
                        provider=provider,
                        status_code=response.status_code,
                    )
                declared = response.headers.get("content-length")
                if declared and declared.isdigit() and int(declared) > max_bytes:
                    raise ProviderResponseError(
                        f"image of {declared} bytes exceeds the {max_bytes}-byte limit", provider=provider
                    )
                chunks: list[bytes] = []
                size = 0
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    if size > max_bytes:
                        raise ProviderResponseError(f"image larger than the {max_bytes}-byte limit", provider=provider)
                    chunks.append(chunk)
                content_type = response.headers.get("content-type")
        except httpx.TransportError as exc:
            raise ProviderUnavailableError(
                f"image download failed: {type(exc).__name__}: {exc}", provider=provider
            ) from None
        body = b"".join(chunks)
        if len(body) > _INLINE_DECODE_BYTES:  # keep the event loop free for large images
            decoded = await asyncio.to_thread(decode_image, body, provider=provider, declared_type=content_type)
        else:
            decoded = decode_image(body, provider=provider, declared_type=content_type)
        return decoded, time.monotonic() - start
    raise ProviderResponseError(f"more than {MAX_REDIRECTS} redirects downloading an image", provider=provider)
