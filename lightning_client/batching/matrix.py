"""The comparison matrix: every prompt x provider x steps x repeat, each pinned to one provider."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lightning_client.batching.pool import run_pool
from lightning_client.batching.runner import Routes
from lightning_client.errors import LightningError
from lightning_client.report.contact_sheet import slug
from lightning_client.report.rows import ResultRow, mark_emulated_steps, rows_for_error, rows_for_result
from lightning_client.request import SEED_MAX, GenerationRequest

__all__ = ["Cell", "plan_matrix", "run_matrix"]


@dataclass(frozen=True)
class Cell:
    """One job of the matrix. Every provider and step count gets the same seed for a prompt and repeat."""

    prompt_index: int
    prompt: str
    provider: str
    steps: int
    repeat: int
    seed: int

    @property
    def job(self) -> str:
        return f"p{self.prompt_index}-{self.provider}-s{self.steps}-r{self.repeat}"


def plan_matrix(
    prompts: Sequence[str],
    providers: Sequence[str],
    steps: Sequence[int],
    repeats: int,
    *,
    seed: int | None = None,
) -> list[Cell]:
    """The cells, ordered so providers interleave (a slow provider does not run last).

    With `seed`, repeat r of every prompt uses seed + r; otherwise seeds are drawn once
    per prompt and repeat and shared by all providers and step counts.
    """
    cells = []
    for p, prompt in enumerate(prompts, start=1):
        for r in range(repeats):
            cell_seed = (seed + r) % (SEED_MAX + 1) if seed is not None else secrets.randbelow(SEED_MAX + 1)
            for s in steps:
                for provider in providers:
                    cells.append(Cell(p, prompt, provider, s, r, cell_seed))
    return cells


async def run_matrix(
    router: Routes,
    cells: Sequence[Cell],
    out: Path,
    *,
    request_fields: Mapping[str, Any] | None = None,
    concurrency: int = 4,
    on_cell: Callable[[Cell, list[ResultRow]], None] | None = None,
) -> list[ResultRow]:
    """Run every cell through `router` pinned to its provider; images go to `out/images/<prompt>/`.

    Returns one row per attempt (retries included). A cell its provider cannot serve
    (e.g. a step count it lacks) gives one "skipped" row; other failures give failed rows.
    Rows of a step count the provider only emulates (its capabilities say so) are marked
    `steps_emulated`, with a note.
    """
    rows: list[ResultRow] = []
    fields = dict(request_fields or {})
    capabilities = {g.name: g.capabilities for g in getattr(router, "generators", ())}

    async def one(cell: Cell) -> None:
        request = GenerationRequest(prompt=cell.prompt, steps=cell.steps, seed=cell.seed, **fields)
        try:
            result = await router.agenerate(request, providers=[cell.provider])
        except LightningError as exc:
            cell_rows = rows_for_error(
                exc,
                job=cell.job,
                prompt=cell.prompt,
                provider=cell.provider,
                steps=cell.steps,
                seed=cell.seed,
                repeat=cell.repeat,
                width=request.width,
                height=request.height,
            )
        else:
            folder = out / "images" / f"{cell.prompt_index:02d}-{slug(cell.prompt)}"
            stem = f"{cell.provider}-s{cell.steps}-r{cell.repeat}-{result.seed}"
            paths = await asyncio.to_thread(result.save, folder, stem)
            cell_rows = rows_for_result(
                result,
                job=cell.job,
                repeat=cell.repeat,
                width=request.width,
                height=request.height,
                images=[p.relative_to(out).as_posix() for p in paths],
            )
        caps = capabilities.get(cell.provider)
        if caps is not None and cell.steps in caps.emulated_steps and cell.steps not in caps.native_steps:
            mark_emulated_steps(cell_rows, cell.provider, caps.native_steps)
        rows.extend(cell_rows)
        if on_cell is not None:
            on_cell(cell, cell_rows)

    await run_pool(cells, one, concurrency)
    order = {cell.job: i for i, cell in enumerate(cells)}
    rows.sort(key=lambda r: (order.get(r.job, len(order)), r.attempt))
    return rows
