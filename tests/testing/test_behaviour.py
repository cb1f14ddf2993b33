"""Sandbox settings: latency models, validation of `configure`, seeded fault draws."""

from __future__ import annotations

import pytest

from lightning_client.testing import Latency
from lightning_client.testing._behaviour import FAL_RULES, REPLICATE_RULES, Behaviour, SeededDraws


def test_fixed_uniform_and_straggler_latencies() -> None:
    assert Latency(0.2).sample() == 0.2
    draws = [Latency.uniform(0.1, 0.3, seed=1).sample() for _ in range(3)]
    assert draws == [Latency.uniform(0.1, 0.3, seed=1).sample()] * 3  # same seed, same first draw
    uniform = Latency.uniform(0.1, 0.3, seed=1)
    samples = [uniform.sample() for _ in range(200)]
    assert all(0.1 <= s <= 0.3 for s in samples) and len(set(samples)) > 100
    stragglers = Latency.stragglers(0.1, rate=0.1, factor=10, seed=2)
    values = [stragglers.sample() for _ in range(1000)]
    assert set(values) == {0.1, 1.0} and 50 < values.count(1.0) < 150


@pytest.mark.parametrize(
    "bad",
    [
        lambda: Latency(-1),
        lambda: Latency.uniform(0.3, 0.1),
        lambda: Latency.stragglers(0.1, rate=2),
        lambda: Latency.stragglers(0.1, factor=0.5),
    ],
)
def test_latency_rejects_bad_values(bad: object) -> None:
    with pytest.raises(ValueError):
        bad()  # type: ignore[operator]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"nope": 1, "zzz": 2}, "nope, zzz"),
        ({"workers": 0}, "workers"),
        ({"error_status": 200}, "error_status"),
        ({"error_rate": 1.5}, "error_rate"),
        ({"valid_tokens": "abc"}, "valid_tokens"),
        ({"inference_s": "fast"}, "inference_s"),
        ({"faults": {"reset": 0.7, "hang": 0.7}}, "sum"),
        ({"fault": "meteor"}, "meteor"),
        ({"fault": "reset", "faults": {}}, "either"),
        ({"fault": "completed_with_error"}, "completed_with_error"),
    ],
)
def test_configure_validation(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Behaviour().updated("replicate", REPLICATE_RULES, changes)


def test_fal_has_no_replicate_only_settings() -> None:
    with pytest.raises(ValueError, match="retention_s"):
        Behaviour().updated("fal", FAL_RULES, {"retention_s": 1})
    assert Behaviour().updated("fal", FAL_RULES, {"fault": "completed_with_error"}).faults == (
        ("completed_with_error", 1.0),
    )


def test_fault_shorthand_and_clearing() -> None:
    behaviour = Behaviour().updated("replicate", REPLICATE_RULES, {"fault": "aborted", "inference_s": 1})
    assert behaviour.faults == (("aborted", 1.0),) and behaviour.inference_s.sample() == 1.0
    assert behaviour.updated("replicate", REPLICATE_RULES, {"fault": None}).faults == ()


def test_seeded_draws_repeat_per_seed() -> None:
    faults = (("reset", 0.3), ("hang", 0.3))
    first = [SeededDraws(5).fault(faults) for _ in range(1)]
    draws = SeededDraws(5)
    sequence = [draws.fault(faults) for _ in range(50)]
    draws.reset()
    assert sequence == [draws.fault(faults) for _ in range(50)]
    assert first[0] == sequence[0]
    assert {"reset", "hang", None} == set(sequence)
    assert sequence != [SeededDraws(6).fault(faults) for _ in range(50)]
