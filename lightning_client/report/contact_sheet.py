"""Contact sheets: per prompt, every provider's images side by side, labelled with seed, latency and cost."""

from __future__ import annotations

import re
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from lightning_client._money import format_usd
from lightning_client.report.labels import plural, steps_label
from lightning_client.report.rows import ResultRow

if TYPE_CHECKING:
    from PIL.ImageFont import FreeTypeFont, ImageFont

__all__ = ["slug", "write_contact_sheets"]

TILE = 224
PAD = 12
HEADER = 40
CAPTION = 34
BACKGROUND = (250, 250, 250)
INK = (30, 30, 30)
MUTED = (110, 110, 110)
FAILED = (225, 225, 225)


def slug(text: str, limit: int = 40) -> str:
    """A file-name-safe short form of `text`."""
    cleaned = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return cleaned[:limit].rstrip("-") or "prompt"


def _font(size: int) -> FreeTypeFont | ImageFont:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except (ImportError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def caption(row: ResultRow | None, provider: str, column_repeats: int) -> str:
    if row is None:  # this column ran fewer repeats than another one
        return f"not run: {provider} ran {plural(column_repeats, 'repeat')}"
    if not row.succeeded:
        return f"{row.outcome}: {row.error_type or ''}"
    latency = "" if row.total_s is None else f" · {row.total_s:.2f} s"
    estimated = row.cost_estimated and row.cost_usd != 0.0
    return f"seed {row.seed}{latency}\n{format_usd(row.cost_usd, row.cost_known_usd, estimated=estimated)}"


def _sheet(prompt: str, rows: Sequence[ResultRow], base: Path, path: Path) -> Path:
    from PIL import Image, ImageDraw

    columns = list(dict.fromkeys((r.provider, r.steps) for r in rows if r.outcome != "skipped"))
    multi_steps = len({steps for _, steps in columns}) > 1
    repeats = sorted({r.repeat for r in rows})
    # The row shown per cell: the attempt that produced images, else the job's last attempt.
    cells: dict[tuple[str, int | None, int], ResultRow] = {}
    for candidate in sorted(rows, key=lambda r: (r.succeeded, r.attempt)):
        cells[(candidate.provider, candidate.steps, candidate.repeat)] = candidate
    title_lines = textwrap.wrap(prompt, width=max(40, len(columns) * 30))[:2]
    top = PAD + 22 * len(title_lines) + PAD
    width = PAD + len(columns) * (TILE + PAD)
    height = top + HEADER + len(repeats) * (TILE + CAPTION + PAD)
    sheet = Image.new("RGB", (max(width, 320), height), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    title_font, label_font, small_font = _font(18), _font(15), _font(12)
    for i, line in enumerate(title_lines):
        draw.text((PAD, PAD + 22 * i), line, fill=INK, font=title_font)
    for c, (provider, steps) in enumerate(columns):
        x = PAD + c * (TILE + PAD)
        emulated = any(r.steps_emulated for r in rows if (r.provider, r.steps) == (provider, steps))
        label = steps_label(provider, steps if multi_steps or emulated else None, emulated)
        column_repeats = len({r.repeat for r in rows if (r.provider, r.steps) == (provider, steps)})
        # "(emulated)" goes on its own line so a long label stays inside its column.
        draw.multiline_text((x, top), label.replace(" (emulated)", "\n(emulated)"), fill=INK, font=label_font)
        for r, repeat in enumerate(repeats):
            y = top + HEADER + r * (TILE + CAPTION + PAD)
            row = cells.get((provider, steps, repeat))
            image_path = base / row.images[0] if row is not None and row.images else None
            if image_path is not None and image_path.is_file():
                with Image.open(image_path) as opened:
                    tile = opened.convert("RGB")
                tile.thumbnail((TILE, TILE))
                sheet.paste(tile, (x + (TILE - tile.width) // 2, y + (TILE - tile.height) // 2))
            else:
                draw.rectangle((x, y, x + TILE - 1, y + TILE - 1), fill=FAILED)
                draw.text((x + 10, y + TILE // 2 - 8), "no image", fill=MUTED, font=label_font)
            draw.multiline_text((x, y + TILE + 4), caption(row, provider, column_repeats), fill=MUTED, font=small_font)
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path, format="PNG")
    return path


def write_contact_sheets(rows: Sequence[ResultRow], base: Path, directory: Path) -> list[Path]:
    """One PNG per prompt in `directory`; image paths in `rows` are relative to `base`."""
    prompts = list(dict.fromkeys(r.prompt for r in rows))
    return [
        _sheet(prompt, [r for r in rows if r.prompt == prompt], base, directory / f"{i:02d}-{slug(prompt)}.png")
        for i, prompt in enumerate(prompts, start=1)
    ]
