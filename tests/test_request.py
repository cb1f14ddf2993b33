"""Validation and normalization of GenerationRequest."""

from __future__ import annotations

import json
import math
import re

import pytest

import lightning_client as lc
from lightning_client.generator import as_request as lc_as_request
from lightning_client.request import SDXL_BUCKETS, bucket_for_aspect_ratio


def _field_error(**fields: object) -> lc.InvalidRequestError:
    with pytest.raises(lc.InvalidRequestError) as info:
        lc.GenerationRequest(**{"prompt": "a cat", **fields})
    return info.value


def test_defaults() -> None:
    req = lc.GenerationRequest(prompt="a cat")
    assert req.steps == 4
    assert req.size == (1024, 1024)
    assert isinstance(req.seed, int) and 0 <= req.seed < 2**32
    assert req.num_images == 1
    assert req.output_format == "png"
    assert req.guidance_scale == 0
    assert req.safety_checker is True
    assert req.timeout_s is None


def test_seed_is_drawn_per_request_and_explicit_none_draws_too() -> None:
    seeds = {lc.GenerationRequest(prompt="x").seed for _ in range(20)}
    assert len(seeds) > 1
    assert isinstance(lc.GenerationRequest(prompt="x", seed=None).seed, int)


@pytest.mark.parametrize(
    ("fields", "field", "allowed"),
    [
        ({"steps": 3}, "steps", "1, 2, 4 or 8"),
        ({"steps": 4.5}, "steps", "1, 2, 4 or 8"),
        ({"steps": True}, "steps", "1, 2, 4 or 8"),
        ({"width": 1000}, "width", "multiple of 64"),
        ({"width": 0}, "width", "64 to 4096"),
        ({"height": 4160}, "height", "64 to 4096"),
        ({"height": 100}, "height", "multiple of 64"),
        ({"prompt": "   "}, "prompt", "non-empty"),
        ({"prompt": ""}, "prompt", "non-empty"),
        ({"num_images": 0}, "num_images", "1 to 8"),
        ({"num_images": 9}, "num_images", "1 to 8"),
        ({"seed": -1}, "seed", "0 to 4294967295"),
        ({"seed": 2**32}, "seed", "0 to 4294967295"),
        ({"output_format": "gif"}, "output_format", "'png', 'jpeg' or 'webp'"),
        ({"guidance_scale": -0.5}, "guidance_scale", "0 to 50"),
        ({"guidance_scale": 51}, "guidance_scale", "0 to 50"),
        ({"timeout_s": 0}, "timeout_s", "positive"),
        ({"aspect_ratio": "wide"}, "aspect_ratio", "W:H"),
        ({"aspect_ratio": "0:1"}, "aspect_ratio", "W:H"),
        ({"aspect_ratio": "16:9", "width": 512}, "aspect_ratio", "W:H"),
        ({"aspect_ratio": "16:9", "height": 512}, "aspect_ratio", "W:H"),
        ({"provider_options": {"": {}}}, "provider_options", "provider name"),
        ({"provider_options": {"fal": 3}}, "provider_options", "provider name"),
        ({"safety_checker": "maybe"}, "safety_checker", "true or false"),
    ],
)
def test_each_rule_names_field_and_allowed_values(fields: dict[str, object], field: str, allowed: str) -> None:
    err = _field_error(**fields)
    assert err.field == field
    assert field in str(err)
    assert allowed in str(err)
    assert isinstance(err, ValueError)
    assert isinstance(err, lc.LightningError)
    assert err.retryable is False


def test_unknown_field_is_named_with_the_list_of_fields() -> None:
    err = _field_error(stepz=4)
    assert err.field == "stepz"
    assert "unknown field 'stepz'" in str(err)
    assert "steps" in str(err)


def test_prompt_is_required() -> None:
    with pytest.raises(lc.InvalidRequestError) as info:
        lc.GenerationRequest()  # type: ignore[call-arg]
    assert info.value.field == "prompt"


def test_no_bare_pydantic_error_from_any_entry_point() -> None:
    with pytest.raises(lc.InvalidRequestError):
        lc.GenerationRequest.model_validate({"prompt": "x", "steps": 5})
    with pytest.raises(lc.InvalidRequestError):
        lc.GenerationRequest.model_validate_json('{"prompt": "x", "num_images": 12}')


