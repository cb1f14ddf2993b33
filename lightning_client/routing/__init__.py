"""Routing: the `Router`, its policies, circuit breakers, budgets and attempt hooks."""

from __future__ import annotations

from lightning_client.routing.breaker import BreakerConfig, CircuitBreaker
from lightning_client.routing.budget import Budget
from lightning_client.routing.hooks import AttemptHook, Hooks, OpenTelemetryHook
from lightning_client.routing.policies import (
    CheapestPolicy,
    FastestPolicy,
    Policy,
    PriorityPolicy,
    WeightedPolicy,
)
from lightning_client.routing.router import DeadlineExceededError, HedgeConfig, Router

__all__ = [
    "AttemptHook",
    "BreakerConfig",
    "Budget",
    "CheapestPolicy",
    "CircuitBreaker",
    "DeadlineExceededError",
    "FastestPolicy",
    "HedgeConfig",
    "Hooks",
    "OpenTelemetryHook",
    "Policy",
    "PriorityPolicy",
    "Router",
    "WeightedPolicy",
]
