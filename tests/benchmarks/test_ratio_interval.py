"""The lag benchmark's bootstrap interval of a p50 ratio."""

from __future__ import annotations

import random
from collections.abc import Callable
from types import ModuleType

COMMON = "benchmarks/_common.py"


def _samples(center: float, n: int, seed: int) -> list[float]:
    rng = random.Random(seed)
    return [rng.gauss(center, 1.0) for _ in range(n)]


def test_interval_holds_the_ratio_and_narrows_with_more_samples(script_module: Callable[[str], ModuleType]) -> None:
    common = script_module(COMMON)
    ours, theirs = _samples(9.0, 40, 1), _samples(10.0, 40, 2)
    low, high = common.p50_ratio_interval(ours, theirs)
    ratio = common.percentile(ours, 50) / common.percentile(theirs, 50)
    assert low < ratio < high
    more_low, more_high = common.p50_ratio_interval(_samples(9.0, 1000, 1), _samples(10.0, 1000, 2))
    assert more_high - more_low < (high - low) / 2
    assert more_low < 0.9 < more_high  # the true ratio of the two distributions


def test_level_widens_the_interval_and_the_seed_fixes_it(script_module: Callable[[str], ModuleType]) -> None:
    common = script_module(COMMON)
    ours, theirs = _samples(9.0, 60, 3), _samples(9.0, 60, 4)
    narrow = common.p50_ratio_interval(ours, theirs, level=50)
    wide = common.p50_ratio_interval(ours, theirs, level=95)
    assert wide[0] < narrow[0] and narrow[1] < wide[1]
    assert common.p50_ratio_interval(ours, theirs) == common.p50_ratio_interval(ours, theirs)
