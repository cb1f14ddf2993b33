"""Matplotlib plots of a run: latency CDF, cost per image, stacked latency breakdown.

matplotlib is imported here only (the `report` extra); figures are drawn without pyplot,
so no GUI backend or global state is involved.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lightning_client._money import format_usd
from lightning_client.report.labels import provider_color, steps_label
from lightning_client.report.rows import ResultRow
from lightning_client.report.stats import GroupStats, group_stats

__all__ = ["plots_available", "write_plots"]

#: Phases of the latency breakdown: greys and one accent, so they are not read as providers.
_PHASE_COLORS = ("#B0B0B0", "#4A4A4A", "#8FA8C8", "#E2E2E2")
_LINE_STYLES = ("-", "--", ":", "-.")


def plots_available() -> bool:
    """Whether matplotlib can be imported."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=110, layout="constrained")


def _label(row: ResultRow, multi_steps: bool) -> str:
    if row.steps is None or not (multi_steps or row.steps_emulated):
        return row.provider
    return steps_label(row.provider, row.steps, row.steps_emulated)


def _tick_label(label: str) -> str:
    """A bar's x label on two lines (provider, then steps) so neighbours never overlap."""
    return label.replace(" · ", "\n", 1)


def latency_cdf(rows: Sequence[ResultRow], path: Path) -> Path:
    """Empirical CDF of end-to-end latency of successful attempts, one line per provider (x steps)."""
    multi = len({r.steps for r in rows}) > 1
    series: dict[str, list[float]] = {}
    providers: dict[str, str] = {}
    for row in rows:
        if row.succeeded and row.total_s is not None:
            label = _label(row, multi)
            series.setdefault(label, []).append(row.total_s)
            providers[label] = row.provider
    fig = _figure(7, 4.2)
    ax = fig.add_subplot()
    seen: dict[str, int] = {}
    for label, values in series.items():
        provider = providers[label]
        # One colour per provider; its step counts differ by line style.
        style = _LINE_STYLES[seen.get(provider, 0) % len(_LINE_STYLES)]
        seen[provider] = seen.get(provider, 0) + 1
        ordered = sorted(values)
        fractions = [(k + 1) / len(ordered) for k in range(len(ordered))]
        ax.step(
            [ordered[0], *ordered],
            [0.0, *fractions],
            where="post",
            label=f"{label} (n={len(ordered)})",
            color=provider_color(provider),
            linestyle=style,
        )
    ax.set_xlabel("end-to-end latency (s)")
    ax.set_ylabel("fraction of images")
    ax.set_ylim(0, 1.02)
    ax.set_title("Latency CDF per provider")
    ax.grid(alpha=0.3)
    if series:
        ax.legend(loc="lower right")
    else:
        ax.text(0.5, 0.5, "no successful attempts", ha="center", va="center", transform=ax.transAxes)
    fig.savefig(path, format="png")
    return path


def cost_note(s: GroupStats) -> str:
    """The label above a bar: its dollars, or why there is no bar."""
    if s.unknown_costs:
        return "cost unknown"
    if s.cost_per_image is None:
        return "no image"
    return format_usd(s.cost_per_image, estimated=s.cost_estimated)


def cost_per_image(rows: Sequence[ResultRow], path: Path) -> Path:
    """Bar chart of dollars per delivered image, per provider x steps; a group without a figure says why."""
    stats = group_stats(rows)
    fig = _figure(max(7.0, 1.1 * len(stats) + 1.5), 4.2)
    ax = fig.add_subplot()
    labels = [_tick_label(s.label) for s in stats]
    values = [s.cost_per_image or 0.0 for s in stats]
    bars = ax.bar(labels, values, color=[provider_color(s.provider) for s in stats])
    ax.bar_label(bars, labels=[cost_note(s) for s in stats], padding=3, fontsize="small")
    ax.set_ylabel("USD per image")
    ax.set_title("Cost per image (failed attempts included)")
    ax.margins(y=0.2)
    ax.grid(axis="y", alpha=0.3)
    if len(stats) > 6:
        ax.tick_params(axis="x", labelrotation=30)
        for tick in ax.get_xticklabels():
            tick.set_horizontalalignment("right")
    if not stats:
        ax.text(0.5, 0.5, "no attempts", ha="center", va="center", transform=ax.transAxes)
    fig.savefig(path, format="png")
    return path


def latency_breakdown(rows: Sequence[ResultRow], path: Path) -> Path:
    """Stacked bars of the median queue, inference, download and remaining seconds."""
    stats = [s for s in group_stats(rows) if s.p50_s is not None]
    fig = _figure(7, 1.6 + 0.6 * max(len(stats), 1))
    ax = fig.add_subplot()
    labels = [s.label for s in stats]
    parts: dict[str, list[float]] = {"queue": [], "inference": [], "download": [], "other": []}
    for s in stats:
        queue, inference, download = s.queue_p50_s or 0.0, s.inference_p50_s or 0.0, s.download_p50_s or 0.0
        parts["queue"].append(queue)
        parts["inference"].append(inference)
        parts["download"].append(download)
        parts["other"].append(max((s.p50_s or 0.0) - queue - inference - download, 0.0))
    left = [0.0] * len(stats)
    for i, (name, values) in enumerate(parts.items()):
        ax.barh(labels, values, left=left, label=name, color=_PHASE_COLORS[i])
        left = [a + b for a, b in zip(left, values, strict=True)]
    ax.invert_yaxis()
    ax.set_xlabel("median seconds")
    ax.set_title("Where the time goes (median per phase)")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.25), ncols=4, fontsize="small", frameon=False)
    ax.grid(axis="x", alpha=0.3)
    fig.savefig(path, format="png")
    return path


def write_plots(rows: Sequence[ResultRow], directory: Path) -> list[Path]:
    """Draw the three plots into `directory`; raises ImportError without matplotlib."""
    import matplotlib  # noqa: F401 - fail early with a clear ImportError

    directory.mkdir(parents=True, exist_ok=True)
    return [
        latency_cdf(rows, directory / "latency_cdf.png"),
        cost_per_image(rows, directory / "cost_per_image.png"),
        latency_breakdown(rows, directory / "latency_breakdown.png"),
    ]
