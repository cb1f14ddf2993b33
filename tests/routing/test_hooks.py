"""Attempt hooks, driven by real generators against the sandbox."""

from __future__ import annotations

from typing import Any

import pytest

import lightning_client as lc
from lightning_client.generator import AttemptEvent
from lightning_client.result import Attempt
from lightning_client.routing import Hooks
from lightning_client.testing import Sandbox

SMALL: dict[str, Any] = {"width": 256, "height": 256}


def test_hooks_see_start_job_and_end_of_every_attempt(
    sb: Sandbox, rep: lc.ReplicateGenerator, fal: lc.FalGenerator
) -> None:
    sb.replicate.configure(error_status=409)
    events: list[tuple[AttemptEvent, str, str | None]] = []

    def hook(event: AttemptEvent, attempt: Attempt) -> None:
        events.append((event, attempt.provider, attempt.outcome))

    router = lc.Router([rep, fal], hooks=hook)
    router.generate("x", **SMALL)
    router.generate("x", steps=2, allow_emulation=False, **SMALL)
    assert events == [
        ("start", "replicate", None),
        ("end", "replicate", "failed"),
        ("start", "fal", None),
        ("job", "fal", None),
        ("end", "fal", "succeeded"),
        ("end", "replicate", "skipped"),
        ("start", "fal", None),
        ("job", "fal", None),
        ("end", "fal", "succeeded"),
    ]


def test_a_failing_hook_never_breaks_generation(
    sb: Sandbox, fal: lc.FalGenerator, caplog: pytest.LogCaptureFixture
) -> None:
    ended: list[str] = []

    def broken(attempt: Attempt) -> None:
        raise RuntimeError("hook bug")

    router = lc.Router([fal], hooks=[Hooks(on_start=broken), Hooks(on_end=lambda a: ended.append(a.provider))])
    assert router.generate("x", **SMALL).provider == "fal"
    assert ended == ["fal"] and "attempt hook" in caplog.text


def test_the_former_span_hook_still_runs_and_warns(fal: lc.FalGenerator) -> None:
    from lightning_client.routing import OpenTelemetryHook

    with pytest.warns(DeprecationWarning, match="OpenTelemetryHook"):
        hook = OpenTelemetryHook()
    assert lc.Router([fal], hooks=[hook]).generate("x", **SMALL).provider == "fal"
