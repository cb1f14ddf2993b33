"""`GenerationRequest`: the one normalized vocabulary every generator maps from."""

from __future__ import annotations

import math
import secrets
from collections.abc import Collection
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from lightning_client._suggest import did_you_mean
from lightning_client.errors import InvalidRequestError

__all__ = [
    "MAX_IMAGES",
    "MAX_PROMPT_CHARS",
    "SDXL_BUCKETS",
    "GenerationRequest",
    "OutputFormat",
    "bucket_for_aspect_ratio",
    "fit_aspect_ratio",
    "ratio_of",
]

OutputFormat = Literal["png", "jpeg", "webp"]

#: SDXL's training resolutions (width, height), landscape and portrait.
SDXL_BUCKETS: tuple[tuple[int, int], ...] = (
    (1024, 1024),
    (1152, 896),
    (896, 1152),
    (1216, 832),
    (832, 1216),
    (1344, 768),
    (768, 1344),
    (1536, 640),
    (640, 1536),
)

STEPS = (1, 2, 4, 8)
SEED_MAX = 2**32 - 1
MIN_SIDE, MAX_SIDE = 64, 4096
#: Sides are multiples of 64: every SDXL bucket and every fal preset is, and the SDXL UNet
#: (latent / 8, then two 2x downsamplings) gets sides it divides evenly. This is stricter
#: than the VAE's factor of 8 on purpose: e.g. 1000 px would be padded inside the UNet.
SIDE_MULTIPLE = 64
#: Most images one request asks for.
MAX_IMAGES = 8
#: Longest prompt (and negative prompt) accepted, in characters. SDXL's text encoders read the first
#: 77 tokens; the bound keeps an oversized prompt from being forwarded to a provider at all.
MAX_PROMPT_CHARS = 4000

# What each field accepts, quoted in every validation message.
_ALLOWED: dict[str, str] = {
    "prompt": f"a non-empty string of at most {MAX_PROMPT_CHARS} characters",
    "steps": "1, 2, 4 or 8",
    "width": f"a multiple of {SIDE_MULTIPLE} from {MIN_SIDE} to {MAX_SIDE}",
    "height": f"a multiple of {SIDE_MULTIPLE} from {MIN_SIDE} to {MAX_SIDE}",
    "aspect_ratio": "'W:H' with positive numbers, e.g. '16:9'",
    "seed": f"an integer from 0 to {SEED_MAX}",
    "num_images": f"an integer from 1 to {MAX_IMAGES}",
    "output_format": "'png', 'jpeg' or 'webp'",
    "negative_prompt": f"a string of at most {MAX_PROMPT_CHARS} characters (optional)",
    "guidance_scale": "a number from 0 to 50",
    "safety_checker": "true or false",
    "timeout_s": "a positive number of seconds (optional)",
    "allow_emulation": "true or false",
    "provider_options": "a mapping of provider name to a mapping of payload fields",
}


def ratio_of(aspect_ratio: str) -> float:
    """'W:H' as the number W / H."""
    parts = aspect_ratio.split(":")
    try:
        w, h = (float(p) for p in parts)
    except ValueError:
        raise ValueError("not of the form W:H") from None
    if not (w > 0 and h > 0 and math.isfinite(w) and math.isfinite(h)):
        raise ValueError("both sides must be positive numbers")
    return w / h


def bucket_for_aspect_ratio(aspect_ratio: str) -> tuple[int, int]:
    """The SDXL bucket whose ratio is nearest (on a log scale) to 'W:H'."""
    target = math.log(ratio_of(aspect_ratio))
    return min(SDXL_BUCKETS, key=lambda b: abs(math.log(b[0] / b[1]) - target))


#: Largest ratio difference (relative, on a log scale) still read as "the same ratio" when fitting.
RATIO_TOLERANCE = 0.01
#: Beyond this difference no fitted size keeps the ratio: the request is refused instead.
RATIO_LIMIT = 0.1


