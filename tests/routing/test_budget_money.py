"""A budget error prints sub-cent dollars with their digits, as every other figure does."""

from __future__ import annotations

import pytest

from lightning_client.errors import BudgetExceededError
from lightning_client.routing.budget import Budget


def test_a_sub_cent_budget_error_never_reads_zero() -> None:
    with pytest.raises(BudgetExceededError) as info:
        Budget(0.00004).check(0.000049, what="request")
    assert "expected cost $0.000049 exceeds the $0.000040 left" in info.value.message
    assert "total $0.000040 (spent $0.0000)" in info.value.message  # a known zero stays $0.0000
