"""An application's router: the self-hosted server first, Replicate and fal for overflow and outages.

    LIGHTNING_SERVER_URL=http://gpu-box:8000 LIGHTNING_CLIENT_API_KEY=k \
    REPLICATE_API_TOKEN=... FAL_KEY=... python examples/remote_failover.py

Without LIGHTNING_SERVER_URL it runs offline: a sandbox stands in for Replicate and fal, and a
server over the sandbox stands in for the GPU box; halfway through, that server is stopped.
"""

from __future__ import annotations

import asyncio
import os

import lightning_client as lc


async def serve_prompts(router: lc.Router, prompts: list[str]) -> None:
    for prompt in prompts:
        result = await router.agenerate(prompt, steps=4, width=512, height=512)
        tried = ", ".join(f"{a.provider}:{a.outcome}" for a in result.attempts)
        print(f"{prompt!r}: served by {result.provider} (attempts: {tried})")


async def main() -> None:
    url = os.environ.get("LIGHTNING_SERVER_URL")
    if url:
        router = lc.Router(
            [lc.RemoteGenerator(url), lc.ReplicateGenerator(), lc.FalGenerator()],
            max_wait_s=2.0,  # spill over to hosted when the GPU box is this far behind
        )
        async with router:
            await serve_prompts(router, ["a fox in the snow", "a red bicycle"])
        return
    from lightning_client.serving.app import create_app
    from lightning_client.serving.runner import ServerThread

    with lc.testing.Sandbox() as sb:
        gpu_box = ServerThread(create_app(lc.Router([lc.FalGenerator.for_sandbox(sb)])))
        gpu_box.start()
        router = lc.Router(
            [lc.RemoteGenerator(gpu_box.url), lc.ReplicateGenerator.for_sandbox(sb), lc.FalGenerator.for_sandbox(sb)],
            max_wait_s=2.0,
            retries=0,
        )
        async with router:
            await serve_prompts(router, ["a fox in the snow"])
            gpu_box.stop()  # the GPU box goes away: the same router fails over
            await serve_prompts(router, ["a red bicycle"])
        failed = [a for a in router.ledger.records() if a.outcome == "failed"]
        print(f"failed attempts in the ledger: {[(a.provider, a.error_type) for a in failed]}")


if __name__ == "__main__":
    asyncio.run(main())
