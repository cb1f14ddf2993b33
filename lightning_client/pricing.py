"""Prices used to turn billed quantities into dollars, each with its source and date.

Override any entry with `PriceTable(...)` or `DEFAULT_PRICES.with_overrides(...)`.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

__all__ = ["DEFAULT_PRICES", "Price", "PriceTable"]


class Price(BaseModel):
    """A unit price with where it came from."""

    model_config = ConfigDict(frozen=True)

    usd: float
    unit: str
    source: str
    as_of: str


class PriceTable(BaseModel):
    """Replicate hardware $/s, fal per-unit prices and the local GPU and CPU $/hour."""

    model_config = ConfigDict(frozen=True)

    replicate_hardware: dict[str, Price] = {
        "gpu-t4": Price(usd=0.000225, unit="second", source="https://replicate.com/pricing", as_of="2026-11"),
        "gpu-a40-small": Price(usd=0.000575, unit="second", source="https://replicate.com/pricing", as_of="2026-11"),
        "gpu-a40-large": Price(usd=0.000725, unit="second", source="https://replicate.com/pricing", as_of="2026-11"),
        "gpu-l40s": Price(usd=0.000975, unit="second", source="https://replicate.com/pricing", as_of="2026-11"),
        "gpu-a100-large": Price(usd=0.0014, unit="second", source="https://replicate.com/pricing", as_of="2026-11"),
        "gpu-h100": Price(usd=0.001525, unit="second", source="https://replicate.com/pricing", as_of="2026-11"),
    }
    #: Replicate does not publish which GPU runs bytedance/sdxl-lightning-4step; the
    #: L40S rate is a documented assumption (see docs/costs.md).
    replicate_model_hardware: dict[str, str] = {"bytedance/sdxl-lightning-4step": "gpu-l40s"}
    #: Models whose hardware above is confirmed; costs of the others are marked estimated.
    replicate_hardware_confirmed: frozenset[str] = frozenset()
    fal_units: dict[str, Price] = {
        # No official per-image price is published for fal-ai/fast-lightning-sdxl; this is the
        # widely quoted third-party figure, used only when the pricing endpoint is unreachable.
        "fal-ai/fast-lightning-sdxl": Price(
            usd=0.002, unit="image", source="third-party listings; fal pricing API preferred", as_of="2026-11"
        ),
    }
    local_gpu_hour: Price = Price(
        usd=5.49, unit="GPU hour", source="H100 on-demand rate, https://replicate.com/pricing", as_of="2026-11"
    )
    #: Local generation on a CPU (or MPS) device: wall-clock seconds of a 4-vCPU machine,
    #: priced like Replicate's "cpu" hardware ($0.000100/s), not like a GPU.
    local_cpu_hour: Price = Price(
        usd=0.36, unit="CPU hour", source="4-vCPU 'cpu' rate, https://replicate.com/pricing", as_of="2026-11"
    )

    def replicate_rate(self, model: str) -> tuple[str, Price]:
        """(hardware sku, $/s) for a Replicate model ('owner/name' or 'owner/name:version')."""
        sku = self.replicate_model_hardware.get(model.split(":")[0], "gpu-l40s")
        return sku, self.replicate_hardware[sku]

    def fal_unit(self, app: str) -> Price | None:
        """The fallback unit price for a fal app, if known."""
        return self.fal_units.get(app)


DEFAULT_PRICES = PriceTable()
