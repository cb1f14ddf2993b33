"""Per provider x steps statistics over result rows: latency percentiles, cost per image, success rate."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from pydantic import BaseModel

from lightning_client.ledger import percentile
from lightning_client.report.labels import steps_label
from lightning_client.report.rows import ResultRow

__all__ = ["GroupStats", "group_stats"]


class GroupStats(BaseModel):
    """What one provider did at one step count.

    Latencies cover successful attempts; the success rate is succeeded / (succeeded +
    failed), so a cancelled hedge loser is no failure (as in `Ledger.summary`); the cost
    per image spreads the cost of every attempt (failed ones included) over the images.
    """

    provider: str
    steps: int | None
    attempts: int
    succeeded: int
    failed: int
    images: int
    #: None when any attempt's cost is unknown (`known_cost_usd` has the known dollars).
    total_cost_usd: float | None
    cost_estimated: bool
    p50_s: float | None
    p95_s: float | None
    inference_p50_s: float | None
    queue_p50_s: float | None
    download_p50_s: float | None
    errors: dict[str, int]
    #: The provider emulates this step count (a checkpoint made for another one ran it).
    steps_emulated: bool = False
    known_cost_usd: float = 0.0
    unknown_costs: int = 0

    @property
    def label(self) -> str:
        return steps_label(self.provider, self.steps, self.steps_emulated)

    @property
    def success_rate(self) -> float:
        decided = self.succeeded + self.failed
        return self.succeeded / decided if decided else 0.0

    @property
    def cost_per_image(self) -> float | None:
        return self.total_cost_usd / self.images if self.images and self.total_cost_usd is not None else None


def _pct(values: Iterable[float | None], q: float) -> float | None:
    present = [v for v in values if v is not None]
    return percentile(present, q) if present else None


def group_stats(rows: Sequence[ResultRow]) -> list[GroupStats]:
    """One `GroupStats` per (provider, steps), in first-seen provider order then ascending steps.

    "skipped" rows (jobs a provider could not serve, no attempt made) are left out.
    """
    groups: dict[tuple[str, int | None], list[ResultRow]] = {}
    for row in rows:
        if row.outcome != "skipped":
            groups.setdefault((row.provider, row.steps), []).append(row)
    providers = list(dict.fromkeys(p for p, _ in groups))
    ordered = sorted(groups, key=lambda k: (providers.index(k[0]), -1 if k[1] is None else k[1]))
    stats = []
    for provider, steps in ordered:
        members = groups[(provider, steps)]
        ok = [r for r in members if r.succeeded]
        errors: dict[str, int] = {}
        for row in members:
            if row.error_type:
                errors[row.error_type] = errors.get(row.error_type, 0) + 1
        stats.append(
            GroupStats(
                provider=provider,
                steps=steps,
                attempts=len(members),
                succeeded=len(ok),
                failed=sum(r.outcome in ("failed", "unknown") for r in members),
                images=sum(r.num_images for r in ok),
                total_cost_usd=None
                if any(r.cost_usd is None for r in members)
                else sum(r.cost_known_usd for r in members),
                cost_estimated=any(r.cost_estimated for r in members if r.cost_usd != 0.0),
                known_cost_usd=sum(r.cost_known_usd for r in members),
                unknown_costs=sum(r.cost_usd is None for r in members),
                p50_s=_pct((r.total_s for r in ok), 50),
                p95_s=_pct((r.total_s for r in ok), 95),
                inference_p50_s=_pct((r.inference_s for r in ok), 50),
                queue_p50_s=_pct((r.queue_s for r in ok), 50),
                download_p50_s=_pct((r.download_s for r in ok), 50),
                errors=errors,
                steps_emulated=any(r.steps_emulated for r in members),
            )
        )
    return stats
