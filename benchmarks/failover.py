"""Failover overhead: what a dead primary adds to a request the secondary serves.

Against the loopback sandbox with the real generators. Every request is served by fal;
the primary (Replicate) is either absent (baseline), refusing connections (a closed
loopback port), answering 503, or behind an open circuit breaker. For each request the
router's end-to-end time is split into the serving attempt's own time and everything
else ("added": the failed attempt plus the router's work; the baseline row is the
router's own overhead). Targets: added <= 20 ms with a dead primary, ~0 (the baseline)
once the breaker is open. Comparing end-to-end totals across scenarios instead would
measure mostly the sandbox's own jitter.

    python benchmarks/failover.py            # 60 requests per scenario
    python benchmarks/failover.py --quick    # 20
"""

from __future__ import annotations

import argparse
import contextlib
import json
import socket
import statistics
from typing import Any

import lightning_client as lc
from lightning_client.routing import BreakerConfig
from lightning_client.testing import Latency, Sandbox

SIZE: dict[str, Any] = {"width": 256, "height": 256}


def _closed_port_url() -> str:
    """A loopback URL nobody listens on: connecting is refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def _measure(router: lc.Router, n: int) -> dict[str, float]:
    totals, added, failed_attempt = [], [], []
    for i in range(n):
        result = router.generate(f"failover {i}", **SIZE)
        assert result.provider == "fal", result.provider
        serving = result.attempts[-1].timings.total_s or 0.0
        total = result.timings.total_s or 0.0
        totals.append(total)
        added.append(total - serving)
        failed_attempt.append(sum(a.timings.total_s or 0.0 for a in result.attempts[:-1]))
    return {
        "total_p50_ms": statistics.median(totals) * 1e3,
        "added_p50_ms": statistics.median(added) * 1e3,
        "added_max_ms": max(added) * 1e3,
        "failed_attempt_p50_ms": statistics.median(failed_attempt) * 1e3,
    }


def run(quick: bool = False) -> dict[str, Any]:
    """Measure every scenario; returns {scenario: numbers} plus the added latency vs baseline."""
    n = 20 if quick else 60
    results: dict[str, Any] = {}
    with Sandbox() as sb:
        sb.fal.configure(inference_s=Latency(0.05))
        fal = lc.FalGenerator(api_key="fal-test", base_url=sb.fal_url)
        live = lc.ReplicateGenerator(api_key="r8_test", base_url=sb.replicate_url)
        dead = lc.ReplicateGenerator(api_key="r8_test", base_url=_closed_port_url())
        # connection pools, clients and price lookups warm before measuring
        fal.generate("warm up", **SIZE)
        live.generate("warm up", **SIZE)
        with contextlib.suppress(lc.ProviderUnavailableError):
            dead.generate("warm up", **SIZE)
        results["baseline (fal alone)"] = _measure(lc.Router([fal], hooks=[]), n)
        results["refused (closed port)"] = _measure(lc.Router([dead, fal], breaker=False, hooks=[]), n)
        sb.replicate.configure(error_status=503)
        results["503 from replicate"] = _measure(lc.Router([live, fal], breaker=False, hooks=[]), n)
        opened = lc.Router([dead, fal], breaker=BreakerConfig(failure_threshold=3, cooldown_s=3600), hooks=[])
        for i in range(3):
            opened.generate(f"open the breaker {i}", **SIZE)
        assert opened.breakers["replicate"].state == "open"
        results["breaker open"] = _measure(opened, n)
        for generator in (fal, live, dead):
            generator.close()
    return {"requests_per_scenario": n, "scenarios": results}


def _print(report: dict[str, Any]) -> None:
    print(f"failover overhead, {report['requests_per_scenario']} sequential requests per scenario (ms)")
    header = f"{'scenario':<24}{'total p50':>11}{'added p50':>11}{'added max':>11}{'failed try p50':>16}"
    print(header)
    print("-" * len(header))
    for name, r in report["scenarios"].items():
        print(
            f"{name:<24}{r['total_p50_ms']:>11.1f}{r['added_p50_ms']:>11.2f}"
            f"{r['added_max_ms']:>11.2f}{r['failed_attempt_p50_ms']:>16.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer requests")
    parser.add_argument("--json", action="store_true", help="also print the numbers as JSON")
    args = parser.parse_args()
    report = run(args.quick)
    _print(report)
    if args.json:
        print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