@pytest.mark.parametrize(
    ("ratio", "size"),
    [
        ("16:9", (1344, 768)),
        ("9:16", (768, 1344)),
        ("1:1", (1024, 1024)),
        ("4:3", (1152, 896)),
        ("3:4", (896, 1152)),
        ("3:2", (1216, 832)),
        ("2:3", (832, 1216)),
        ("21:9", (1536, 640)),
        ("1:3", (640, 1536)),
        ("1.5:1", (1216, 832)),
    ],
)
def test_aspect_ratio_maps_to_nearest_sdxl_bucket(ratio: str, size: tuple[int, int]) -> None:
    req = lc.GenerationRequest(prompt="x", aspect_ratio=ratio)
    assert req.size == size
    assert req.aspect_ratio == ratio


def test_bucket_choice_is_the_nearest_on_a_log_scale() -> None:
    for w in range(1, 40):
        for h in range(1, 40, 3):
            chosen = bucket_for_aspect_ratio(f"{w}:{h}")
            best = min(abs(math.log(b[0] / b[1]) - math.log(w / h)) for b in SDXL_BUCKETS)
            assert abs(math.log(chosen[0] / chosen[1]) - math.log(w / h)) == best


def test_valid_sizes_and_options_are_kept() -> None:
    req = lc.GenerationRequest(
        prompt="  a fox ",
        steps=8,
        width=512,
        height=768,
        seed=7,
        num_images=8,
        output_format="webp",
        negative_prompt="blurry",
        guidance_scale=1.5,
        safety_checker=False,
        timeout_s=2.5,
        provider_options={"fal": {"expand_prompt": True}},
    )
    assert req.prompt == "  a fox "
    assert (req.steps, req.size, req.seed, req.num_images) == (8, (512, 768), 7, 8)
    assert req.options_for("fal") == {"expand_prompt": True}
    assert req.options_for("replicate") == {}
    req.options_for("fal")["x"] = 1
    assert req.options_for("fal") == {"expand_prompt": True}


def test_requests_are_immutable_and_round_trip_as_json() -> None:
    req = lc.GenerationRequest(prompt="x", seed=5, aspect_ratio="16:9")
    with pytest.raises(Exception):  # noqa: B017 - pydantic's frozen-instance error
        req.steps = 8  # type: ignore[misc]
    again = lc.GenerationRequest.model_validate_json(req.model_dump_json(exclude={"width", "height"}))
    assert again == req
    assert json.loads(req.model_dump_json())["seed"] == 5


# -- aspect ratio: round trip, overrides, messages -----------------------------------------------


def test_a_request_with_an_aspect_ratio_round_trips_through_json() -> None:
    request = lc.GenerationRequest(prompt="a", aspect_ratio="16:9")
    again = lc.GenerationRequest.model_validate_json(request.model_dump_json())
    assert again == request and again.size == (1344, 768)
    assert lc.GenerationRequest.model_validate(request.model_dump()) == request


def test_overrides_of_a_request_with_an_aspect_ratio() -> None:
    request = lc.GenerationRequest(prompt="a", aspect_ratio="16:9", seed=3)
    assert lc_as_request(request, {"seed": 1}).seed == 1
    assert lc_as_request(request, {"seed": 1}).aspect_ratio == "16:9"
    explicit = lc_as_request(request, {"width": 512, "height": 512})
    assert (explicit.size, explicit.aspect_ratio) == ((512, 512), None)
    turned = lc_as_request(lc.GenerationRequest(prompt="a", width=512, height=512), {"aspect_ratio": "9:16"})
    assert (turned.size, turned.aspect_ratio) == ((768, 1344), "9:16")


def test_an_inconsistent_size_and_ratio_is_still_refused_once() -> None:
    for data in (
        {"prompt": "a", "aspect_ratio": "16:9", "width": 512, "height": 512},
        {"prompt": "a", "aspect_ratio": "x"},
        {"prompt": "a", "width": 100},
    ):
        for parse in (
            lambda d: lc.GenerationRequest(**d),
            lc.GenerationRequest.model_validate,
            lambda d: lc.GenerationRequest.model_validate_json(json.dumps(d)),
        ):
            with pytest.raises(lc.InvalidRequestError) as info:
                parse(data)
            message = info.value.message
            assert message.count("Invalid GenerationRequest") == 1, message
            assert not re.search(r"allowed:\s*(;|$)", message), message
