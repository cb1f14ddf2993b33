"""Size intent: an aspect ratio is served by each provider at the nearest size it supports with that ratio."""

from __future__ import annotations

import math

import pytest

import lightning_client as lc
from lightning_client.request import RATIO_LIMIT, SDXL_BUCKETS, fit_aspect_ratio, ratio_of
from lightning_client.testing import Sandbox


def test_the_router_example_with_16_9_can_be_served_by_replicate(
    sb: Sandbox, rep: lc.ReplicateGenerator, fal: lc.FalGenerator
) -> None:
    with lc.Router([rep, fal]) as router:
        result = router.generate("a red fox in the snow", aspect_ratio="16:9", seed=7)
    assert result.provider == "replicate"
    assert [(image.width, image.height) for image in result.images] == [(1024, 576)]
    resized = [w for w in result.warnings if w.kind == "resized"]
    assert len(resized) == 1 and resized[0].setting == "aspect_ratio" and resized[0].provider == "replicate"
    assert "1344x768" in resized[0].message and "1024x576" in resized[0].message
    assert sb.fal.stats()["created"] == 0


def test_each_provider_serves_its_own_nearest_size(rep: lc.ReplicateGenerator, fal: lc.FalGenerator) -> None:
    on_fal = fal.generate("a fox", aspect_ratio="16:9", seed=1)
    assert [(i.width, i.height) for i in on_fal.images] == [(1344, 768)]  # the SDXL bucket fits fal
    assert not [w for w in on_fal.warnings if w.kind == "resized"]
    portrait = rep.generate("a fox", aspect_ratio="9:16", seed=1)
    assert [(i.width, i.height) for i in portrait.images] == [(576, 1024)]


def test_explicit_sizes_stay_strict(sb: Sandbox, rep: lc.ReplicateGenerator, fal: lc.FalGenerator) -> None:
    with pytest.raises(lc.InvalidRequestError, match=r"width=1344 outside 256\.\.1280"):
        rep.generate("a fox", width=1344, height=768)
    assert sb.replicate.stats()["created"] == 0
    with lc.Router([rep, fal]) as router:
        result = router.generate("a fox", width=1344, height=768, seed=2)
    assert result.provider == "fal" and result.attempts[0].outcome == "skipped"


@pytest.mark.parametrize(
    ("ratio", "limits", "size"),
    [
        ("16:9", (256, 1280), (1024, 576)),
        ("9:16", (256, 1280), (576, 1024)),
        ("16:9", (256, 2048), (1344, 768)),  # the bucket fits: unchanged
        ("1:1", (256, 1280), (1024, 1024)),
        ("3:1", (256, 1280), (1152, 384)),
        ("21:9", (256, 1280), (896, 384)),
    ],
)
def test_fitted_sizes(ratio: str, limits: tuple[int, int], size: tuple[int, int]) -> None:
    assert fit_aspect_ratio(ratio, *limits) == size


@pytest.mark.parametrize("ratio", ["16:9", "4:3", "3:2", "21:9", "2:1", "5:4", "1:3"])
@pytest.mark.parametrize("limits", [(256, 1280), (512, 1024), (64, 768)])
def test_a_fitted_size_keeps_the_ratio_and_the_limits(ratio: str, limits: tuple[int, int]) -> None:
    size = fit_aspect_ratio(ratio, *limits)
    lo, hi = limits
    if size is None:  # refused only when no size within the limits comes near the ratio
        sides = range(-(-lo // 64) * 64, hi + 1, 64)
        nearest = min(abs(math.log(w / h / ratio_of(ratio))) for w in sides for h in sides)
        assert nearest > RATIO_LIMIT
        return
    assert all(lo <= side <= hi and side % 64 == 0 for side in size)
    bucket_error = min(abs(b[0] / b[1] / ratio_of(ratio) - 1) for b in SDXL_BUCKETS)
    assert abs(size[0] / size[1] / ratio_of(ratio) - 1) <= max(0.011, bucket_error)
    # A valid explicit-size request: what a provider is handed is still a GenerationRequest.
    lc.GenerationRequest(prompt="x", width=size[0], height=size[1])


def test_a_ratio_no_size_can_keep_is_refused() -> None:
    caps = lc.Capabilities(min_side=512, max_side=512)
    request = lc.GenerationRequest(prompt="x", aspect_ratio="16:9")
    assert caps.size_for(request) is None
    assert any("aspect_ratio='16:9'" in p for p in caps.problems(request))


def test_a_request_with_an_aspect_ratio_can_be_overridden_per_call(
    rep: lc.ReplicateGenerator, fal: lc.FalGenerator
) -> None:
    request = lc.GenerationRequest(prompt="a", aspect_ratio="16:9")
    for generator in (rep, fal):
        result = generator.generate(request, seed=1)
        assert result.seed == 1 and result.images
