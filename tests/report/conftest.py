"""Result rows of a small two-provider run, with real PNG files on disk."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from lightning_client.report import ResultRow


def _png(path: Path, color: tuple[int, int, int]) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (64, 64), color).save(path)
    return path.name


@pytest.fixture
def run_rows(tmp_path: Path) -> list[ResultRow]:
    """replicate: 3 jobs, one failing once then succeeding; fal: 3 clean jobs; two prompts."""
    rows: list[ResultRow] = []
    for repeat in range(3):
        prompt = "a cat" if repeat < 2 else "a red fox in the snow"
        for provider, color, seconds, cost in (
            ("replicate", (200, 30, 30), 2.0, 0.0016),
            ("fal", (30, 30, 200), 1.0, 0.002),
        ):
            job = f"{provider}-{repeat}"
            attempt = 1
            if provider == "replicate" and repeat == 1:
                rows.append(
                    ResultRow(
                        job=job,
                        prompt=prompt,
                        provider=provider,
                        steps=4,
                        repeat=repeat,
                        attempt=attempt,
                        seed=7,
                        outcome="failed",
                        error_type="ProviderUnavailableError",
                        error_message="503 from the sandbox",
                        status_code=503,
                        total_s=0.3,
                    )
                )
                attempt = 2
            name = _png(tmp_path / "images" / f"{job}.png", color)
            rows.append(
                ResultRow(
                    job=job,
                    prompt=prompt,
                    provider=provider,
                    steps=4,
                    repeat=repeat,
                    attempt=attempt,
                    seed=7,
                    outcome="succeeded",
                    queue_s=0.1 * seconds,
                    inference_s=0.6 * seconds,
                    download_s=0.1 * seconds,
                    total_s=seconds + 0.1 * repeat,
                    cost_usd=cost,
                    cost_basis="test",
                    cost_estimated=False,
                    num_images=1,
                    images=[f"images/{name}"],
                )
            )
    return rows
