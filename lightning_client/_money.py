"""One way to print dollars: enough digits that no non-zero cost reads as zero, `unknown` for unknown."""

from __future__ import annotations

import math

__all__ = ["format_usd"]


def _decimals(usd: float) -> int:
    """Four decimals, or as many as two significant digits of a smaller amount need."""
    if usd == 0 or not math.isfinite(usd):
        return 4
    return max(4, 1 - math.floor(math.log10(abs(usd))))


def format_usd(usd: float | None, known_usd: float = 0.0, *, estimated: bool = False) -> str:
    """Dollars for people: "$0.0040", "$0.000049", "unknown" or "unknown (at least $0.0040)"; "(est.)" marks estimates.

    A known $0 (not billed) prints as "$0.0000"; an unknown cost is never printed as $0.
    """
    if usd is None:
        return f"unknown (at least {format_usd(known_usd)})" if known_usd else "unknown"
    return f"${usd:.{_decimals(usd)}f}" + (" (est.)" if estimated else "")
