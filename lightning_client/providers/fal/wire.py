"""fal's wire format: the request as the endpoint's arguments, and its answers read back (images, NSFW flags,
billable units, timings, seed, error types)."""

from __future__ import annotations

import math
from typing import Any

import httpx

from lightning_client._log import mask_secrets
from lightning_client.errors import (
    ContentFilteredError,
    GenerationTimeoutError,
    InvalidRequestError,
    LightningError,
    ProviderResponseError,
    ProviderUnavailableError,
)
from lightning_client.generator import AttemptContext
from lightning_client.request import GenerationRequest

__all__ = [
    "FILTERED_TYPES",
    "PRESETS",
    "TIMEOUT_TYPES",
    "arguments",
    "billable_units",
    "completed_error",
    "image_urls",
    "inference_s",
    "nsfw_flags",
    "request_timeout",
    "seed_used",
]

#: fal's named sizes; a request matching one exactly sends the name.
PRESETS: dict[tuple[int, int], str] = {
    (1024, 1024): "square_hd",
    (512, 512): "square",
    (768, 1024): "portrait_4_3",
    (576, 1024): "portrait_16_9",
    (1024, 768): "landscape_4_3",
    (1024, 576): "landscape_16_9",
}
#: Error types reported in a COMPLETED status, mapped onto the taxonomy (fal's request-error table).
TIMEOUT_TYPES = frozenset({"request_timeout", "startup_timeout"})
FILTERED_TYPES = frozenset({"content_policy_violation", "nsfw_content_detected"})
_UNAVAILABLE_PREFIXES = ("runner_", "internal_", "client_")


def arguments(ctx: AttemptContext) -> dict[str, Any]:
    """The endpoint's input for the attempt's request (provider options merged, refused ones warned of)."""
    req = ctx.request
    preset = PRESETS.get((req.width, req.height))
    body: dict[str, Any] = {
        "prompt": req.prompt,
        "image_size": preset or {"width": req.width, "height": req.height},
        # The endpoint declares a string enum; whether integers are coerced is undocumented.
        "num_inference_steps": str(req.steps),
        "num_images": req.num_images,
        "seed": req.seed,
        "enable_safety_checker": req.safety_checker,
        # webp is converted locally from lossless png.
        "format": "jpeg" if req.output_format == "jpeg" else "png",
    }
    extra, refused = req.extra_options("fal", body)
    for key in refused:
        ctx.warn("ignored", f"provider_options.fal.{key}", "a validated field sets it; the request's value was sent")
    body.update(extra)
    return body


def request_timeout(remaining: float | None) -> dict[str, str]:
    """`X-Fal-Request-Timeout` for the time left (none without a deadline)."""
    if remaining is None:
        return {}
    # Time-to-start deadline on fal's side. fal-client refuses values <= 1 s, fal's docs > 0.1 s:
    # never send less than 1 s; our own cancel covers a shorter deadline.
    return {"X-Fal-Request-Timeout": f"{max(1.0, math.floor(remaining * 10) / 10):.1f}"}


def image_urls(output: dict[str, Any], *, provider: str, request_id: str) -> list[str]:
    """The result's image URLs; a result without a list of images with URLs is a (retryable) response error."""
    entries = output.get("images")
    if not isinstance(entries, list) or not all(isinstance(e, dict) and isinstance(e.get("url"), str) for e in entries):
        raise ProviderResponseError(
            "result has no list of images with urls", provider=provider, request_id=request_id, retryable=True
        )
    return [e["url"] for e in entries]


def nsfw_flags(
    request: GenerationRequest, output: dict[str, Any], images: int, *, provider: str, request_id: str | None
) -> list[bool]:
    """fal's `has_nsfw_concepts` per image; ContentFilteredError when the safety checker flagged every one."""
    flags = output.get("has_nsfw_concepts")
    nsfw = [bool(f) for f in flags] if isinstance(flags, list) else []
    if request.safety_checker and nsfw and len(nsfw) == images and all(nsfw):
        raise ContentFilteredError(
            "every image was flagged by the safety checker (has_nsfw_concepts)",
            provider=provider,
            request_id=request_id,
        )
    return nsfw


def billable_units(response: httpx.Response) -> float | None:
    """`x-fal-billable-units` of a result answer (None when absent or unreadable)."""
    value = response.headers.get("x-fal-billable-units")
    try:
        return None if value is None else float(value)
    except ValueError:
        return None


def inference_s(completed: dict[str, Any], output: dict[str, Any]) -> float | None:
    """Inference seconds: the COMPLETED status's `metrics.inference_time`, else the output's `timings.inference`."""
    metrics = completed.get("metrics")
    value = metrics.get("inference_time") if isinstance(metrics, dict) else None
    if not isinstance(value, (int, float)):
        timings = output.get("timings")
        value = timings.get("inference") if isinstance(timings, dict) else None
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def seed_used(ctx: AttemptContext, output: dict[str, Any]) -> int:
    """The seed fal reports (the request's when none); a mismatch with the request is a warning."""
    seed = output.get("seed")
    if not isinstance(seed, int) or isinstance(seed, bool):
        return ctx.request.seed
    if seed != ctx.request.seed:
        ctx.warn("ignored", "seed", f"requested seed {ctx.request.seed} but fal reports seed {seed}")
    return seed


def completed_error(message: str, error_type: str, request_id: str) -> LightningError:
    """Map a COMPLETED status that carries `error` / `error_type`."""
    text = f"request completed with an error: {mask_secrets(message)}" + (f" ({error_type})" if error_type else "")
    fields: dict[str, Any] = {"provider": "fal", "request_id": request_id}
    if error_type in FILTERED_TYPES:
        return ContentFilteredError(text, **fields)
    if error_type in TIMEOUT_TYPES:
        return GenerationTimeoutError(text, **fields)
    if error_type.startswith(_UNAVAILABLE_PREFIXES):
        return ProviderUnavailableError(text, **fields)
    if error_type in ("bad_request", "validation_error"):
        return InvalidRequestError(text, **fields)
    return ProviderResponseError(text, retryable=True, **fields)
