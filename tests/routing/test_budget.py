"""Budget arithmetic: totals, per-day limits, reservations."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from lightning_client.errors import BudgetExceededError
from lightning_client.result import Attempt, Cost
from lightning_client.routing.budget import Budget


def test_unlimited_budget_never_blocks() -> None:
    budget = Budget()
    assert not budget.limited and budget.left() is None
    budget.check(1e9, what="request")


def test_zero_budget_blocks_even_a_free_request() -> None:
    with pytest.raises(BudgetExceededError, match=r"exceeds the \$0.0000 left"):
        Budget(0.0).check(0.0, what="request")


def test_spend_and_reservations_reduce_what_is_left() -> None:
    budget = Budget(1.0)
    budget.spend(0.25)
    held = budget.reserve(0.5, what="first")
    assert budget.left() == pytest.approx(0.25)
    with pytest.raises(BudgetExceededError, match=r"0\.5000 reserved"):
        budget.reserve(0.5, what="second")
    held.release()
    held.release()  # idempotent
    assert budget.left() == pytest.approx(0.75)
    assert budget.spent_usd == pytest.approx(0.25)


def test_per_day_limit_counts_only_today_and_the_tighter_limit_wins() -> None:
    budget = Budget(total_usd=10.0, per_day_usd=1.0)
    yesterday = datetime.now(timezone.utc) - timedelta(days=1)
    budget.seed(
        [
            Attempt(provider="fal", started_at=yesterday, cost=Cost(usd=5.0, basis="x")),
            Attempt(provider="fal", cost=Cost(usd=0.6, basis="x")),
        ]
    )
    assert budget.left() == pytest.approx(0.4)
    budget.check(0.4, what="ok")
    with pytest.raises(BudgetExceededError, match="per day"):
        budget.check(0.41, what="too much")


def test_negative_limits_are_rejected() -> None:
    with pytest.raises(ValueError, match="budget_usd_per_day must be >= 0"):
        Budget(per_day_usd=-1)
