"""Replicate's prices: `metrics.predict_time` x the $/s of the model's hardware, from the price table."""

from __future__ import annotations

import time
from typing import Any

from lightning_client.pricing import PriceTable
from lightning_client.providers._http import parse_timestamp
from lightning_client.providers.replicate.wire import TERMINAL, predict_time
from lightning_client.result import Cost

__all__ = ["ReplicatePricing"]


class ReplicatePricing:
    """The cost of a model's predictions from the price table (hardware SKU and its $/s)."""

    def __init__(self, prices: PriceTable, model: str) -> None:
        self.prices = prices
        self.model = model
        self._rate: tuple[float, str, bool] | None = None

    def rate(self) -> tuple[float, str, bool]:
        """$/s of the model's hardware, where that price is from, and whether the hardware is assumed
        (remembered: read on every request)."""
        if self._rate is None:
            sku, price = self.prices.replicate_rate(self.model)
            source = f"{sku}, {price.source.removeprefix('https://').removeprefix('http://')} {price.as_of}"
            assumed = self.model.split(":")[0] not in self.prices.replicate_hardware_confirmed
            self._rate = (price.usd, source, assumed)
        return self._rate

    def cost(self, prediction: dict[str, Any]) -> Cost:
        """`predict_time` x the hardware's $/s; aborted or never-started predictions cost nothing."""
        status = prediction.get("status")
        if status == "aborted":
            return Cost(usd=0.0, basis="aborted before start: not charged", estimated=False)
        usd_per_s, source, assumed_sku = self.rate()
        seconds = predict_time(prediction)
        if seconds is not None:
            return Cost(
                usd=seconds * usd_per_s,
                basis=f"predict_time {seconds:.3f} s x ${usd_per_s:.6f}/s ({source})",
                estimated=assumed_sku,
            )
        started = parse_timestamp(prediction.get("started_at"))
        if started is None:
            return Cost(usd=0.0, basis=f"prediction {status or 'unknown'} before start: not charged", estimated=False)
        ended = parse_timestamp(prediction.get("completed_at"))
        seconds = max(0.0, (ended.timestamp() if ended else time.time()) - started.timestamp())
        return Cost(
            usd=seconds * usd_per_s,
            basis=f"~{seconds:.3f} s since started_at (no predict_time) x ${usd_per_s:.6f}/s ({source})",
            estimated=True,
        )

    def abandoned_cost(self, pid: str, final: dict[str, Any] | None, last: dict[str, Any]) -> Cost:
        """The cost of a prediction we cancelled: from the cancel's answer; unknown when the cancel failed
        on a prediction that had not ended (it may run to the end and be billed)."""
        if final is not None:
            return self.cost(final)
        if last.get("status") in TERMINAL:
            return self.cost(last)
        return Cost.unknown(f"cancel of prediction {pid} failed: it may run and be billed")
