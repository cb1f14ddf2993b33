"""Spending limits: a total and a per-UTC-day budget in dollars, checked before sending.

Every attempt's cost counts (failed and cancelled ones too: providers bill them). A
request reserves its expected cost while it runs, so concurrent requests cannot all
pass the check against the same remaining money.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from datetime import date, datetime, timezone
from typing import TYPE_CHECKING

from lightning_client._money import format_usd
from lightning_client.errors import BudgetExceededError
from lightning_client.result import Attempt

if TYPE_CHECKING:
    from lightning_client.ledger import Ledger
    from lightning_client.state.store import Totals

__all__ = ["HOLD_S", "Budget", "Reservation", "SharedBudget"]

#: How long a shared hold lasts at most when its request sets no `timeout_s` (the longest hosted job
#: limit, 30 minutes, plus a margin); a hold also ends when its process is gone.
HOLD_S = 1860.0


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


class _Hold(Reservation):
    """A hold in a shared budget's store, ended through the ledger's writer (after the rows before it)."""

    def __init__(self, budget: SharedBudget, hold: str, usd: float) -> None:
        super().__init__(budget, usd)
        self._ledger = budget.ledger
        self.hold = hold

    def release(self) -> None:
        if self._open:
            self._open = False
            self._ledger.release_hold(self.hold)


class SharedBudget(Budget):
    """The limits of budget `name`, counted in `ledger`'s store and shared by every process using it.

    Spend is the known cost of every attempt row of that budget (today: those started this UTC
    day); reservations are holds in the store. Reads query the store, so call `reserve` off the
    event loop (the router does).
    """

    def __init__(self, ledger: Ledger, name: str, total_usd: float | None, per_day_usd: float | None) -> None:
        super().__init__(total_usd, per_day_usd)
        if not name:
            raise ValueError("budget_name must be a non-empty string")
        self.ledger = ledger
        self.name = name

    def seed(self, attempts: Iterable[Attempt]) -> None:
        """Nothing to do: the store already counts every recorded attempt."""

    def spend(self, usd: float, when: datetime | None = None) -> None:
        """Nothing to do: an attempt's row in the ledger is its spend."""

    def _load(self, totals: Totals) -> None:
        self._today = _day()
        self._spent, self._spent_today, self._reserved = totals.spent, totals.spent_today, totals.reserved

    def _fresh(self) -> None:
        totals = self.ledger.store.totals(self.name)
        self._load(totals)

    def left(self) -> float | None:
        with self._lock:
            self._fresh()
            return self._left()

    @property
    def spent_usd(self) -> float:
        return self.ledger.store.totals(self.name).spent

    def check(self, expected_usd: float, *, what: str) -> None:
        with self._lock:
            self._fresh()
            self._check(expected_usd, what)

    def reserve(self, expected_usd: float, *, what: str, ttl_s: float = HOLD_S) -> Reservation:
        """Atomically in the store: check, then hold `expected_usd` (for at most `ttl_s`) until released."""

        def check(totals: Totals) -> None:
            with self._lock:
                self._load(totals)
                self._check(expected_usd, what)

        hold = self.ledger.store.reserve(self.name, expected_usd, ttl_s, check)
        return _Hold(self, hold, expected_usd)
