"""A realtime session that follows someone typing: each keystroke is a send, the newest one wins.

    python examples/realtime_typing.py "a lighthouse at dusk"     # fal's realtime socket, emulated offline
    FAL_KEY=... python examples/realtime_typing.py "a lighthouse"   # the real fal.ai

Without FAL_KEY it runs against the sandbox, whose fal emulator takes 0.2 s per image here.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import lightning_client as lc
from lightning_client.realtime import RealtimeResult


@contextlib.asynccontextmanager
async def fal_generator() -> AsyncIterator[lc.FalGenerator]:
    """The real fal.ai with FAL_KEY, else the sandbox's fal emulator."""
    if os.environ.get("FAL_KEY"):
        async with lc.FalGenerator() as fal:
            yield fal
        return
    from lightning_client.testing import Sandbox

    async with Sandbox() as sb:
        sb.fal.configure(inference_s=0.2)
        async with lc.FalGenerator(
            api_key="sandbox:key", base_url=sb.fal_url, run_url=sb.fal_run_url, rest_url=sb.fal_rest_url
        ) as fal:
            yield fal


async def type_prompt(prompt: str, keystroke_s: float = 0.05) -> list[RealtimeResult]:
    """Send every prefix of `prompt` as it is "typed"; collect the frames that were served."""
    async with fal_generator() as fal, fal.realtime(throttle_s=0.1) as session:
        for end in range(1, len(prompt) + 1):
            await session.send(prompt[:end], steps=2, width=512, height=512, seed=42, output_format="jpeg")
            await asyncio.sleep(keystroke_s)
        await session.finish()
        frames = [frame async for frame in session]
        stats = session.stats()
    print(f"{stats.sends} keystrokes: {stats.sent} sent, {stats.superseded} superseded, {stats.served} served")
    return frames


def main() -> None:
    prompt = " ".join(sys.argv[1:]) or "a lighthouse at dusk"
    frames = asyncio.run(type_prompt(prompt))
    for frame in frames:
        print(f"#{frame.send_id:<3} {frame.latency_s * 1000:5.0f} ms  {frame.transport:<9} {frame.prompt!r}")
    last = Path("out/realtime-last.jpg")  # out/ is ignored by git
    last.parent.mkdir(parents=True, exist_ok=True)
    frames[-1].images[0].save(last)
    print(f"last frame is {frames[-1].prompt!r}: {last}")


if __name__ == "__main__":
    main()
