"""`RecoveredJob`: what a provider reports about one remote job it is asked for by id after a crash."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from lightning_client.errors import LightningError
from lightning_client.result import Cost, GenerationResult

__all__ = ["RecoveredJob"]


@dataclass
class RecoveredJob:
    """A remote job looked up by id: finished (`result`), failed (`error`), or cancelled because it still ran.

    `cost` is what the provider bills for it (unknown when that cannot be told).
    """

    job_id: str
    status: Literal["succeeded", "failed", "canceled"]
    cost: Cost
    result: GenerationResult | None = None
    error: LightningError | None = None
