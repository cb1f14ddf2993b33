"""Replicate's wire format: the request as model inputs and create headers, and predictions read back
(status, outputs, metrics, seed, errors)."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from pydantic import SecretStr

from lightning_client._log import mask_secrets
from lightning_client.errors import (
    ContentFilteredError,
    GenerationTimeoutError,
    LightningError,
    ProviderResponseError,
    ProviderUnavailableError,
)
from lightning_client.generator import AttemptContext
from lightning_client.images import is_loopback_host
from lightning_client.providers._http import auth_header, parse_timestamp

__all__ = [
    "MAX_OUTPUTS",
    "MAX_WAIT_S",
    "TERMINAL",
    "WEBHOOK_EVENTS",
    "create_headers",
    "inputs",
    "job_error",
    "output_urls",
    "predict_time",
    "queue_s",
    "ready",
    "seed_used",
    "webhook_fields",
]

#: Statuses after which a prediction never changes (`aborted` arrived with deadlines, 2025-10).
TERMINAL = frozenset({"succeeded", "failed", "canceled", "aborted"})
#: The model's schema allows num_outputs 1..4; larger requests are split over several predictions.
MAX_OUTPUTS = 4
#: The longest `Prefer: wait` Replicate honours.
MAX_WAIT_S = 60
#: Replicate's minimum `Cancel-After` (seconds from creation).
MIN_CANCEL_AFTER_S = 5
#: Seconds kept between the server-side `Prefer: wait` and our deadline, so the create answers before it.
_WAIT_MARGIN_S = 1.0
#: Model inputs we set by default rather than from the request: provider options may replace them.
_DEFAULT_INPUTS = frozenset({"scheduler"})
_SEED_LOG = re.compile(r"Using seed:\s*(\d+)")
_NSFW = re.compile(r"nsfw", re.IGNORECASE)
#: The events a Replicate webhook can be sent for (`webhook_events_filter`).
WEBHOOK_EVENTS = ("start", "output", "logs", "completed")


def inputs(ctx: AttemptContext) -> list[dict[str, Any]]:
    """One model input per prediction; prediction k of a split request uses seed + k."""
    req = ctx.request
    counts = [min(MAX_OUTPUTS, req.num_images - start) for start in range(0, req.num_images, MAX_OUTPUTS)]
    if len(counts) > 1:
        ctx.warn(
            "emulated",
            "num_images",
            f"split into {len(counts)} concurrent predictions of at most {MAX_OUTPUTS} images; "
            "prediction k uses seed + k",
        )
    payloads = []
    for k, count in enumerate(counts):
        payload: dict[str, Any] = {
            "prompt": req.prompt,
            # Sent even when empty: the model's default ("worst quality, low quality") would otherwise
            # apply silently whenever guidance_scale > 1.
            "negative_prompt": req.negative_prompt or "",
            "width": req.width,
            "height": req.height,
            "num_outputs": count,
            "num_inference_steps": req.steps,
            "guidance_scale": req.guidance_scale,
            "seed": (req.seed + k) % 2**32,
            "scheduler": "K_EULER",
            "disable_safety_checker": not req.safety_checker,
        }
        payloads.append(payload)
    extra, refused = req.extra_options("replicate", payloads[0].keys() - _DEFAULT_INPUTS)
    for key in refused:
        ctx.warn(
            "ignored",
            f"provider_options.replicate.{key}",
            "a validated field sets it; the request's value was sent",
        )
    return [{**payload, **extra} for payload in payloads]


def create_headers(token: SecretStr, remaining: float | None, wait_s: int) -> tuple[dict[str, str], float | None]:
    """Headers for a create (`Prefer: wait` up to `wait_s`, `Cancel-After`), and the read timeout it needs
    (None: the client default)."""
    headers = auth_header("Bearer", token)
    wait = wait_s if remaining is None else min(wait_s, math.floor(remaining - _WAIT_MARGIN_S))
    read: float | None = None
    if wait >= 1:
        headers["Prefer"] = f"wait={wait}"
        read = wait + 5.0
    if remaining is not None and remaining >= MIN_CANCEL_AFTER_S:
        # Server-side backstop for our own cancel; below the minimum only our cancel applies.
        headers["Cancel-After"] = f"{math.ceil(remaining)}s"
    return headers, read


def webhook_fields(webhook: str | None, events: Sequence[str] | None) -> dict[str, Any]:
    """The create body's webhook fields; bad values raise ValueError naming the option and what is allowed."""
    if webhook is None:
        if events is not None:
            raise ValueError("webhook_events needs webhook (the URL the events are sent to)")
        return {}
    parts = urlsplit(webhook) if isinstance(webhook, str) else None
    if (
        parts is None
        or not parts.hostname
        or not (parts.scheme == "https" or (parts.scheme == "http" and is_loopback_host(parts.hostname)))
    ):
        raise ValueError(f"webhook must be an https:// URL (http:// only to a loopback host), got {webhook!r}")
    fields: dict[str, Any] = {"webhook": webhook}
    if events is not None:
        chosen = [events] if isinstance(events, str) else list(events)
        unknown = [e for e in chosen if e not in WEBHOOK_EVENTS]
        if unknown or not chosen:
            raise ValueError(
                f"webhook_events must be a non-empty subset of {', '.join(WEBHOOK_EVENTS)}; got {chosen!r}"
            )
        fields["webhook_events_filter"] = list(dict.fromkeys(chosen))
    return fields


