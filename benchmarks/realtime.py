"""Realtime sessions: frame lag against the queue path on the sandbox, latest wins, and local frames per second.

- Frame lag: the time from `send` to the result in hand, minus the compute the provider reports
  (`timings.inference`), for a fal realtime session on the sandbox's WebSocket; the same for
  `FalGenerator.agenerate` through the queue API (submit, status stream, result, image download).
  The two alternate, one request at a time, with 0.2 s of compute and 512x512 JPEG images; the HTTP
  requests each path makes per frame are counted too (loopback hides what each costs on a network).
- Latest wins: 20 sends 30 ms apart with 0.2 s of compute: how many are served, how many superseded,
  and how long after the last send its frame arrives.
- Local: end-to-end frames per second of a session on the tiny offline pipeline (CPU), each send
  waiting for its frame, against direct `agenerate` calls on the same warm generator.

    python benchmarks/realtime.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import FAL_KEY, summarize_ms, write_result

import lightning_client as lc
from lightning_client.realtime import RealtimeSessionLike
from lightning_client.testing import Sandbox

COMPUTE_S = 0.2
FRAME = {"width": 512, "height": 512, "steps": 2, "output_format": "jpeg"}


def _fal(sb: Sandbox) -> lc.FalGenerator:
    return lc.FalGenerator(api_key=FAL_KEY, base_url=sb.fal_url, run_url=sb.fal_run_url, rest_url=sb.fal_rest_url)


async def _lag(sb: Sandbox, rounds: int) -> dict[str, Any]:
    sb.fal.configure(inference_s=COMPUTE_S)
    realtime_lag: list[float] = []
    queue_lag: list[float] = []
    async with _fal(sb) as gen, gen.realtime(throttle_s=0) as session:
        for warm in range(2):  # connections, token and price lookup, outside the measurement
            await session.send(f"warm {warm}", seed=warm, **FRAME)
            await session.__anext__()
            await gen.agenerate(f"warm {warm}", seed=warm, **FRAME)
        http = {"realtime": 0, "queue": 0}
        for i in range(rounds):
            before = _http_requests(sb)
            await session.send(f"frame {i}", seed=i, **FRAME)
            frame = await session.__anext__()
            realtime_lag.append(frame.latency_s - (frame.timings.inference_s or 0.0))
            http["realtime"] += _http_requests(sb) - before
            before = _http_requests(sb)
            started = time.monotonic()
            result = await gen.agenerate(f"frame {i}", seed=i, **FRAME)
            queue_lag.append(time.monotonic() - started - (result.timings.inference_s or 0.0))
            http["queue"] += _http_requests(sb) - before
    realtime, queue = summarize_ms(realtime_lag), summarize_ms(queue_lag)
    return {
        "compute_s": COMPUTE_S,
        "realtime": realtime,
        "queue": queue,
        "ratio_p50": round(realtime["p50_ms"] / queue["p50_ms"], 3),
        # On loopback a round trip costs almost nothing; on a real network each one adds its latency.
        "http_requests_per_frame": {path: round(count / rounds, 2) for path, count in http.items()},
    }


def _http_requests(sb: Sandbox) -> int:
    """HTTP requests the fal emulator has answered (the socket's frames are not requests)."""
    requests: dict[str, int] = sb.fal.stats()["requests"]
    return sum(count for kind, count in requests.items() if kind != "realtime")


async def _latest_wins(sb: Sandbox) -> dict[str, Any]:
    sb.fal.configure(inference_s=COMPUTE_S)
    async with _fal(sb) as gen, gen.realtime(throttle_s=0.1) as session:
        for i in range(20):
            await session.send(f"typing {i}", seed=1, **FRAME)
            last_send = time.monotonic()
            await asyncio.sleep(0.03)
        await session.finish()
        frames = [frame async for frame in session]
        last_frame = time.monotonic()
    stats = session.stats()
    return {
        "sends": stats.sends,
        "sent": stats.sent,
        "superseded": stats.superseded,
        "served": stats.served,
        "last_is_last_send": frames[-1].send_id == 20,
        "last_frame_after_last_send_ms": round((last_frame - last_send) * 1e3, 1),
    }


async def _local_fps(frames: int) -> dict[str, Any]:
    from lightning_client.providers.local import LocalGenerator
    from lightning_client.testing.tiny import build_tiny_lightning

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with tempfile.TemporaryDirectory() as folder:
        tiny = build_tiny_lightning(Path(folder))
        gen = LocalGenerator(base_model=str(tiny.base), lightning_repo=str(tiny.lightning), device="cpu")
        request = {"width": 64, "height": 64, "steps": 2, "output_format": "jpeg"}
        try:
            await gen.aload(2)
            await gen.agenerate("warm", **request)
            started = time.monotonic()
            for i in range(frames):
                await gen.agenerate(f"direct {i}", seed=i, **request)
            direct_s = time.monotonic() - started
            session: RealtimeSessionLike
            async with gen.realtime(throttle_s=0) as session:
                started = time.monotonic()
                for i in range(frames):
                    await session.send(f"session {i}", seed=i, **request)
                    await session.__anext__()
                session_s = time.monotonic() - started
        finally:
            await gen.aclose()
    return {
        "frames": frames,
        "size": "64x64, 2 steps, jpeg",
        "session_fps": round(frames / session_s, 2),
        "direct_fps": round(frames / direct_s, 2),
        "ratio": round(direct_s / session_s, 3),
    }


def run(quick: bool = False) -> dict[str, Any]:
    """Measure all three; `quick` takes fewer samples."""

    async def main() -> dict[str, Any]:
        async with Sandbox() as sb:
            lag = await _lag(sb, 8 if quick else 30)
            sb.fal.reset()
            latest = await _latest_wins(sb)
        local = await _local_fps(6 if quick else 20)
        return {"lag": lag, "latest_wins": latest, "local": local}

    return asyncio.run(main())


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer samples")
    args = parser.parse_args()
    report = run(args.quick)
    print(report)
    print(f"wrote {write_result('realtime', report)}")


if __name__ == "__main__":
    main()
