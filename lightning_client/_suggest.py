"""Did-you-mean hints for a mistyped name (a field, a provider, an option)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = ["did_you_mean"]


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """ " (did you mean 'prompt'?)" when one of `choices` is close to `word` (any case), else ""."""
    by_lower = {c.lower(): c for c in choices}
    close = difflib.get_close_matches(word.strip().lower(), list(by_lower), n=1, cutoff=0.6)
    return f" (did you mean {by_lower[close[0]]!r}?)" if close else ""
