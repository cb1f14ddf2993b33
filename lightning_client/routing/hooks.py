"""Callbacks on attempt start and end (spans and metrics are `lightning_client.telemetry`'s).

A hook is any callable `hook(event, attempt)` with event "start", "job" (the remote id is
known) or "end"; skipped generators produce a single "end" with `outcome="skipped"`.
Hooks run inline in the attempt's task: keep them quick. A hook that raises is logged
and ignored, never breaking a generation.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable

from lightning_client._log import get_logger
from lightning_client.generator import AttemptEvent
from lightning_client.result import Attempt

__all__ = ["AttemptHook", "Hooks", "OpenTelemetryHook"]

logger = get_logger("lightning_client")

AttemptHook = Callable[[AttemptEvent, Attempt], None]


class Hooks:
    """Adapts separate `on_start` / `on_job` / `on_end` callables to one hook."""

    def __init__(
        self,
        *,
        on_start: Callable[[Attempt], None] | None = None,
        on_job: Callable[[Attempt], None] | None = None,
        on_end: Callable[[Attempt], None] | None = None,
    ) -> None:
        self._by_event = {"start": on_start, "job": on_job, "end": on_end}

    def __call__(self, event: AttemptEvent, attempt: Attempt) -> None:
        callback = self._by_event.get(event)
        if callback is not None:
            callback(attempt)


class OpenTelemetryHook:
    """Deprecated and inert: every generation and attempt is traced without a hook (`lightning_client.telemetry`).

    Kept so `hooks=[OpenTelemetryHook()]` still runs; spans go to the application's global tracer provider.
    """

    def __init__(self, tracer_provider: object = None) -> None:
        warnings.warn(
            "OpenTelemetryHook is deprecated and does nothing: generations and attempts are traced with the "
            "global tracer provider (opentelemetry.trace.set_tracer_provider); remove it from hooks=",
            DeprecationWarning,
            stacklevel=2,
        )

    def __call__(self, event: AttemptEvent, attempt: Attempt) -> None:
        return


def as_hooks(hooks: AttemptHook | Iterable[AttemptHook] | None) -> list[AttemptHook]:
    """Normalize a router's `hooks=` argument (None: no hooks)."""
    if hooks is None:
        return []
    if callable(hooks):
        return [hooks]
    return list(hooks)


def dispatch(hooks: Iterable[AttemptHook], event: AttemptEvent, attempt: Attempt) -> None:
    """Call every hook; one that raises is logged and skipped."""
    for hook in hooks:
        try:
            hook(event, attempt)
        except Exception:  # a hook must never break a generation
            logger.exception("attempt hook %r failed on %s", hook, event)
