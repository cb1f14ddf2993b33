"""`report.md`: the per provider x steps table, failures, plots and contact sheets of one run."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from lightning_client._money import format_usd
from lightning_client.report.labels import plural
from lightning_client.report.rows import ResultRow
from lightning_client.report.stats import GroupStats, group_stats

__all__ = ["failovers", "write_markdown"]


def _seconds(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f} s"


def _per_image(s: GroupStats) -> str:
    if s.unknown_costs:
        return f"unknown ({plural(s.unknown_costs, 'attempt')} of unknown cost)"
    return "–" if s.cost_per_image is None else format_usd(s.cost_per_image, estimated=s.cost_estimated)


def _total(rows: Sequence[ResultRow]) -> str:
    known = sum(r.cost_known_usd for r in rows)
    unknown = sum(r.cost_usd is None for r in rows)
    if unknown:
        return f"{format_usd(None, known)}; {plural(unknown, 'attempt')} of unknown cost"
    estimated = any(r.cost_estimated for r in rows if r.cost_usd != 0.0)
    return format_usd(known, estimated=estimated)


def failovers(rows: Sequence[ResultRow]) -> int:
    """How many jobs were served by a different provider than the one first tried."""
    by_job: dict[str, list[ResultRow]] = {}
    for row in rows:
        by_job.setdefault(row.job, []).append(row)
    count = 0
    for attempts in by_job.values():
        ordered = sorted(attempts, key=lambda r: r.attempt)
        winner = next((r for r in ordered if r.succeeded), None)
        if winner is not None and winner.provider != ordered[0].provider:
            count += 1
    return count


def _steps(s: GroupStats) -> str:
    if s.steps is None:
        return "–"
    return f"{s.steps} (emulated)" if s.steps_emulated else str(s.steps)


def _table(stats: Sequence[GroupStats]) -> list[str]:
    lines = [
        "| provider | steps | attempts | success rate | p50 latency | p95 latency | inference p50 | cost / image |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in stats:
        lines.append(
            f"| {s.provider} | {_steps(s)} | {s.attempts} | {s.success_rate:.0%} "
            f"| {_seconds(s.p50_s)} | {_seconds(s.p95_s)} | {_seconds(s.inference_p50_s)} "
            f"| {_per_image(s)} |"
        )
    return lines


def write_markdown(
    rows: Sequence[ResultRow],
    path: Path,
    *,
    title: str = "SDXL-Lightning comparison",
    notes: Sequence[str] = (),
    plots: Sequence[Path] = (),
    sheets: Sequence[Path] = (),
) -> Path:
    """Write the Markdown report; `plots` and `sheets` are linked relative to the report."""
    stats = group_stats(rows)
    jobs = {r.job for r in rows}
    done = {r.job for r in rows if r.succeeded}
    lines = [f"# {title}", ""]
    lines += [f"- {note}" for note in notes]
    lines += [
        f"- jobs: {len(jobs)}, succeeded: {len(done)}, attempts: {len(rows)}, served after failover: {failovers(rows)}",
        f"- total cost: {_total(rows)}",
        "",
        "## Per provider and step count",
        "",
        *_table(stats),
        "",
        "Latencies are end-to-end seconds of successful attempts (submit to images downloaded). "
        "Cost per image divides the cost of every attempt, failed ones included, by the images delivered; "
        "(est.) marks costs computed from list prices rather than billed amounts.",
        "",
    ]
    emulated = [s.label for s in stats if s.steps_emulated]
    if emulated:
        lines += [
            f"**Emulated step counts**: {', '.join(emulated)}. The provider ran these step counts on a "
            "checkpoint made for another step count, so their images and timings are not a comparison of "
            "SDXL-Lightning's step checkpoints (each row's `note` in results.csv says which).",
            "",
        ]
    failures = [s for s in stats if s.errors]
    skipped = [r for r in rows if r.outcome == "skipped"]
    if failures or skipped:
        lines += ["## Failures", ""]
        for s in failures:
            listed = ", ".join(f"{name} x{count}" for name, count in sorted(s.errors.items()))
            lines.append(f"- {s.label}: {listed}")
        not_sent: dict[tuple[str, int | None], list[ResultRow]] = {}
        for row in skipped:
            not_sent.setdefault((row.provider, row.steps), []).append(row)
        for (provider, steps), group in not_sent.items():
            why = group[0].error_message or group[0].note or "not eligible"
            where = provider if steps is None else f"{provider} · {plural(steps, 'step')}"
            lines.append(f"- {where}: not attempted x{len(group)} (first reason: {why})")
        lines.append("")
    if plots:
        lines += ["## Plots", ""]
        for plot in plots:
            lines += [f"![{plot.stem.replace('_', ' ')}]({plot.relative_to(path.parent).as_posix()})", ""]
    if sheets:
        lines += ["## Contact sheets", ""]
        for sheet in sheets:
            lines += [f"![{sheet.stem}]({sheet.relative_to(path.parent).as_posix()})", ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
