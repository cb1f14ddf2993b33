"""Plot and sheet labels: one colour per provider, '1 step', a note where a cost bar is missing."""

from __future__ import annotations

from pathlib import Path

from lightning_client.report import ResultRow, group_stats
from lightning_client.report.labels import PALETTE, plural, provider_color, steps_label
from lightning_client.report.plots import cost_note, write_plots


def test_a_provider_has_one_colour_whatever_else_a_plot_shows() -> None:
    built_in = ["replicate", "fal", "local", "remote"]
    assert len({provider_color(p) for p in built_in}) == len(built_in)
    assert all(provider_color(p) in PALETTE for p in [*built_in, "acme"])
    assert provider_color("fal") == provider_color("fal")


def test_counts_and_step_labels_read_right() -> None:
    assert plural(1, "step") == "1 step" and plural(2, "step") == "2 steps"
    assert steps_label("replicate", 1, True) == "replicate · 1 step (emulated)"
    assert steps_label("fal", 8, False) == "fal · 8 steps" and steps_label("fal", None, False) == "fal"


def test_a_group_without_a_cost_bar_says_why(tmp_path: Path) -> None:
    rows = [
        ResultRow(job="1", prompt="p", provider="fal", steps=1, outcome="unknown", cost_usd=None),
        ResultRow(job="2", prompt="p", provider="replicate", steps=1, outcome="failed", cost_usd=0.0),
        ResultRow(job="3", prompt="p", provider="local", steps=1, outcome="succeeded", num_images=1, cost_usd=0.001),
    ]
    notes = [cost_note(s) for s in group_stats(rows)]
    assert notes == ["cost unknown", "no image", "$0.0010 (est.)"]
    assert [p.name for p in write_plots(rows, tmp_path)] == [
        "latency_cdf.png",
        "cost_per_image.png",
        "latency_breakdown.png",
    ]
