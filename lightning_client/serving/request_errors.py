"""Malformed request bodies as 400s in OpenAI's error shape, each saying what is wrong and naming the field."""

from __future__ import annotations

from collections.abc import Sequence
from email.message import Message
from typing import Any

from fastapi.exceptions import RequestValidationError

from lightning_client.serving.errors import ApiError

__all__ = ["SEND_JSON", "is_json", "validation_answer"]

#: What every JSON route takes.
SEND_JSON = "send a JSON object with Content-Type: application/json"


def is_json(content_type: str | None) -> bool:
    """Whether a `Content-Type` is JSON (`application/json` or `application/*+json`)."""
    if not content_type:
        return False
    message = Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (subtype == "json" or subtype.endswith("+json"))


def _invalid(message: str, param: str | None = None) -> ApiError:
    return ApiError(400, message, type="invalid_request_error", code="InvalidRequestError", param=param)


def _position(document: str, offset: int) -> tuple[int, int]:
    """1-based line and column of a character offset."""
    line = document.count("\n", 0, offset) + 1
    return line, offset - (document.rfind("\n", 0, offset) + 1) + 1


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return type(value).__name__


def _field(loc: Sequence[Any]) -> list[str]:
    """The field path of an error location, without its leading part (`body`, `query`, ...)."""
    return (
        [str(part) for part in loc[1:]]
        if loc and loc[0] in ("body", "query", "path", "header")
        else list(map(str, loc))
    )


def validation_answer(exc: RequestValidationError, content_type: str | None) -> ApiError:
    """The 400 for a body FastAPI could not read or validate.

    Broken JSON names its line and column (and no field), a body that is not JSON asks for
    `application/json`, a body that is not an object says what it is, and a bad field is named
    in the message and in `param`.
    """
    errors = list(exc.errors())
    for error in errors:
        if error.get("type") == "json_invalid":
            loc = error.get("loc", ())
            offset = loc[1] if len(loc) > 1 and isinstance(loc[1], int) else 0
            document = exc.body if isinstance(exc.body, str) else ""
            line, column = _position(document, offset)
            why = error.get("ctx", {}).get("error", "malformed")
            return _invalid(f"invalid JSON at line {line}, column {column}: {why}; {SEND_JSON}")
    whole = [e for e in errors if tuple(e.get("loc", ())) == ("body",)]
    if whole:
        if not is_json(content_type):
            got = f"Content-Type: {content_type}" if content_type else "no Content-Type"
            return _invalid(f"the body must be JSON ({got}): {SEND_JSON}")
        if whole[0].get("type") == "missing":
            return _invalid(f"the request has no body: {SEND_JSON}")
        return _invalid(f"the body must be a JSON object, not {_json_kind(whole[0].get('input'))}: {SEND_JSON}")
    problems, param = [], None
    for error in errors:
        loc = _field(error.get("loc", ())) or ["body"]
        param = param or loc[0]
        name = ".".join(loc)
        if error.get("type") == "extra_forbidden":
            problems.append(f"unknown field {name!r}")
        else:
            problems.append(f"{name}: {error.get('msg', 'invalid')}")
    return _invalid("invalid request: " + "; ".join(problems), param)
