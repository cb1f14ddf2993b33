"""The input schema of `fal-ai/fast-lightning-sdxl` and FastAPI/pydantic-style 422 `detail` lists.

Fields, enums and defaults follow the project's fal reference (fal-js `FastLightningSdxlInput`, fal's
toolkit `ImageSize` bounds gt=0, le=14142). Unknown fields are ignored, as pydantic models do by default.
`num_inference_steps` is a string enum: an integer 4 is rejected (whether fal coerces it is undocumented,
so the sandbox takes the strict reading).
"""

from __future__ import annotations

from typing import Any

__all__ = ["APP_ID", "PRESETS", "image_size", "validate_input"]

APP_ID = "fal-ai/fast-lightning-sdxl"
PRESETS: dict[str, tuple[int, int]] = {
    "square_hd": (1024, 1024),
    "square": (512, 512),
    "portrait_4_3": (768, 1024),
    "portrait_16_9": (576, 1024),
    "landscape_4_3": (1024, 768),
    "landscape_16_9": (1024, 576),
}
STEPS = ("1", "2", "4", "8")
FORMATS = ("jpeg", "png")
SAFETY_VERSIONS = ("v1", "v2")
MAX_SIDE = 14142
DEFAULTS: dict[str, Any] = {
    "image_size": "square_hd",
    "num_inference_steps": "4",
    "num_images": 1,
    "seed": None,
    "sync_mode": False,
    "enable_safety_checker": True,
    "safety_checker_version": "v1",
    "format": "jpeg",
    "expand_prompt": False,
    "embeddings": [],
    "request_id": "",
}


def _choices(values: tuple[str, ...]) -> str:
    quoted = [f"'{v}'" for v in values]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + f" or {quoted[-1]}"


def _error(kind: str, loc: list[str | int], msg: str, value: Any, ctx: dict[str, Any] | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"type": kind, "loc": ["body", *loc], "msg": msg, "input": value}
    if ctx:
        error["ctx"] = ctx
    return error


def _is_int(value: Any) -> bool:
    return not isinstance(value, bool) and (isinstance(value, int) or (isinstance(value, float) and value.is_integer()))


def _check_choice(kind: str, name: str, value: Any, choices: tuple[str, ...]) -> list[dict[str, Any]]:
    if value in choices and isinstance(value, str):
        return []
    expected = _choices(choices)
    return [_error(kind, [name], f"Input should be {expected}", value, {"expected": expected})]


def _check_int(
    loc: list[str | int], value: Any, ge: int | None = None, gt: int | None = None, le: int | None = None
) -> list[dict[str, Any]]:
    if not _is_int(value):
        return [_error("int_type", loc, "Input should be a valid integer", value)]
    if ge is not None and value < ge:
        return [_error("greater_than_equal", loc, f"Input should be greater than or equal to {ge}", value, {"ge": ge})]
    if gt is not None and value <= gt:
        return [_error("greater_than", loc, f"Input should be greater than {gt}", value, {"gt": gt})]
    if le is not None and value > le:
        return [_error("less_than_equal", loc, f"Input should be less than or equal to {le}", value, {"le": le})]
    return []


def _check_size(value: Any) -> list[dict[str, Any]]:
    if isinstance(value, str):
        return _check_choice("literal_error", "image_size", value, tuple(PRESETS))
    if not isinstance(value, dict):
        return [
            _error(
                "model_type",
                ["image_size"],
                "Input should be a valid dictionary or object to extract fields from",
                value,
            )
        ]
    errors: list[dict[str, Any]] = []
    for side in ("width", "height"):
        errors += _check_int(["image_size", side], value.get(side, 512), gt=0, le=MAX_SIDE)
    return errors


def validate_input(payload: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(input with defaults filled in, pydantic-style errors)."""
    if not isinstance(payload, dict):
        return {}, [
            {
                "type": "model_attributes_type",
                "loc": ["body"],
                "msg": "Input should be a valid dictionary or object to extract fields from",
                "input": payload,
            }
        ]
    errors: list[dict[str, Any]] = []
    if "prompt" not in payload:
        errors.append(_error("missing", ["prompt"], "Field required", payload))
    elif not isinstance(payload["prompt"], str):
        errors.append(_error("string_type", ["prompt"], "Input should be a valid string", payload["prompt"]))
    filled = {**DEFAULTS, **payload}
    errors += _check_size(filled["image_size"])
    errors += _check_choice("enum", "num_inference_steps", filled["num_inference_steps"], STEPS)
    errors += _check_int(["num_images"], filled["num_images"], ge=1, le=8)
    if filled["seed"] is not None:
        errors += _check_int(["seed"], filled["seed"])
    for name in ("sync_mode", "enable_safety_checker", "expand_prompt"):
        if not isinstance(filled[name], bool):
            errors.append(_error("bool_type", [name], "Input should be a valid boolean", filled[name]))
    errors += _check_choice("enum", "safety_checker_version", filled["safety_checker_version"], SAFETY_VERSIONS)
    errors += _check_choice("enum", "format", filled["format"], FORMATS)
    if not isinstance(filled["embeddings"], list):
        errors.append(_error("list_type", ["embeddings"], "Input should be a valid list", filled["embeddings"]))
    if not isinstance(filled["request_id"], str):
        errors.append(_error("string_type", ["request_id"], "Input should be a valid string", filled["request_id"]))
    return filled, errors


def image_size(filled: dict[str, Any]) -> tuple[int, int]:
    """(width, height) of a validated input."""
    size = filled["image_size"]
    if isinstance(size, str):
        return PRESETS[size]
    return int(size.get("width", 512)), int(size.get("height", 512))
