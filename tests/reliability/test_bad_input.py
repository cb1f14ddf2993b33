"""Bad input never reaches the network: hypothesis over the request space.

Validity is derived here, independently of the package, from the documented rules: prompt a
non-blank string; steps in {1, 2, 4, 8}; width/height multiples of 64 in 64..4096; seed in
0..2**32-1; num_images 1..8; output_format png|jpeg|webp; guidance_scale 0..50; timeout_s > 0;
aspect_ratio "W:H" with positive numbers, and never together with width/height.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lightning_client as lc
from lightning_client.testing.sandbox import Sandbox

MISSING = object()
HYPOTHESIS = settings(
    max_examples=1200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much]
)
#: Replicate's hosted model takes sides 256..1280 (its input schema); the generator says so before sending.
REPLICATE_SIDES = range(256, 1281)

valid_sides = st.integers(1, 64).map(lambda k: 64 * k)
#: Per field: values meant to be valid, and values meant to break a rule. Which is which is decided again,
#: independently, by `invalid_fields`; the split only steers hypothesis towards both kinds.
FIELDS: dict[str, tuple[st.SearchStrategy[Any], st.SearchStrategy[Any]]] = {
    "prompt": (
        st.text(min_size=1, max_size=12).filter(lambda p: bool(p.strip())),
        st.one_of(st.sampled_from(["", "   ", "\n\t"]), st.integers(0, 3), st.none()),
    ),
    "steps": (st.sampled_from([1, 2, 4, 8]), st.one_of(st.integers(-2, 10), st.just(True), st.just(2.5))),
    "width": (valid_sides, st.one_of(st.integers(-128, 4200), st.sampled_from([0, 32, 4160, 1000]))),
    "height": (valid_sides, st.one_of(st.integers(-128, 4200), st.sampled_from([0, 32, 4160, 1000]))),
    "aspect_ratio": (
        st.one_of(
            st.sampled_from(["16:9", "1:1", "9:16", "3:2", "1.5:1"]),
            st.tuples(st.integers(1, 40), st.integers(1, 40)).map(lambda t: f"{t[0]}:{t[1]}"),
        ),
        st.one_of(
            st.sampled_from(["0:1", "1:0", "-4:3", "16/9", "a:b", "1:1:1", "", "nan:1", "inf:1"]),
            st.tuples(st.integers(-3, 40), st.integers(-3, 40)).map(lambda t: f"{t[0]}:{t[1]}"),
        ),
    ),
    "seed": (
        st.one_of(st.integers(0, 2**32 - 1), st.sampled_from([0, 2**32 - 1]), st.none()),
        st.one_of(st.integers(-(2**40), -1), st.integers(2**32, 2**40)),
    ),
    "num_images": (st.integers(1, 8), st.sampled_from([-1, 0, 9, 10, 100])),
    "output_format": (st.sampled_from(["png", "jpeg", "webp"]), st.sampled_from(["jpg", "gif", "PNG", "", "tiff"])),
    "guidance_scale": (
        st.one_of(st.floats(0, 50), st.sampled_from([0.0, 50.0])),
        st.one_of(st.floats(-5, -1e-9), st.floats(50.0001, 1e6), st.sampled_from([math.nan, math.inf, -math.inf])),
    ),
    "timeout_s": (
        st.one_of(st.none(), st.floats(1e-6, 600), st.sampled_from([1e-6, 3600.0])),
        st.one_of(st.floats(-600, 0), st.sampled_from([0.0, -0.0, math.nan])),
    ),
}


@st.composite
def requests(draw: st.DrawFn) -> dict[str, Any]:
    """Keyword fields of a request: all valid, one field broken, or each field broken at random."""
    mode = draw(st.sampled_from(["valid", "one", "one", "any"]))
    broken = draw(st.sampled_from(sorted(FIELDS))) if mode == "one" else None
    fields: dict[str, Any] = {}
    for name, (good, bad) in FIELDS.items():
        # The prompt is required, so it is almost always present; the other fields are often absent.
        if name != broken and draw(st.integers(0, 9)) >= (9 if name == "prompt" else 5):
            continue
        invalid = name == broken or (mode == "any" and draw(st.booleans()))
        fields[name] = draw(bad if invalid else good)
    if "aspect_ratio" in fields and broken not in ("aspect_ratio", "width", "height") and mode != "any":
        # W:H and width/height together is itself a broken rule; keep it to the modes that break rules.
        fields.pop("width", None)
        fields.pop("height", None)
    return fields


def _ratio_ok(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    parts = value.split(":")
    if len(parts) != 2:
        return False
    try:
        w, h = float(parts[0]), float(parts[1])
    except ValueError:
        return False
    return w > 0 and h > 0 and math.isfinite(w) and math.isfinite(h)


def _side_ok(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 64 <= value <= 4096 and value % 64 == 0


def invalid_fields(fields: dict[str, Any]) -> set[str]:
    """The fields that break a documented rule (empty: the request is valid)."""
    bad: set[str] = set()
    prompt = fields.get("prompt", MISSING)
    if not isinstance(prompt, str) or not prompt.strip():
        bad.add("prompt")
    steps = fields.get("steps", 4)
    if isinstance(steps, bool) or steps not in (1, 2, 4, 8) or not isinstance(steps, int):
        bad.add("steps")
    ratio = fields.get("aspect_ratio")
    if ratio is not None and ("width" in fields or "height" in fields or not _ratio_ok(ratio)):
        bad.add("aspect_ratio")
    for side in ("width", "height"):
        if side in fields and not _side_ok(fields[side]):
            bad.add(side)
    seed = fields.get("seed")
    if seed is not None and not 0 <= seed <= 2**32 - 1:
        bad.add("seed")
    if not 1 <= fields.get("num_images", 1) <= 8:
        bad.add("num_images")
    if fields.get("output_format", "png") not in ("png", "jpeg", "webp"):
        bad.add("output_format")
    if not 0 <= fields.get("guidance_scale", 0.0) <= 50:
        bad.add("guidance_scale")
    timeout = fields.get("timeout_s")
    if timeout is not None and not timeout > 0:
        bad.add("timeout_s")
    return bad


@pytest.fixture(scope="module")
def clients(lightning_sandbox: Sandbox) -> Iterator[tuple[lc.ReplicateGenerator, lc.FalGenerator, lc.Router]]:
    replicate = lc.ReplicateGenerator(api_key="r8_fuzz_token", base_url=lightning_sandbox.replicate_url)
    fal = lc.FalGenerator(api_key="fuzz:key", base_url=lightning_sandbox.fal_url)
    router = lc.Router(
        [
            lc.ReplicateGenerator(api_key="r8_fuzz_token", base_url=lightning_sandbox.replicate_url),
            lc.FalGenerator(api_key="fuzz:key", base_url=lightning_sandbox.fal_url),
        ]
    )
    yield replicate, fal, router
    for closable in (replicate, fal, router):
        closable.close()


def _requests_seen(sb: Sandbox) -> int:
    return sum(sum(h.stats()["requests"].values()) + h.stats()["created"] for h in (sb.replicate, sb.fal))


def test_invalid_requests_are_rejected_before_the_network_and_valid_ones_accepted(
    lightning_sandbox: Sandbox, clients: tuple[lc.ReplicateGenerator, lc.FalGenerator, lc.Router]
) -> None:
    replicate, fal, router = clients
    lightning_sandbox.replicate.reset()
    lightning_sandbox.fal.reset()
    tally = {"valid": 0, "invalid": 0, "outside_replicate": 0}

    @HYPOTHESIS
    @given(requests())
    def check(fields: dict[str, Any]) -> None:
        expected = invalid_fields(fields)
        if not expected:
            tally["valid"] += 1
            request = lc.GenerationRequest(**fields)
            for name in ("prompt", "steps", "num_images", "output_format", "timeout_s"):
                if name in fields:
                    assert getattr(request, name) == fields[name]
            if fields.get("seed") is not None:
                assert request.seed == fields["seed"]
            if fields.get("aspect_ratio") is None:
                assert request.size == (fields.get("width", 1024), fields.get("height", 1024))
            else:
                assert _side_ok(request.width) and _side_ok(request.height)
            if request.width not in REPLICATE_SIDES or request.height not in REPLICATE_SIDES:
                tally["outside_replicate"] += 1
                size = replicate.capabilities.size_for(request)
                if request.aspect_ratio is not None and size is not None:  # size intent: a size Replicate takes
                    assert all(s in REPLICATE_SIDES for s in size)
                    assert not replicate.capabilities.problems(request)
                    return
                with pytest.raises(lc.InvalidRequestError) as caught:
                    replicate.generate(request)
                assert caught.value.field in ("width", "height", "aspect_ratio")
            return
        tally["invalid"] += 1
        with pytest.raises(lc.InvalidRequestError) as built:
            lc.GenerationRequest(**fields)
        named = set(getattr(built.value, "fields", [built.value.field]))
        assert named and named <= expected, (named, expected, str(built.value))
        assert built.value.field in expected
        assert built.value.field in str(built.value)
        # The same fields through every entry point: rejected with the same field, nothing sent.
        for target in (replicate, fal, router):
            with pytest.raises(lc.InvalidRequestError) as caught:
                target.generate(**fields)
            assert caught.value.field in expected

    check()
    assert tally["valid"] >= 100 and tally["invalid"] >= 500, tally
    assert tally["outside_replicate"] >= 20, tally
    assert _requests_seen(lightning_sandbox) == 0


@settings(max_examples=25, deadline=None)
@given(
    prompt=st.text(st.characters(codec="utf-8", exclude_categories=["Cs", "Cc"]), min_size=1, max_size=40).filter(
        lambda p: bool(p.strip())
    ),
    steps=st.sampled_from([1, 2, 4, 8]),
    side=st.sampled_from([256, 320, 512]),
    num_images=st.integers(1, 3),
    output_format=st.sampled_from(["png", "jpeg", "webp"]),
    seed=st.integers(0, 2**32 - 1),
)
def test_valid_requests_are_served(
    lightning_sandbox: Sandbox,
    clients: tuple[lc.ReplicateGenerator, lc.FalGenerator, lc.Router],
    prompt: str,
    steps: int,
    side: int,
    num_images: int,
    output_format: str,
    seed: int,
) -> None:
    router = clients[2]
    request = lc.GenerationRequest(
        prompt=prompt,
        steps=steps,
        width=side,
        height=side,
        num_images=num_images,
        output_format=output_format,
        seed=seed,
    )
    for provider in ("replicate", "fal"):
        result = router.generate(request, providers=[provider])
        assert result.provider == provider
        assert len(result.images) == num_images
        assert all((image.width, image.height) == (side, side) for image in result.images)
        assert all(image.content_type == f"image/{output_format}" for image in result.images)