def ready(prediction: dict[str, Any]) -> bool:
    """Terminal, or `processing` with outputs already present (sync-mode file outputs)."""
    status = prediction.get("status")
    return status in TERMINAL or (status == "processing" and bool(prediction.get("output")))


def output_urls(prediction: dict[str, Any], *, provider: str) -> list[str]:
    """The prediction's output file URLs; removed, malformed or empty outputs are errors of the taxonomy."""
    pid = prediction["id"]
    output = prediction.get("output")
    if prediction.get("data_removed") or output is None:
        raise ProviderResponseError(
            "the prediction's outputs were removed (data_removed) before they were downloaded",
            provider=provider,
            request_id=pid,
            retryable=True,
        )
    urls = [output] if isinstance(output, str) else output
    if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
        raise ProviderResponseError(
            f"unexpected output shape: {type(output).__name__}", provider=provider, request_id=pid, retryable=True
        )
    if not urls:
        raise ContentFilteredError(
            "the prediction returned no images (all withheld by the safety checker)",
            provider=provider,
            request_id=pid,
        )
    return urls


def job_error(prediction: dict[str, Any], *, provider: str) -> LightningError:
    """The error of a prediction that ended `failed`, `aborted` or `canceled`."""
    pid, status = prediction["id"], prediction.get("status")
    error = mask_secrets(str(prediction.get("error") or ""))
    if status == "failed":
        if _NSFW.search(error):
            return ContentFilteredError(f"prediction failed: {error}", provider=provider, request_id=pid)
        # Input errors are rejected at create (422); a prediction that fails later may succeed when re-run.
        return ProviderResponseError(
            f"prediction failed: {error or 'no error message'}", provider=provider, request_id=pid, retryable=True
        )
    if status == "aborted":
        return GenerationTimeoutError(
            "prediction aborted: its deadline passed before it started (not charged)",
            provider=provider,
            request_id=pid,
        )
    return ProviderUnavailableError(
        "prediction was canceled by the provider (or its Cancel-After deadline)", provider=provider, request_id=pid
    )


def predict_time(prediction: dict[str, Any]) -> float | None:
    """`metrics.predict_time` in seconds (None when not reported)."""
    metrics = prediction.get("metrics")
    value = metrics.get("predict_time") if isinstance(metrics, dict) else None
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def queue_s(prediction: dict[str, Any]) -> float | None:
    """Seconds from `created_at` to `started_at` (None when either is missing)."""
    created, started = parse_timestamp(prediction.get("created_at")), parse_timestamp(prediction.get("started_at"))
    return None if created is None or started is None else max(0.0, (started - created).total_seconds())


def seed_used(ctx: AttemptContext, prediction: dict[str, Any]) -> int:
    """The seed the model logged (`Using seed: N`); a mismatch with the request is a warning."""
    logs = prediction.get("logs")
    match = _SEED_LOG.search(logs) if isinstance(logs, str) else None
    if match is None:
        return ctx.request.seed
    seed = int(match.group(1))
    if seed != ctx.request.seed:
        ctx.warn("ignored", "seed", f"requested seed {ctx.request.seed} but the model logged 'Using seed: {seed}'")
    return seed
