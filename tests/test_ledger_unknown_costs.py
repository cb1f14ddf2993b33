"""The ledger tells "not billed" ($0 with a reason) from "unknown" (NULL), in memory and in SQLite."""

from __future__ import annotations

from pathlib import Path

import pytest

import lightning_client as lc
from lightning_client.report.markdown import write_markdown
from lightning_client.report.rows import ResultRow


def _attempts() -> list[lc.Attempt]:
    return [
        lc.Attempt(provider="fal", outcome="unknown", cost=lc.Cost.unknown("create outcome unknown")),
        lc.Attempt(
            provider="fal",
            outcome="canceled",
            cost=lc.Cost(usd=0.0, basis="cancelled while queued: not billed", estimated=False),
        ),
        lc.Attempt(
            provider="fal", outcome="succeeded", num_images=1, cost=lc.Cost(usd=0.002, basis="1 image", estimated=False)
        ),
        lc.Attempt(
            provider="replicate",
            outcome="succeeded",
            num_images=1,
            cost=lc.Cost(usd=0.003, basis="predict_time", estimated=True),
        ),
    ]


@pytest.mark.parametrize("where", ["memory", "file"])
def test_unknown_and_not_billed_stay_apart(where: str, tmp_path: Path) -> None:
    ledger = lc.Ledger(None if where == "memory" else tmp_path / "l.db")
    for attempt in _attempts():
        ledger.record("end", attempt)
    if where == "file":
        ledger.close()
        ledger = lc.Ledger(tmp_path / "l.db")
    records = {a.outcome: a for a in ledger.records()}
    assert records["unknown"].cost.usd is None and records["unknown"].cost.is_unknown
    assert records["canceled"].cost.usd == 0.0 and "not billed" in records["canceled"].cost.basis
    fal, replicate = ledger.summary()
    assert (fal.unknown, fal.unknown_costs, fal.total_cost, fal.cost_per_image) == (1, 1, None, None)
    assert fal.known_cost == pytest.approx(0.002)
    assert replicate.total_cost == pytest.approx(0.003) and replicate.unknown_costs == 0
    assert ledger.total_cost() is None and ledger.cost().known_usd == pytest.approx(0.005)
    ledger.close()


def test_costs_add_up_to_unknown_and_print_as_unknown_never_zero() -> None:
    total = lc.Cost(usd=0.002, basis="a") + lc.Cost.unknown("b")
    assert total.usd is None and total.known_usd == pytest.approx(0.002) and total.basis == "a + b"
    assert str(total) == "unknown (at least $0.0020)" and str(lc.Cost.unknown("x")) == "unknown"
    assert str(lc.Cost(usd=0.0, basis="not billed")) == "$0.0000"


def test_reports_show_unknown_costs_as_unknown(tmp_path: Path) -> None:
    rows = [
        ResultRow(job="1", prompt="p", provider="fal", outcome="unknown", cost_usd=None, cost_basis="unknown"),
        ResultRow(job="1", prompt="p", provider="replicate", outcome="succeeded", num_images=1, cost_usd=0.003),
    ]
    text = write_markdown(rows, tmp_path / "report.md").read_text()
    assert "total cost: unknown (at least $0.0030)" in text
    assert "$0.0000" not in text
