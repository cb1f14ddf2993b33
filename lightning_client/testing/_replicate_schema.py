"""The input schema of `bytedance/sdxl-lightning-4step` (version 5599ed30...) and Replicate-style validation.

Fields, defaults and bounds follow the model's published API page / `predict.py` (see the project's
Replicate reference). Messages and `invalid_fields` types follow the JSON-schema validator wording seen in
Replicate's 422 responses ("Must be less than or equal to 4", "prompt is required", "... must be one of the
following: ...", "Invalid type. Expected: integer, given: string").

Known inputs are validated (types, ranges, enums); inputs the schema does not have are ignored, as
Replicate does: cog PR #2943 removed `additionalProperties: false` from model input validation because
refusing them broke backwards compatibility, and Replicate's 2024-05-01 changelog keeps
`additional_property_not_allowed` for top-level properties only (checked by the app, not here).
"""

from __future__ import annotations

from typing import Any

__all__ = ["MODEL", "OPENAPI_SCHEMA", "VERSION", "ignored_input_warning", "validate_input", "validation_detail"]

MODEL = "bytedance/sdxl-lightning-4step"
VERSION = "5599ed30703defd1d160a25a63321b4dec97101d98b4674bcc56e41f62f35637"
SCHEDULERS = (
    "DDIM",
    "DPMSolverMultistep",
    "HeunDiscrete",
    "KarrasDPM",
    "K_EULER_ANCESTRAL",
    "K_EULER",
    "PNDM",
    "DPM++2MSDE",
)

_INPUT: dict[str, dict[str, Any]] = {
    "prompt": {
        "type": "string",
        "title": "Prompt",
        "default": "self-portrait of a woman, lightning in the background",
        "description": "Input prompt",
    },
    "negative_prompt": {
        "type": "string",
        "title": "Negative Prompt",
        "default": "worst quality, low quality",
        "description": "Negative Input prompt",
    },
    "width": {
        "type": "integer",
        "title": "Width",
        "default": 1024,
        "minimum": 256,
        "maximum": 1280,
        "description": "Width of output image. Recommended 1024 or 1280",
    },
    "height": {
        "type": "integer",
        "title": "Height",
        "default": 1024,
        "minimum": 256,
        "maximum": 1280,
        "description": "Height of output image. Recommended 1024 or 1280",
    },
    "num_outputs": {
        "type": "integer",
        "title": "Num Outputs",
        "default": 1,
        "minimum": 1,
        "maximum": 4,
        "description": "Number of images to output.",
    },
    "scheduler": {"type": "string", "title": "scheduler", "default": "K_EULER", "enum": list(SCHEDULERS)},
    "num_inference_steps": {
        "type": "integer",
        "title": "Num Inference Steps",
        "default": 4,
        "minimum": 1,
        "maximum": 10,
        "description": "Number of denoising steps. 4 for best results",
    },
    "guidance_scale": {
        "type": "number",
        "title": "Guidance Scale",
        "default": 0,
        "minimum": 0,
        "maximum": 50,
        "description": "Scale for classifier-free guidance",
    },
    "seed": {"type": "integer", "title": "Seed", "description": "Random seed. Leave blank to randomize the seed"},
    "disable_safety_checker": {
        "type": "boolean",
        "title": "Disable Safety Checker",
        "default": False,
        "description": "Disable safety checker for generated images",
    },
}

OPENAPI_SCHEMA: dict[str, Any] = {
    "openapi": "3.0.2",
    "info": {"title": "Cog", "version": "0.1.0"},
    "paths": {},
    "components": {
        "schemas": {
            "Input": {
                "type": "object",
                "title": "Input",
                "properties": {name: {**spec, "x-order": i} for i, (name, spec) in enumerate(_INPUT.items())},
            },
            "Output": {"type": "array", "items": {"type": "string", "format": "uri"}, "title": "Output"},
        }
    },
}


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer()):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _type_ok(expected: str, actual: str) -> bool:
    return actual == expected or (expected == "number" and actual == "integer")


def validate_input(payload: Any) -> tuple[dict[str, Any], list[dict[str, str]], list[str]]:
    """(known inputs with defaults filled in, invalid fields, names of the unknown inputs that are ignored)."""
    if not isinstance(payload, dict):
        return (
            {},
            [
                {
                    "type": "invalid_type",
                    "field": "input",
                    "description": f"Invalid type. Expected: object, given: {_json_type(payload)}",
                }
            ],
            [],
        )
    problems: list[dict[str, str]] = []
    for name, spec in _INPUT.items():
        if name not in payload:
            continue
        value, field = payload[name], f"input.{name}"
        actual = _json_type(value)
        if not _type_ok(spec["type"], actual):
            problems.append(
                {
                    "type": "invalid_type",
                    "field": field,
                    "description": f"Invalid type. Expected: {spec['type']}, given: {actual}",
                }
            )
        elif "enum" in spec and value not in spec["enum"]:
            allowed = ", ".join(f'"{v}"' for v in spec["enum"])
            problems.append(
                {"type": "enum", "field": field, "description": f"{name} must be one of the following: {allowed}"}
            )
        elif "maximum" in spec and value > spec["maximum"]:
            problems.append(
                {
                    "type": "number_lte",
                    "field": field,
                    "description": f"Must be less than or equal to {spec['maximum']}",
                }
            )
        elif "minimum" in spec and value < spec["minimum"]:
            problems.append(
                {
                    "type": "number_gte",
                    "field": field,
                    "description": f"Must be greater than or equal to {spec['minimum']}",
                }
            )
    filled = {name: spec["default"] for name, spec in _INPUT.items() if "default" in spec}
    filled.update((name, value) for name, value in payload.items() if name in _INPUT)
    return filled, problems, [str(name) for name in payload if name not in _INPUT]


def ignored_input_warning(name: str) -> str:
    """The log line a prediction gets, when it starts, for an input the model's schema does not have."""
    return f"Warning: ignoring input {name!r}: it is not in this model's input schema"


def validation_detail(problems: list[dict[str, str]]) -> str:
    """The `detail` text of a 422: one '- field: description' line per problem."""
    return "".join(f"- {p['field']}: {p['description']}\n" for p in problems)
