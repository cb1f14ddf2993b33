"""Image download and validation over real loopback HTTP."""

from __future__ import annotations

import base64
import io
import zlib

import httpx
import pytest
from PIL import Image

import lightning_client as lc
from lightning_client.images import (
    convert_image,
    decode_data_uri,
    decode_image,
    download_image,
    is_loopback_url,
    sniff_format,
)
from tests.conftest import FileServer, Route


def _encode(fmt: str, size: tuple[int, int] = (32, 24)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (10, 200, 30)).save(buf, format=fmt)
    return buf.getvalue()


@pytest.mark.parametrize(("fmt", "name"), [("PNG", "png"), ("JPEG", "jpeg"), ("WEBP", "webp")])
def test_sniff_and_decode_each_format(fmt: str, name: str) -> None:
    data = _encode(fmt)
    assert sniff_format(data) == name
    decoded = decode_image(data, declared_type=f"image/{name}")
    assert (decoded.format, decoded.width, decoded.height) == (name, 32, 24)
    assert decoded.content_type == f"image/{name}"


def test_non_images_truncated_images_and_type_mismatches_are_rejected() -> None:
    with pytest.raises(lc.ProviderResponseError, match="not a PNG, JPEG or WebP"):
        decode_image(b"<html>oops</html>", provider="fal")
    png = _encode("PNG", (256, 256))
    with pytest.raises(lc.ProviderResponseError, match="cannot be decoded"):
        decode_image(png[: len(png) // 2])
    corrupted = bytearray(png)
    corrupted[len(png) // 2] ^= 0xFF  # a flipped bit inside the compressed pixels: the chunk CRC fails
    with pytest.raises(lc.ProviderResponseError, match="cannot be decoded"):
        decode_image(bytes(corrupted))
    jpeg = _encode("JPEG", (256, 256))
    with pytest.raises(lc.ProviderResponseError, match="cannot be decoded"):
        decode_image(jpeg[: len(jpeg) // 2])
    with pytest.raises(lc.ProviderResponseError, match="declared as image/jpeg but its bytes are png"):
        decode_image(png, declared_type="image/jpeg")


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return len(body).to_bytes(4, "big") + kind + body + zlib.crc32(kind + body).to_bytes(4, "big")


def test_png_integrity_is_read_from_the_chunk_layout() -> None:
    png = _encode("PNG", (40, 30))
    signature, ihdr = png[:8], png[8:33]
    with_text = png[:33] + _png_chunk(b"tEXt", b"k\x00v") + png[33:]  # ancillary chunks are checked and kept
    assert (decode_image(with_text).width, decode_image(with_text).height) == (40, 30)
    assert decode_image(png + b"trailing").height == 30  # bytes after IEND do not matter, as for Pillow
    bad_crc = bytearray(with_text)
    bad_crc[33 + 8] ^= 0x01  # a flipped bit in the tEXt chunk, not in the pixels
    with pytest.raises(lc.ProviderResponseError, match="bad CRC in its 'tEXt' chunk") as bad:
        decode_image(bytes(bad_crc))
    assert bad.value.retryable
    with pytest.raises(lc.ProviderResponseError, match="first chunk is not IHDR"):
        decode_image(signature + png[33:])
    with pytest.raises(lc.ProviderResponseError, match="truncated before its IEND"):
        decode_image(png[:-12])  # IEND missing: the file was cut at a chunk boundary
    zero = signature + _png_chunk(b"IHDR", (0).to_bytes(4, "big") + ihdr[12:21]) + png[33:]
    with pytest.raises(lc.ProviderResponseError, match="size of 0x30"):
        decode_image(zero)


def test_png_pixel_cap_needs_no_pixels() -> None:
    huge = (70000).to_bytes(4, "big") * 2 + bytes([8, 2, 0, 0, 0])  # 70000x70000 RGB, declared only
    png = b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", huge) + _png_chunk(b"IEND", b"")
    with pytest.raises(lc.ProviderResponseError, match="70000x70000 pixels exceeds") as refused:
        decode_image(png)
    assert not refused.value.retryable


def test_decompression_bombs_are_refused() -> None:
    buf = io.BytesIO()
    Image.new("1", (12000, 12000)).save(buf, format="PNG")  # tiny file, 144 MP
    with pytest.raises(lc.ProviderResponseError, match=r"pixel|bomb"):
        decode_image(buf.getvalue())


@pytest.mark.parametrize("target", ["jpeg", "webp", "png"])
def test_conversion_keeps_size(target: str) -> None:
    decoded = decode_image(_encode("PNG"))
    converted = convert_image(decoded, target)
    assert sniff_format(converted.data) == target
    assert (converted.width, converted.height) == (32, 24)


def test_data_uris() -> None:
    png = _encode("PNG")
    data, media = decode_data_uri("data:image/png;base64," + base64.b64encode(png).decode())
    assert data == png and media == "image/png"
    with pytest.raises(lc.ProviderResponseError, match="base64"):
        decode_data_uri("data:image/png;base64,@@@@")
    with pytest.raises(lc.ProviderResponseError, match="malformed"):
        decode_data_uri("data:nocomma")


def test_loopback_detection() -> None:
    assert is_loopback_url("http://127.0.0.1:8000/x")
    assert is_loopback_url("http://localhost/x")
    assert is_loopback_url("http://[::1]:80/x")
    assert not is_loopback_url("http://10.0.0.1/x")
    assert not is_loopback_url("http://example.com/x")


async def test_download_validates_and_times(file_server: FileServer) -> None:
    file_server.routes["/a.png"] = Route(body=_encode("PNG"), headers={"Content-Type": "image/png"})
    async with httpx.AsyncClient() as client:
        image, seconds = await download_image(
            client, allow_loopback_http=True, url=file_server.url + "/a.png", provider="fal"
        )
    assert image.format == "png" and seconds > 0


async def test_download_follows_same_host_redirects_only(file_server: FileServer) -> None:
    file_server.routes["/a.png"] = Route(body=_encode("PNG"), headers={"Content-Type": "image/png"})
    file_server.routes["/r"] = Route(status=302, headers={"Location": "/a.png"})
    file_server.routes["/away"] = Route(status=302, headers={"Location": "https://elsewhere.invalid/a.png"})
    async with httpx.AsyncClient() as client:
        image, _ = await download_image(client, allow_loopback_http=True, url=file_server.url + "/r")
        assert image.format == "png"
        with pytest.raises(lc.ProviderResponseError, match="redirected to another host"):
            await download_image(client, allow_loopback_http=True, url=file_server.url + "/away")
    assert "/a.png" in file_server.hits


async def test_download_refuses_oversized_and_failed_responses(file_server: FileServer) -> None:
    file_server.routes["/big.png"] = Route(body=b"x" * 5000, headers={"Content-Type": "image/png"})
    file_server.routes["/500"] = Route(status=503, body=b"down")
    file_server.routes["/403"] = Route(status=403, body=b"no")
    async with httpx.AsyncClient() as client:
        with pytest.raises(lc.ProviderResponseError, match="exceeds the 1000-byte limit"):
            await download_image(client, allow_loopback_http=True, url=file_server.url + "/big.png", max_bytes=1000)
        with pytest.raises(lc.ProviderUnavailableError) as unavailable:
            await download_image(client, allow_loopback_http=True, url=file_server.url + "/500", provider="replicate")
        assert unavailable.value.status_code == 503 and unavailable.value.retryable
        with pytest.raises(lc.ProviderResponseError) as forbidden:
            await download_image(client, allow_loopback_http=True, url=file_server.url + "/403")
        assert forbidden.value.status_code == 403


async def test_download_refuses_plain_http_outside_loopback_and_reports_transport_errors() -> None:
    async with httpx.AsyncClient() as client:
        with pytest.raises(lc.ProviderResponseError, match="only https"):
            await download_image(client, "http://example.com/a.png")
        with pytest.raises(lc.ProviderResponseError, match="only https"):
            await download_image(client, "ftp://example.com/a.png")
        with pytest.raises(lc.ProviderUnavailableError, match="download failed"):
            await download_image(client, "http://127.0.0.1:9/a.png", allow_loopback_http=True)


async def test_plain_http_from_loopback_needs_an_opt_in(file_server: FileServer) -> None:
    file_server.routes["/a.png"] = Route(body=_encode("PNG"), headers={"Content-Type": "image/png"})
    async with httpx.AsyncClient() as client:
        with pytest.raises(lc.ProviderResponseError, match="only https URLs are allowed"):
            await download_image(client, file_server.url + "/a.png")
    assert file_server.hits == []  # nothing was fetched


async def test_a_generator_on_a_real_api_refuses_loopback_output_urls(file_server: FileServer) -> None:
    # A hostile answer from an https API naming a local service is not fetched; a loopback API root (a
    # sandbox, a local server) or an explicit opt-in allows it.
    file_server.routes["/a.png"] = Route(body=_encode("PNG"), headers={"Content-Type": "image/png"})
    real = lc.ReplicateGenerator(api_key="r8_x", base_url="https://api.replicate.com")
    local = lc.ReplicateGenerator(api_key="r8_x", base_url="http://127.0.0.1:9")
    async with httpx.AsyncClient() as client:
        with pytest.raises(lc.ProviderResponseError, match="only https"):
            await real._download_output(client, file_server.url + "/a.png", "p1")
        assert file_server.hits == []
        image, _ = await local._download_output(client, file_server.url + "/a.png", "p2")
        assert image.format == "png"
        real.allow_loopback_downloads = True
        image, _ = await real._download_output(client, file_server.url + "/a.png", "p3")
        assert image.format == "png"
