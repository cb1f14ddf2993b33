"""Words shared by the report's tables, plots and contact sheets: counts, step labels, provider colours."""

from __future__ import annotations

import zlib

__all__ = ["PALETTE", "plural", "provider_color", "steps_label"]

PALETTE = ("#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860", "#DA8BC3", "#8C8C8C")


def plural(count: int, noun: str) -> str:
    """'1 step', '4 steps'."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def steps_label(provider: str, steps: int | None, emulated: bool) -> str:
    """'acme · 4 steps', 'acme · 1 step (emulated)', or the provider alone without a step count."""
    if steps is None:
        return provider
    return f"{provider} · {plural(steps, 'step')}" + (" (emulated)" if emulated else "")


def provider_color(provider: str) -> str:
    """A provider's colour, from its name alone: the same in every plot of a run (and of every run)."""
    return PALETTE[zlib.crc32(provider.encode()) % len(PALETTE)]
