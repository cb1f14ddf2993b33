"""The OpenAI Images API shape: its request body mapped to a `GenerationRequest`, its response built from a result."""

from __future__ import annotations

import base64
import re
import time
from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from lightning_client.errors import InvalidRequestError
from lightning_client.request import MAX_IMAGES, GenerationRequest
from lightning_client.result import GenerationResult, GenerationWarning

__all__ = ["ImagesRequest", "images_response"]

#: OpenAI fields accepted for compatibility that SDXL-Lightning has no use for (a warning says so).
_IGNORED = ("quality", "style", "background", "moderation", "output_compression")
#: `size` as OpenAI writes it: ASCII digits only (`str.isdigit` also accepts e.g. superscripts).
_SIZE = re.compile(r"([0-9]{1,5})x([0-9]{1,5})")


class ImagesRequest(BaseModel):
    """`POST /v1/images/generations`: OpenAI's fields plus ours (`steps`, `seed`, ...).

    `response_format` defaults to `b64_json`; `url` images are served by this server for its
    file retention. `model` is accepted and reported back, the configured generator serves it.
    """

    model_config = ConfigDict(extra="forbid")

    prompt: str
    model: str | None = None
    n: int = Field(default=1, ge=1, le=MAX_IMAGES)
    size: str | None = None
    response_format: Literal["b64_json", "url"] = "b64_json"
    output_format: Literal["png", "jpeg", "webp"] = "png"
    user: str | None = None
    stream: Literal[False] | None = None
    quality: str | None = None
    style: str | None = None
    background: str | None = None
    moderation: str | None = None
    output_compression: int | None = None
    steps: int | None = None
    seed: int | None = None
    negative_prompt: str | None = None
    aspect_ratio: str | None = None
    providers: list[str] | None = None
    timeout_s: float | None = None

    def to_request(self) -> GenerationRequest:
        """The normalized request (raises `InvalidRequestError` naming the field, OpenAI names for n/size)."""
        fields: dict[str, Any] = {"prompt": self.prompt, "num_images": self.n, "output_format": self.output_format}
        if self.size is not None and self.size != "auto":
            match = _SIZE.fullmatch(self.size.lower())
            if match is None:
                raise InvalidRequestError(
                    f"size={self.size!r} is invalid; allowed: 'WxH' with multiples of 64 (e.g. '1024x1024') or 'auto'",
                    field="size",
                )
            fields["width"], fields["height"] = int(match[1]), int(match[2])
        for name in ("steps", "seed", "negative_prompt", "aspect_ratio", "timeout_s"):
            value = getattr(self, name)
            if value is not None:
                fields[name] = value
        return GenerationRequest(**fields)

    def ignored_warnings(self) -> list[GenerationWarning]:
        return [
            GenerationWarning(kind="ignored", setting=name, message="OpenAI setting with no SDXL-Lightning equivalent")
            for name in _IGNORED
            if getattr(self, name) is not None
        ]


def images_response(
    body: ImagesRequest,
    result: GenerationResult,
    *,
    store: Callable[[bytes, str, str], str] | None,
) -> dict[str, Any]:
    """OpenAI's response plus top-level `seed`, `provider`, `model`, `request_id`, `served_by`, `timings`, `cost`, `warnings`.

    `store(data, content_type, extension)` returns the URL of a stored image (for `url`).
    """
    data: list[dict[str, Any]] = []
    for image in result.images:
        if body.response_format == "url" and store is not None:
            data.append({"url": store(image.data, image.content_type, image.extension), "revised_prompt": None})
        else:
            data.append({"b64_json": base64.b64encode(image.data).decode("ascii"), "revised_prompt": None})
    first = result.images[0] if result.images else None
    warnings = [*result.warnings, *body.ignored_warnings()]
    return {
        "created": int(time.time()),
        "data": data,
        "output_format": body.output_format,
        "size": f"{first.width}x{first.height}" if first else body.size,
        "seed": result.seed,
        "provider": result.provider,
        "model": result.model,
        "request_id": result.request_id,
        "served_by": result.served_by,
        "timings": result.timings.model_dump(mode="json"),
        "cost": result.cost.model_dump(mode="json"),
        "warnings": [w.model_dump(mode="json") for w in warnings],
    }
