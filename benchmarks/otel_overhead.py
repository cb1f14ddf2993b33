"""CPU added per request by the telemetry code when no OpenTelemetry provider is set (target < 5%).

Requests go through a `Router` over fal against a sandbox in its own process (`inference_s=0`),
one at a time on one event loop, so this process's CPU time is the client's alone. Settings
alternate block by block so drift hits them alike:

- `baseline`: `lightning_client.telemetry`'s span helpers replaced by empty context managers
  (the request path as if the feature did not exist);
- `absent`: OpenTelemetry not imported (its modules hidden from `sys.modules`);
- `api, no provider`: `opentelemetry.trace` and `.metrics` imported, no provider set;
- `sdk on` (for reference, run last): an SDK tracer and meter provider whose spans go nowhere.

    python benchmarks/otel_overhead.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
from collections.abc import Iterator
from typing import Any

from _common import FAL_KEY, SIZE, RemoteSandbox, cpu_seconds, write_result

import lightning_client as lc
from lightning_client import telemetry

TARGET_PERCENT = 5.0
_OTEL = ("opentelemetry.trace", "opentelemetry.metrics")


@contextlib.contextmanager
def _nothing(*args: Any) -> Iterator[None]:
    yield None


@contextlib.contextmanager
def _setting(name: str) -> Iterator[None]:
    """Put the process in one of the settings for the duration of a block."""
    saved = {key: getattr(telemetry, key) for key in ("generation_span", "attempt_span")}
    hidden = {key: sys.modules.pop(key) for key in _OTEL if name in ("baseline", "absent") and key in sys.modules}
    if name == "baseline":
        telemetry.generation_span = _nothing  # type: ignore[assignment]
        telemetry.attempt_span = _nothing  # type: ignore[assignment]
    try:
        yield
    finally:
        sys.modules.update(hidden)
        for key, value in saved.items():
            setattr(telemetry, key, value)


async def _block(router: lc.Router, n: int) -> float:
    """CPU milliseconds per request over `n` requests."""
    before = cpu_seconds()
    for _ in range(n):
        await router.agenerate("benchmark", **SIZE)
    return (cpu_seconds() - before) / n * 1e3


async def _alternate(router: lc.Router, names: list[str], rounds: int, block: int) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(rounds):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:  # each setting first in turn
            with _setting(name):
                samples[name].append(await _block(router, block))
    return samples


def _set_sdk_providers() -> None:
    from opentelemetry import metrics, trace
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider

    trace.set_tracer_provider(TracerProvider())  # no span processor: spans are made, then dropped
    metrics.set_meter_provider(MeterProvider(metric_readers=[InMemoryMetricReader()]))


async def _run(rounds: int, block: int) -> dict[str, Any]:
    import opentelemetry.metrics
    import opentelemetry.trace  # noqa: F401  (the `api, no provider` setting)

    with RemoteSandbox() as sb:
        sb.configure("fal", inference_s=0)
        fal = lc.FalGenerator(api_key=FAL_KEY, base_url=sb.fal_url, rest_url=sb.fal_url)
        router = lc.Router([fal], hooks=[])
        try:
            await _block(router, block)  # warm-up: connections, prices
            samples = await _alternate(router, ["baseline", "absent", "api, no provider"], rounds, block)
            _set_sdk_providers()
            on = await _alternate(router, ["baseline", "sdk on"], rounds, block)
        finally:
            await router.aclose()
    median = {name: statistics.median(values) for name, values in samples.items()}
    base = median["baseline"]
    on_base = statistics.median(on["baseline"])
    rows = {
        name: {"cpu_ms_per_request": round(value, 3), "added_percent": round((value - base) / base * 100, 2)}
        for name, value in median.items()
    }
    on_ms = statistics.median(on["sdk on"])
    rows["sdk on"] = {
        "cpu_ms_per_request": round(on_ms, 3),
        "added_percent": round((on_ms - on_base) / on_base * 100, 2),
    }
    worst = max(rows["absent"]["added_percent"], rows["api, no provider"]["added_percent"])
    return {
        "rounds": rounds,
        "block": block,
        "settings": rows,
        "target_percent": TARGET_PERCENT,
        "no_provider_within_target": worst < TARGET_PERCENT,
    }


def run(quick: bool = False) -> dict[str, Any]:
    """Median CPU milliseconds per request in each setting, and the percentage added over the baseline."""
    return asyncio.run(_run(rounds=6 if quick else 20, block=25 if quick else 50))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a few blocks of a few requests (a smoke run)")
    args = parser.parse_args()
    report = run(quick=args.quick)
    for name, row in report["settings"].items():
        print(f"{name:>18}: {row['cpu_ms_per_request']:8.3f} ms CPU/request  ({row['added_percent']:+.2f}%)")
    verdict = "within" if report["no_provider_within_target"] else "ABOVE"
    print(f"no provider set: {verdict} the {TARGET_PERCENT:g}% target")
    if not args.quick:
        print(f"wrote {write_result('otel_overhead', report)}")


if __name__ == "__main__":
    main()