def fit_aspect_ratio(aspect_ratio: str, min_side: int, max_side: int) -> tuple[int, int] | None:
    """The SDXL bucket for 'W:H' when its sides fit in min_side..max_side, else the nearest size that does.

    Nearest: sides multiples of `SIDE_MULTIPLE`, the ratio within `RATIO_TOLERANCE` of W:H
    (the closest one when none is), and of those the largest not above the bucket's area
    (the smallest above it when none is below). None when no size comes within `RATIO_LIMIT`.
    """
    bucket = bucket_for_aspect_ratio(aspect_ratio)
    if all(min_side <= side <= max_side for side in bucket):
        return bucket
    target, area = math.log(ratio_of(aspect_ratio)), bucket[0] * bucket[1]
    lo = -(-min_side // SIDE_MULTIPLE) * SIDE_MULTIPLE
    sides = range(lo, max_side + 1, SIDE_MULTIPLE)
    sizes = [(w, h) for w in sides for h in sides]
    if not sizes:
        return None

    def error(size: tuple[int, int]) -> float:
        return abs(math.log(size[0] / size[1]) - target)

    best = min(error(s) for s in sizes)
    if best > RATIO_LIMIT:
        return None
    close = [s for s in sizes if error(s) <= max(best, RATIO_TOLERANCE) + 1e-12]
    below = [s for s in close if s[0] * s[1] <= area]
    if below:
        return max(below, key=lambda s: (s[0] * s[1], -error(s)))
    return min(close, key=lambda s: (s[0] * s[1], error(s)))


def _describe(error: Any) -> tuple[str, str]:
    loc = [str(p) for p in error.get("loc", ()) if not isinstance(p, int)]
    field = loc[0] if loc else ""
    reason = str(error.get("msg", "invalid")).removeprefix("Value error, ")
    if not field and ": " in reason:  # model-level rules say "field: why"
        field, reason = reason.split(": ", 1)
        accepted = _ALLOWED.get(field)
        return field, f"{field}: {reason}" + (f"; allowed: {accepted}" if accepted else "")
    if error.get("type") == "extra_forbidden":
        allowed = ", ".join(sorted(GenerationRequest.model_fields))
        return (
            field,
            f"unknown field {field!r}{did_you_mean(field, GenerationRequest.model_fields)}; the fields are: {allowed}",
        )
    accepted = _ALLOWED.get(field)
    if error.get("type") == "missing":  # its input is the whole body: not worth repeating
        return field, f"{field} is required" + (f"; allowed: {accepted}" if accepted else "")
    if error.get("type") == "string_too_long":
        return field, f"{field} has {len(error.get('input', ''))} characters; allowed: {accepted or reason}"
    shown = repr(error.get("input"))
    if len(shown) > 60:
        shown = shown[:57] + "..."
    if accepted is None:
        return field, f"{field}={shown} is invalid ({reason})"
    if error.get("type") != "value_error":  # pydantic's own wording would only restate what is accepted
        return field, f"{field}={shown} is invalid; allowed: {accepted}"
    return field, f"{field}={shown} is invalid ({reason}); allowed: {accepted}"


def _as_invalid_request(exc: ValidationError) -> InvalidRequestError:
    for error in exc.errors():
        nested = error.get("ctx", {}).get("error")
        if isinstance(nested, InvalidRequestError):  # pydantic validated through __init__: already described
            return nested
    described = [_describe(e) for e in exc.errors()]
    fields = [f for f, _ in described]
    message = "Invalid GenerationRequest: " + "; ".join(text for _, text in described)
    err = InvalidRequestError(message, field=fields[0] if fields else None)
    err.fields = fields  # type: ignore[attr-defined]
    return err


class GenerationRequest(BaseModel):
    """A text-to-image request in provider-neutral terms, validated at construction.

    Invalid values raise `InvalidRequestError` naming the field and what it accepts.
    The seed is drawn at construction when not given, so every result is reproducible.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True)

    prompt: str = Field(max_length=MAX_PROMPT_CHARS)
    steps: Literal[1, 2, 4, 8] = 4
    width: int = Field(default=1024)
    height: int = Field(default=1024)
    aspect_ratio: str | None = None
    seed: int = Field(default_factory=lambda: secrets.randbelow(SEED_MAX + 1), ge=0, le=SEED_MAX)
    num_images: int = Field(default=1, ge=1, le=MAX_IMAGES)
    output_format: OutputFormat = "png"
    negative_prompt: str | None = Field(default=None, max_length=MAX_PROMPT_CHARS)
    guidance_scale: float = Field(default=0.0, ge=0.0, le=50.0)
    safety_checker: bool = True
    timeout_s: float | None = Field(default=None, gt=0)
    allow_emulation: bool = True
    provider_options: dict[str, dict[str, Any]] = Field(default_factory=dict)

    _SIZE_FIELDS: ClassVar[tuple[str, str]] = ("width", "height")

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise _as_invalid_request(exc) from None

    @classmethod
    def model_validate(cls, obj: Any, *args: Any, **kwargs: Any) -> GenerationRequest:
        try:
            return super().model_validate(obj, *args, **kwargs)
        except ValidationError as exc:
            raise _as_invalid_request(exc) from None

    @classmethod
    def model_validate_json(cls, json_data: str | bytes | bytearray, *args: Any, **kwargs: Any) -> GenerationRequest:
        try:
            return super().model_validate_json(json_data, *args, **kwargs)
        except ValidationError as exc:
            raise _as_invalid_request(exc) from None

    @model_validator(mode="before")
    @classmethod
    def _size_from_aspect_ratio(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        if data.get("seed", 0) is None:
            del data["seed"]
        ratio = data.get("aspect_ratio")
        if ratio is None:
            return data
        if not isinstance(ratio, str):
            return data  # the field's own type check reports it
        if data.get("width") is not None or data.get("height") is not None:
            # A serialized request carries the size its ratio resolved to: that is consistent.
            try:
                consistent = (data.get("width"), data.get("height")) == bucket_for_aspect_ratio(ratio)
            except ValueError:
                consistent = False
            if consistent:
                return data
            # Not raised as InvalidRequestError directly: pydantic reports it with the field name.
            raise ValueError("aspect_ratio: give either aspect_ratio or width/height, not both")
        try:
            data["width"], data["height"] = bucket_for_aspect_ratio(ratio)
        except ValueError:
            pass  # the field validator reports it
        return data

    @field_validator("prompt")
    @classmethod
    def _prompt_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("empty after stripping whitespace")
        return value

    @field_validator("steps", mode="before")
    @classmethod
    def _steps_strict(cls, value: Any) -> Any:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError("must be an integer")
        return value

    @field_validator("width", "height")
    @classmethod
    def _side(cls, value: int) -> int:
        if not MIN_SIDE <= value <= MAX_SIDE:
            raise ValueError(f"out of range {MIN_SIDE}..{MAX_SIDE}")
        if value % SIDE_MULTIPLE:
            raise ValueError(f"not a multiple of {SIDE_MULTIPLE}")
        return value

    @field_validator("aspect_ratio")
    @classmethod
    def _ratio(cls, value: str | None) -> str | None:
        if value is not None:
            bucket_for_aspect_ratio(value)
        return value

    @field_validator("provider_options")
    @classmethod
    def _options_keys(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        for key in value:
            if not key.strip():
                raise ValueError("provider names must be non-empty")
        return value

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) in pixels."""
        return self.width, self.height

    def options_for(self, provider: str) -> dict[str, Any]:
        """The escape-hatch payload fields for one provider (a copy)."""
        return dict(self.provider_options.get(provider, {}))

    def extra_options(self, provider: str, mapped: Collection[str]) -> tuple[dict[str, Any], list[str]]:
        """One provider's escape-hatch fields that add to its payload, and the names of those refused.

        `mapped` holds the payload fields the provider fills from this request's validated fields;
        an option naming one of them is refused, so provider options never override validation.
        """
        options = self.options_for(provider)
        refused = sorted(key for key in options if key in mapped)
        return {k: v for k, v in options.items() if k not in mapped}, refused
