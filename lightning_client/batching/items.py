"""Batch items read from a JSONL file, each validated into a `GenerationRequest` before anything is sent."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from lightning_client.errors import InvalidRequestError
from lightning_client.request import GenerationRequest

__all__ = ["BatchItem", "load_items", "parse_items"]


class BatchItem(BaseModel):
    """One line of a batch: a stable id, the request and optionally the providers to use."""

    model_config = ConfigDict(frozen=True)

    id: str
    line: int
    request: GenerationRequest
    providers: tuple[str, ...] | None = None


def _content_id(record: Mapping[str, Any]) -> str:
    canonical = json.dumps(record, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def _providers(value: Any, where: str) -> tuple[str, ...]:
    names = value.split(",") if isinstance(value, str) else value
    if not isinstance(names, list) or not names or not all(isinstance(n, str) and n.strip() for n in names):
        raise InvalidRequestError(
            f"{where}: providers={value!r} is invalid; allowed: a list of provider names or 'a,b'", field="providers"
        )
    return tuple(n.strip() for n in names)


def _merge(defaults: Mapping[str, Any], fields: dict[str, Any]) -> dict[str, Any]:
    """Line fields over defaults; a line's size (or aspect ratio) replaces the default's other form."""
    merged = dict(defaults)
    if "aspect_ratio" in fields:
        merged.pop("width", None)
        merged.pop("height", None)
    if "width" in fields or "height" in fields:
        merged.pop("aspect_ratio", None)
    return {**merged, **fields}


def parse_items(
    lines: list[str], *, source: str = "<batch>", defaults: Mapping[str, Any] | None = None
) -> list[BatchItem]:
    """Validate every line; raises `InvalidRequestError` naming the line and field of the first bad one.

    A line is a JSON object with `prompt` and any `GenerationRequest` field, plus optional
    `id` (else derived from the line's content, so re-runs recognise it) and `providers`
    (a list, or `provider` for one). A bare JSON string is a prompt. Blank lines and
    lines starting with `#` are skipped. `defaults` fill fields a line does not set.
    """
    items: list[BatchItem] = []
    seen: dict[str, int] = {}
    for number, text in enumerate(lines, start=1):
        stripped = text.strip()
        if not stripped or stripped.startswith("#"):
            continue
        where = f"{source}:{number}"
        try:
            record = json.loads(stripped)
        except json.JSONDecodeError as exc:
            raise InvalidRequestError(f"{where}: not valid JSON ({exc.msg})", field="line") from None
        if isinstance(record, str):
            record = {"prompt": record}
        if not isinstance(record, dict):
            raise InvalidRequestError(f"{where}: expected a JSON object or string, got {type(record).__name__}")
        fields = dict(record)
        explicit_id = fields.pop("id", None)
        providers: tuple[str, ...] | None = None
        if "providers" in fields:
            providers = _providers(fields.pop("providers"), where)
        elif "provider" in fields:
            providers = _providers([fields.pop("provider")], where)
        try:
            request = GenerationRequest(**_merge(defaults or {}, fields))
        except InvalidRequestError as exc:
            raise InvalidRequestError(f"{where}: {exc.message}", field=exc.field) from None
        if explicit_id is not None:
            item_id = str(explicit_id)
            if item_id in seen:
                raise InvalidRequestError(f"{where}: id {item_id!r} already used on line {seen[item_id]}", field="id")
        else:
            base = _content_id(record)
            item_id, n = base, 1
            while item_id in seen:  # the same line twice is two items
                n += 1
                item_id = f"{base}-{n}"
        seen[item_id] = number
        items.append(BatchItem(id=item_id, line=number, request=request, providers=providers))
    return items


def load_items(path: Path, *, defaults: Mapping[str, Any] | None = None) -> list[BatchItem]:
    """Read and validate a JSONL prompts file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidRequestError(f"cannot read {path}: {exc.strerror or exc}", field="prompts") from None
    items = parse_items(text.splitlines(), source=str(path), defaults=defaults)
    if not items:
        raise InvalidRequestError(f"{path}: no prompts found", field="prompts")
    return items
