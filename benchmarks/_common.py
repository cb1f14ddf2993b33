"""Helpers shared by the benchmarks: percentiles, machine description, JSON output, a sandbox in its own process."""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import platform
import random
import resource
import statistics
import sys
from collections.abc import Sequence
from datetime import datetime, timezone
from multiprocessing.connection import Connection
from pathlib import Path
from types import TracebackType
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
#: Small images so that the download does not dominate the lag being measured.
SIZE = {"width": 256, "height": 256}
REPLICATE_TOKEN = "r8_benchmark_token"
FAL_KEY = "bench:key"


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100), linearly interpolated; NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summarize_ms(seconds: Sequence[float]) -> dict[str, float]:
    """n, p50, p95, mean of `seconds`, in milliseconds."""
    return {
        "n": len(seconds),
        "p50_ms": round(percentile(seconds, 50) * 1e3, 2),
        "p95_ms": round(percentile(seconds, 95) * 1e3, 2),
        "mean_ms": round(statistics.fmean(seconds) * 1e3, 2) if seconds else math.nan,
    }


def p50_ratio_interval(
    ours: Sequence[float], theirs: Sequence[float], *, level: float = 90, resamples: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """Bootstrap interval (`level` percent) of median(ours) / median(theirs), both resampled independently."""
    rng = random.Random(seed)
    ratios = [
        percentile(rng.choices(ours, k=len(ours)), 50) / percentile(rng.choices(theirs, k=len(theirs)), 50)
        for _ in range(resamples)
    ]
    tail = (100 - level) / 2
    return percentile(ratios, tail), percentile(ratios, 100 - tail)


def cpu_seconds() -> float:
    """User + system CPU seconds of this process so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "os": f"{platform.system()} {platform.release()}",
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def write_result(name: str, data: dict[str, Any]) -> Path:
    """benchmarks/results/<name>.json with the machine description added."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **data}, indent=2, default=str) + "\n")
    return path


def _serve(conn: Connection) -> None:
    """Child process: run a Sandbox and answer control messages until told to stop."""
    from lightning_client.testing import Sandbox

    with Sandbox() as sb:
        conn.send({"replicate_url": sb.replicate_url, "fal_url": sb.fal_url, "fal_run_url": sb.fal_run_url})
        handles = {"replicate": sb.replicate, "fal": sb.fal}
        while True:
            command, provider, arguments = conn.recv()
            if command == "stop":
                break
            if command == "cpu":
                conn.send(cpu_seconds())
            elif command == "configure":
                handles[provider].configure(**arguments)
                conn.send(None)
            elif command == "reset":
                handles[provider].reset()
                conn.send(None)
            elif command == "stats":
                conn.send(handles[provider].stats())
    conn.send(None)


class RemoteSandbox:
    """A `Sandbox` in a child process, so the client's CPU and memory are measured alone.

    Settings are plain values (numbers, lists): they cross a process boundary.
    """

    def __init__(self) -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self._process = context.Process(target=_serve, args=(child,), daemon=True)
        self.urls: dict[str, str] = {}

    def __enter__(self) -> RemoteSandbox:
        self._process.start()
        if not self._conn.poll(60):
            raise RuntimeError("the sandbox process did not start within 60 s")
        self.urls = self._conn.recv()
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        try:
            self._conn.send(("stop", "", {}))
            self._conn.poll(10)
        finally:
            self._process.join(timeout=10)
            if self._process.is_alive():
                self._process.terminate()

    @property
    def replicate_url(self) -> str:
        return self.urls["replicate_url"]

    @property
    def fal_url(self) -> str:
        return self.urls["fal_url"]

    @property
    def fal_run_url(self) -> str:
        return self.urls["fal_run_url"]

    def _call(self, command: str, provider: str = "", **arguments: Any) -> Any:
        self._conn.send((command, provider, arguments))
        if not self._conn.poll(60):
            raise RuntimeError(f"the sandbox process did not answer {command!r} within 60 s")
        return self._conn.recv()

    def configure(self, provider: str, **settings: Any) -> None:
        self._call("configure", provider, **settings)

    def reset(self, provider: str) -> None:
        self._call("reset", provider)

    def stats(self, provider: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call("stats", provider)
        return result

    def cpu_seconds(self) -> float:
        """CPU seconds the sandbox process has used so far."""
        result: float = self._call("cpu")
        return result


def python() -> str:
    """The interpreter running the benchmarks (for subprocesses)."""
    return sys.executable
