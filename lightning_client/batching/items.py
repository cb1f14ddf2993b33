"""Batch items read from a JSONL file, each validated into a `GenerationRequest` before anything is sent."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from lightning_client._suggest import did_you_mean
from lightning_client.errors import InvalidRequestError
from lightning_client.request import GenerationRequest

__all__ = ["BatchFileError", "BatchItem", "file_stem", "load_items", "parse_items"]

#: Turns a provider name as written in a line into the registered one, or raises ValueError.
ProviderLookup = Callable[[str], str]
#: Fields a batch line may hold besides the `GenerationRequest` fields.
BATCH_FIELDS = ("id", "provider", "providers")


class BatchFileError(InvalidRequestError):
    """Every bad line of a batch file, found before anything is sent.

    `problems` holds one "file:line: why" text per bad line; `hint` says what the file
    seems to be instead, when that is clear (e.g. plain text rather than JSON lines).
    """

    def __init__(self, problems: list[str], *, field: str | None = None, hint: str | None = None) -> None:
        self.problems = list(problems)
        self.hint = hint
        super().__init__("; ".join(problems) + (f" (hint: {hint})" if hint else ""), field=field)


class BatchItem(BaseModel):
    """One line of a batch: a stable id, the request and optionally the providers to use."""

    model_config = ConfigDict(frozen=True)

    id: str
    line: int
    request: GenerationRequest
    providers: tuple[str, ...] | None = None


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(1, 10)), *(f"lpt{i}" for i in range(1, 10))}


def file_stem(item_id: str, limit: int = 80) -> str:
    """A file-name-safe form of an item id: no separators, no leading dots, bounded length.

    An id that needs changing gets a short hash of the original appended, so two ids that
    clean up alike (``a/b`` and ``a_b``) still get different files.
    """
    cleaned = _UNSAFE.sub("_", item_id).strip("._")[:limit]
    if cleaned == item_id and cleaned.lower().split(".")[0] not in _RESERVED:
        return cleaned
    digest = hashlib.sha256(item_id.encode()).hexdigest()[:8]
    return f"{cleaned or 'item'}-{digest}"


def _content_id(record: Mapping[str, Any]) -> str:
    canonical = json.dumps(record, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def _providers(value: Any, lookup: ProviderLookup | None) -> tuple[str, ...]:
    """The providers a line names, each resolved by `lookup` (ValueError says what is wrong)."""
    names = value.split(",") if isinstance(value, str) else value
    if not isinstance(names, list) or not names or not all(isinstance(n, str) and n.strip() for n in names):
        raise ValueError(f"providers={value!r} is invalid; allowed: a list of provider names or 'a,b'")
    stripped = [n.strip() for n in names]
    return tuple(dict.fromkeys(lookup(n) if lookup is not None else n for n in stripped))


def _looks_like_plain_text(lines: list[str]) -> bool:
    """Whether no content line of the file starts like JSON (an object or a string)."""
    content = [t.strip() for t in lines if t.strip() and not t.strip().startswith("#")]
    return bool(content) and not any(t[0] in '{"[' for t in content)


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
    lines: list[str],
    *,
    source: str = "<batch>",
    defaults: Mapping[str, Any] | None = None,
    providers: ProviderLookup | None = None,
) -> list[BatchItem]:
    """Validate every line; raises `BatchFileError` naming each bad line and what is wrong with it.

    A line is a JSON object with `prompt` and any `GenerationRequest` field, plus optional
    `id` (else derived from the line's content, so re-runs recognise it) and `providers`
    (a list, or `provider` for one), each resolved through `providers` when given. A bare
    JSON string is a prompt. Blank lines and lines starting with `#` are skipped.
    `defaults` fill fields a line does not set.
    """
    items: list[BatchItem] = []
    problems: list[str] = []
    fields: list[str | None] = []  # the field each problem is about ("line" when not one field)
    seen: dict[str, int] = {}
    for number, text in enumerate(lines, start=1):
        stripped = text.strip()
        if not stripped or stripped.startswith("#"):
            continue
        where = f"{source}:{number}"
        try:
            item = _parse_line(stripped, number, seen, defaults or {}, providers)
        except (InvalidRequestError, ValueError) as exc:
            why = (
                exc.message.removeprefix("Invalid GenerationRequest: ") if isinstance(exc, InvalidRequestError) else exc
            )
            problems.append(f"{where}: {why}")
            fields.append(exc.field if isinstance(exc, InvalidRequestError) else "line")
            continue
        seen[item.id] = number
        items.append(item)
    if problems:
        hint = None
        if _looks_like_plain_text(lines):
            hint = (
                f"{source} looks like plain text with one prompt per line; batch reads JSON lines such as "
                '{"prompt": "a red fox"} or "a red fox" (compare --prompts reads plain text)'
            )
        raise BatchFileError(problems, field=fields[0], hint=hint)
    return items


def _check_names(fields: Mapping[str, Any]) -> None:
    """Unknown field names as the line wrote them, each with a suggestion, and every field a line may hold."""
    request_fields = sorted(GenerationRequest.model_fields)
    unknown = [name for name in fields if name not in GenerationRequest.model_fields and name not in BATCH_FIELDS]
    if unknown:
        named = "; ".join(f"unknown field {n!r}{did_you_mean(n, [*request_fields, *BATCH_FIELDS])}" for n in unknown)
        raise InvalidRequestError(
            f"{named}; the fields are: {', '.join(request_fields)}, and for batch lines {', '.join(BATCH_FIELDS)}",
            field=unknown[0],
        )


def _parse_line(
    text: str, number: int, seen: Mapping[str, int], defaults: Mapping[str, Any], lookup: ProviderLookup | None
) -> BatchItem:
    try:
        record = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON ({exc.msg})") from None
    if isinstance(record, str):
        record = {"prompt": record}
    if not isinstance(record, dict):
        raise ValueError(f"expected a JSON object or string, got {type(record).__name__}")
    fields = dict(record)
    _check_names(fields)
    explicit_id = fields.pop("id", None)
    providers: tuple[str, ...] | None = None
    if "providers" in fields:
        providers = _providers(fields.pop("providers"), lookup)
    elif "provider" in fields:
        providers = _providers([fields.pop("provider")], lookup)
    request = GenerationRequest(**_merge(defaults, fields))
    if explicit_id is not None:
        item_id = str(explicit_id)
        if item_id in seen:
            raise ValueError(f"id {item_id!r} already used on line {seen[item_id]}")
    else:
        base = _content_id(record)
        item_id, n = base, 1
        while item_id in seen:  # the same line twice is two items
            n += 1
            item_id = f"{base}-{n}"
    return BatchItem(id=item_id, line=number, request=request, providers=providers)


def load_items(
    path: Path, *, defaults: Mapping[str, Any] | None = None, providers: ProviderLookup | None = None
) -> list[BatchItem]:
    """Read and validate a JSONL prompts file (every bad line is reported, see `parse_items`)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidRequestError(f"cannot read {path}: {exc.strerror or exc}", field="prompts") from None
    items = parse_items(text.splitlines(), source=str(path), defaults=defaults, providers=providers)
    if not items:
        raise InvalidRequestError(f"{path}: no prompts found", field="prompts")
    return items
