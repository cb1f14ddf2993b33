"""An app that switches between hosted (Replicate, fal) and self-hosted (local GPU) generation.

The backend is configuration, not code: the same `Generator` interface serves all of them.

    python examples/hosted_or_local.py "a lighthouse at dusk"                 # sandbox when no keys are set
    LIGHTNING_BACKEND=hosted python examples/hosted_or_local.py "a lighthouse" # Replicate, then fal on failure
    LIGHTNING_BACKEND=local  python examples/hosted_or_local.py "a lighthouse" # your GPU (pip install '.[local]')
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import lightning_client as lc


@contextlib.contextmanager
def make_generator(backend: str) -> Iterator[lc.Generator]:
    """The generator for `backend`: "hosted", "local", or "sandbox" (hosted APIs emulated on loopback)."""
    if backend == "local":
        with lc.LocalGenerator() as local:  # downloads SDXL + the Lightning UNet once, then runs offline
            yield local
    elif backend == "hosted":
        with lc.Router([lc.ReplicateGenerator(), lc.FalGenerator()], policy="priority") as router:
            yield router
    elif backend == "sandbox":
        from lightning_client.testing import Sandbox

        with Sandbox() as sb:
            replicate = lc.ReplicateGenerator(api_key="r8_sandbox", base_url=sb.replicate_url)
            fal = lc.FalGenerator(api_key="sandbox:key", base_url=sb.fal_url, rest_url=sb.fal_rest_url)
            with lc.Router([replicate, fal]) as router:
                yield router
    else:
        raise SystemExit(f"LIGHTNING_BACKEND={backend!r} is invalid; allowed: hosted, local, sandbox")


def main() -> None:
    prompt = sys.argv[1] if len(sys.argv) > 1 else "a lighthouse on a cliff at dusk"
    has_keys = bool(os.environ.get("REPLICATE_API_TOKEN") or os.environ.get("FAL_KEY"))
    backend = os.environ.get("LIGHTNING_BACKEND", "hosted" if has_keys else "sandbox")
    with make_generator(backend) as generator:
        result = generator.generate(lc.GenerationRequest(prompt=prompt, steps=4, width=512, height=512, seed=1234))
    paths = result.save(Path("out"))  # out/ is ignored by git
    print(f"{backend}: {result.provider} drew seed {result.seed} in {result.timings.total_s:.2f} s for {result.cost}")
    for warning in result.warnings:
        print(f"  warning: {warning}")
    print(f"  saved {', '.join(str(p) for p in paths)}")


if __name__ == "__main__":
    main()
