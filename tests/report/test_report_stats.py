from __future__ import annotations

import pytest

from lightning_client.report import ResultRow, group_stats
from lightning_client.report.markdown import failovers


def test_group_stats_per_provider_and_steps(run_rows: list[ResultRow]) -> None:
    stats = {s.provider: s for s in group_stats(run_rows)}
    assert list(stats) == ["replicate", "fal"]
    rep, fal = stats["replicate"], stats["fal"]
    assert (rep.attempts, rep.succeeded, rep.failed, rep.images) == (4, 3, 1, 3)
    assert rep.success_rate == pytest.approx(0.75)
    assert fal.success_rate == 1.0
    assert rep.p50_s == pytest.approx(2.1)
    assert fal.p95_s == pytest.approx(1.19)
    assert fal.cost_per_image == pytest.approx(0.002)
    assert rep.errors == {"ProviderUnavailableError": 1}
    assert rep.inference_p50_s == pytest.approx(1.2)


def test_skipped_rows_are_not_counted_and_steps_split_groups() -> None:
    rows = [
        ResultRow(job="a", prompt="p", provider="fal", steps=1, outcome="succeeded", total_s=1.0, num_images=1),
        ResultRow(job="b", prompt="p", provider="fal", steps=8, outcome="succeeded", total_s=3.0, num_images=1),
        ResultRow(
            job="c", prompt="p", provider="replicate", steps=1, outcome="skipped", error_type="InvalidRequestError"
        ),
    ]
    stats = group_stats(rows)
    assert [(s.provider, s.steps) for s in stats] == [("fal", 1), ("fal", 8)]
    assert stats[0].cost_per_image == 0.0
    assert stats[1].label == "fal · 8 steps"


def test_failover_counts_jobs_served_by_a_later_provider() -> None:
    rows = [
        ResultRow(job="j1", prompt="p", provider="replicate", attempt=1, outcome="failed"),
        ResultRow(job="j1", prompt="p", provider="fal", attempt=2, outcome="succeeded"),
        ResultRow(job="j2", prompt="p", provider="replicate", attempt=1, outcome="failed"),
        ResultRow(job="j2", prompt="p", provider="replicate", attempt=2, outcome="succeeded"),
    ]
    assert failovers(rows) == 1
