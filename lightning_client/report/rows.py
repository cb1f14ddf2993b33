"""One result row per attempt, built from a `GenerationResult` or an error, and CSV/JSON files of them."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, model_validator

from lightning_client._log import mask_secrets
from lightning_client.errors import AllProvidersFailedError, LightningError
from lightning_client.result import Attempt, GenerationResult

__all__ = ["ResultRow", "mark_emulated_steps", "read_rows", "rows_for_error", "rows_for_result", "write_rows"]


class ResultRow(BaseModel):
    """One attempt at one job of a comparison or batch: what was asked, what happened, what it cost.

    `images` are paths relative to the run's output folder; only the attempt that
    succeeded has them.
    """

    job: str
    prompt: str
    provider: str
    steps: int | None = None
    repeat: int = 0
    attempt: int = 1
    seed: int | None = None
    width: int | None = None
    height: int | None = None
    outcome: str
    error_type: str | None = None
    error_message: str | None = None
    status_code: int | None = None
    request_id: str | None = None
    model: str | None = None
    queue_s: float | None = None
    inference_s: float | None = None
    download_s: float | None = None
    total_s: float | None = None
    #: None: unknown (a job may have run and been billed); see `cost_basis`.
    cost_usd: float | None = 0.0
    cost_known_usd: float = 0.0
    cost_basis: str = ""
    cost_estimated: bool = True
    num_images: int = 0
    hedge: bool = False
    note: str | None = None
    #: The provider ran this step count on a checkpoint made for another one (see `note`).
    steps_emulated: bool = False
    started_at: str | None = None
    images: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _known_part(self) -> ResultRow:
        if self.cost_usd is not None:
            self.cost_known_usd = self.cost_usd
        return self

    @property
    def succeeded(self) -> bool:
        return self.outcome == "succeeded"


def _row(attempt: Attempt, index: int, job: dict[str, Any]) -> ResultRow:
    timings = attempt.timings
    fields = {k: v for k, v in job.items() if k != "steps"}
    return ResultRow(
        **fields,
        provider=attempt.provider,
        attempt=index,
        seed=attempt.seed,
        steps=attempt.steps if attempt.steps is not None else job.get("steps"),
        outcome=attempt.outcome or "failed",
        error_type=attempt.error_type,
        error_message=None if attempt.error_message is None else mask_secrets(attempt.error_message),
        status_code=attempt.status_code,
        request_id=attempt.request_id,
        model=attempt.model,
        queue_s=timings.queue_s,
        inference_s=timings.inference_s,
        download_s=timings.download_s,
        total_s=timings.total_s,
        cost_usd=attempt.cost.usd,
        cost_known_usd=attempt.cost.known_usd,
        cost_basis=attempt.cost.basis,
        cost_estimated=attempt.cost.estimated,
        num_images=attempt.num_images,
        hedge=attempt.hedge,
        note=attempt.note,
        started_at=attempt.started_at.isoformat(),
    )


def rows_for_result(
    result: GenerationResult,
    *,
    job: str,
    repeat: int = 0,
    width: int | None = None,
    height: int | None = None,
    images: Sequence[str] = (),
) -> list[ResultRow]:
    """Rows for every attempt behind `result`; the saved `images` go to the attempt that succeeded."""
    fields: dict[str, Any] = {
        "job": job,
        "prompt": result.prompt,
        "steps": result.steps,
        "repeat": repeat,
        "width": width,
        "height": height,
    }
    rows = [_row(a, i, fields) for i, a in enumerate(result.attempts, start=1)]
    winner = next(
        (r for r in reversed(rows) if r.succeeded and r.provider == result.provider),
        None,
    )
    if winner is None:  # a generator used directly, without an attempt list
        winner = ResultRow(
            **fields,
            provider=result.provider,
            attempt=len(rows) + 1,
            seed=result.seed,
            outcome="succeeded",
            request_id=result.request_id,
            model=result.model,
            **result.timings.model_dump(exclude={"load_s"}),
            cost_usd=result.cost.usd,
            cost_known_usd=result.cost.known_usd,
            cost_basis=result.cost.basis,
            cost_estimated=result.cost.estimated,
            num_images=len(result.images),
        )
        rows.append(winner)
    winner.images = list(images)
    return rows


def rows_for_error(
    error: BaseException,
    *,
    job: str,
    prompt: str,
    provider: str,
    steps: int | None,
    seed: int | None,
    repeat: int = 0,
    width: int | None = None,
    height: int | None = None,
) -> list[ResultRow]:
    """Rows for a job that failed: one per attempt made, or one "skipped" row when none was."""
    fields: dict[str, Any] = {
        "job": job,
        "prompt": prompt,
        "steps": steps,
        "repeat": repeat,
        "width": width,
        "height": height,
    }
    attempts: list[Attempt] = []
    if isinstance(error, AllProvidersFailedError):
        attempts = error.attempts
    elif isinstance(error, LightningError) and error.attempt is not None:
        attempts = [error.attempt]
    if attempts:
        return [_row(a, i, fields) for i, a in enumerate(attempts, start=1)]
    message = mask_secrets(error.message if isinstance(error, LightningError) else str(error))
    return [
        ResultRow(
            **fields,
            provider=(error.provider if isinstance(error, LightningError) else None) or provider,
            seed=seed,
            outcome="skipped",
            error_type=type(error).__name__,
            error_message=message,
            status_code=getattr(error, "status_code", None),
        )
    ]


def mark_emulated_steps(rows: Sequence[ResultRow], provider: str, native_steps: Iterable[int]) -> None:
    """Flag `provider`'s rows as run at an emulated step count and say so in their `note`."""
    native = ", ".join(str(s) for s in sorted(native_steps))
    for row in rows:
        if row.provider != provider or row.steps_emulated:
            continue
        row.steps_emulated = True
        text = f"emulated steps: {row.steps} steps run on a checkpoint made for {native}; not a real step comparison"
        row.note = text if not row.note else f"{row.note}; {text}"


_COLUMNS = list(ResultRow.model_fields)


def write_rows(rows: Sequence[ResultRow], directory: Path) -> tuple[Path, Path]:
    """Write `results.csv` and `results.json` into `directory`; returns both paths."""
    directory.mkdir(parents=True, exist_ok=True)
    csv_path, json_path = directory / "results.csv", directory / "results.json"
    with csv_path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=_COLUMNS)
        writer.writeheader()
        for row in rows:
            record = row.model_dump()
            record["images"] = ";".join(row.images)
            writer.writerow({k: "" if v is None else v for k, v in record.items()})
    json_path.write_text(json.dumps([r.model_dump() for r in rows], indent=2) + "\n", encoding="utf-8")
    return csv_path, json_path


def read_rows(path: Path) -> list[ResultRow]:
    """Read rows back from a `results.json` file."""
    return [ResultRow.model_validate(item) for item in json.loads(path.read_text(encoding="utf-8"))]
