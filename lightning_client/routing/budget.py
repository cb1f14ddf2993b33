"""Spending limits: a total and a per-UTC-day budget in dollars, checked before sending.

Every attempt's cost counts (failed and cancelled ones too: providers bill them). A
request reserves its expected cost while it runs, so concurrent requests cannot all
pass the check against the same remaining money.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from datetime import date, datetime, timezone

from lightning_client._money import format_usd
from lightning_client.errors import BudgetExceededError
from lightning_client.result import Attempt

__all__ = ["Budget", "Reservation"]


def _day(moment: datetime | None = None) -> date:
    return (moment or datetime.now(timezone.utc)).astimezone(timezone.utc).date()


class Reservation:
    """Money set aside for one request until it ends."""

    def __init__(self, budget: Budget, usd: float) -> None:
        self._budget = budget
        self.usd = usd
        self._open = True

    def release(self) -> None:
        if self._open:
            self._open = False
            self._budget._unreserve(self.usd)


class Budget:
    """Tracks spend against `total_usd` and `per_day_usd` (None: no limit)."""

    def __init__(self, total_usd: float | None = None, per_day_usd: float | None = None) -> None:
        for name, value in (("budget_usd", total_usd), ("budget_usd_per_day", per_day_usd)):
            if value is not None and value < 0:
                raise ValueError(f"{name} must be >= 0 or None, got {value}")
        self.total_usd = total_usd
        self.per_day_usd = per_day_usd
        self._lock = threading.Lock()
        self._spent = 0.0
        self._today = _day()
        self._spent_today = 0.0
        self._reserved = 0.0

    @property
    def limited(self) -> bool:
        return self.total_usd is not None or self.per_day_usd is not None

    def seed(self, attempts: Iterable[Attempt]) -> None:
        """Count attempts already recorded (e.g. a reopened ledger file)."""
        for attempt in attempts:
            self.spend(attempt.cost.known_usd, attempt.started_at)

    def spend(self, usd: float, when: datetime | None = None) -> None:
        """Count money actually spent (for an unknown cost, its known part)."""
        if not usd:
            return
        with self._lock:
            self._roll()
            self._spent += usd
            if _day(when) == self._today:
                self._spent_today += usd

    def _roll(self) -> None:
        today = _day()
        if today != self._today:
            self._today, self._spent_today = today, 0.0

    def left(self) -> float | None:
        """Dollars left under the tighter limit, reservations deducted (None: unlimited)."""
        with self._lock:
            return self._left()

    def _left(self) -> float | None:
        self._roll()
        lefts = []
        if self.total_usd is not None:
            lefts.append(self.total_usd - self._spent - self._reserved)
        if self.per_day_usd is not None:
            lefts.append(self.per_day_usd - self._spent_today - self._reserved)
        return min(lefts) if lefts else None

    @property
    def spent_usd(self) -> float:
        with self._lock:
            return self._spent

    def check(self, expected_usd: float, *, what: str) -> None:
        """Raise `BudgetExceededError` if `expected_usd` does not fit in what is left.

        Nothing left (e.g. a budget of 0.0) blocks every request, even one whose cost
        is unknown or zero.
        """
        with self._lock:
            self._check(expected_usd, what)

    def _check(self, expected_usd: float, what: str) -> None:
        left = self._left()
        if left is None:
            return
        if left <= 0 or expected_usd > left:
            limits = []
            if self.total_usd is not None:
                limits.append(f"total {format_usd(self.total_usd)} (spent {format_usd(self._spent)})")
            if self.per_day_usd is not None:
                limits.append(f"per day {format_usd(self.per_day_usd)} (spent today {format_usd(self._spent_today)})")
            raise BudgetExceededError(
                f"{what}: expected cost {format_usd(expected_usd)} exceeds the {format_usd(max(left, 0.0))} left of the "
                f"budget ({'; '.join(limits)}; {format_usd(self._reserved)} reserved by requests in flight)",
                provider="router",
            )

    def reserve(self, expected_usd: float, *, what: str) -> Reservation:
        """Check, then hold `expected_usd` until the reservation is released."""
        with self._lock:
            self._check(expected_usd, what)
            self._reserved += expected_usd
        return Reservation(self, expected_usd)

    def _unreserve(self, usd: float) -> None:
        with self._lock:
            self._reserved = max(0.0, self._reserved - usd)
