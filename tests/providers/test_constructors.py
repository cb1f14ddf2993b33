"""Uniform constructors (api_key=, base_url=, model=, name=), environment conventions and token hygiene."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from typing import Any

import pytest

import lightning_client as lc
from lightning_client.testing import Sandbox

SMALL: dict[str, Any] = {"width": 256, "height": 256, "seed": 3}
PROVIDER_ENV = (
    "REPLICATE_API_TOKEN",
    "REPLICATE_BASE_URL",
    "FAL_KEY",
    "FAL_KEY_ID",
    "FAL_KEY_SECRET",
    "FAL_QUEUE_URL",
    "FAL_RUN_URL",
    "FAL_REST_URL",
)


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    with Sandbox() as sb:
        yield sb


@pytest.fixture
def sb(sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> Sandbox:
    for name in PROVIDER_ENV:
        monkeypatch.delenv(name, raising=False)
    sandbox.replicate.reset()
    sandbox.fal.reset()
    return sandbox


def test_two_named_replicate_generators_share_a_router_and_get_a_summary_row_each(sb: Sandbox) -> None:
    rep_a = lc.ReplicateGenerator(api_key="r8_a", base_url=sb.replicate_url, name="rep-a")
    rep_b = lc.ReplicateGenerator(api_key="r8_b", base_url=sb.replicate_url, name="rep-b")
    ledger = lc.Ledger()
    with lc.Router([rep_a, rep_b], ledger=ledger) as router:
        first = router.generate("a cat", providers=["rep-a"], **SMALL)
        second = router.generate("a cat", providers=["rep-b"], **SMALL)
    assert (first.provider, second.provider) == ("rep-a", "rep-b")
    assert [a.provider for a in first.attempts] == ["rep-a"]
    rows = {row.provider: row for row in ledger.summary()}
    assert set(rows) == {"rep-a", "rep-b"}
    assert rows["rep-a"].succeeded == rows["rep-b"].succeeded == 1
    assert sb.replicate.stats()["created"] == 2


def test_name_defaults_to_the_kind_and_must_not_be_blank() -> None:
    assert lc.ReplicateGenerator(api_key="r8_x").name == "replicate"
    assert lc.FalGenerator(api_key="a:b").name == "fal"
    assert lc.LocalGenerator().name == "local"
    assert lc.LocalGenerator(name="gpu-0").name == "gpu-0"
    with pytest.raises(lc.ConfigurationError, match="name"):
        lc.FalGenerator(api_key="a:b", name="  ")


def test_replicate_base_url_and_token_come_from_the_environment(sb: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REPLICATE_BASE_URL", sb.replicate_url)
    monkeypatch.setenv("REPLICATE_API_TOKEN", "r8_from_env")
    with lc.ReplicateGenerator() as gen:
        assert gen.base_url == sb.replicate_url
        result = gen.generate("a cat", **SMALL)
    assert result.images and sb.replicate.stats()["created"] == 1


def test_fal_hosts_and_key_come_from_the_environment(sb: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in sb.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("FAL_KEY")
    monkeypatch.setenv("FAL_KEY_ID", "id")
    monkeypatch.setenv("FAL_KEY_SECRET", "sandbox-key-secret")
    with lc.FalGenerator() as gen:
        assert (gen.base_url, gen.run_url, gen.rest_url) == (sb.fal_url, sb.fal_run_url, sb.fal_rest_url)
        result = gen.generate("a cat", **SMALL)
    assert result.images and sb.fal.stats()["created"] == 1
    assert lc.FalGenerator.has_credentials()


def test_explicit_arguments_win_over_the_environment(sb: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REPLICATE_BASE_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("FAL_QUEUE_URL", "http://127.0.0.1:9")
    assert lc.ReplicateGenerator(api_key="r8_x", base_url=sb.replicate_url).base_url == sb.replicate_url
    assert lc.FalGenerator(api_key="a:b", base_url=sb.fal_url).base_url == sb.fal_url


def test_old_spellings_still_work_with_a_deprecation_warning(sb: Sandbox) -> None:
    with pytest.warns(DeprecationWarning, match="api_token"):
        rep = lc.ReplicateGenerator(api_token="r8_old", base_url=sb.replicate_url)
    with pytest.warns(DeprecationWarning, match="positional"):
        positional = lc.ReplicateGenerator("r8_old", sb.replicate_url, "bytedance/sdxl-lightning-4step")
    assert positional.base_url == sb.replicate_url and positional.model == "bytedance/sdxl-lightning-4step"
    with pytest.warns(DeprecationWarning) as caught:
        fal = lc.FalGenerator(
            key="a:b", queue_url=sb.fal_url, app="fal-ai/fast-lightning-sdxl", rest_url=sb.fal_rest_url
        )
    assert {str(w.message).split("(")[1].split("=")[0] for w in caught} == {"key", "queue_url", "app"}
    assert (fal.base_url, fal.queue_url, fal.model, fal.app) == (
        sb.fal_url,
        sb.fal_url,
        "fal-ai/fast-lightning-sdxl",
        "fal-ai/fast-lightning-sdxl",
    )
    with rep, fal:
        assert rep.generate("a cat", **SMALL).images
        assert fal.generate("a cat", **SMALL).images


def test_new_spellings_do_not_warn(sb: Sandbox) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        lc.ReplicateGenerator(api_key="r8_x", base_url=sb.replicate_url, model="o/m", name="r")
        lc.FalGenerator(api_key="a:b", base_url=sb.fal_url, model="o/app", name="f")


def test_a_spelling_given_twice_is_an_error() -> None:
    with pytest.raises(TypeError, match="api_key"):
        lc.ReplicateGenerator(api_key="r8_a", api_token="r8_b")
    with pytest.raises(TypeError, match="base_url"):
        lc.FalGenerator(base_url="http://a", queue_url="http://b")


# -- tokens: stripped, validated at construction, never echoed -----------------------------------


def test_a_token_with_a_trailing_newline_is_stripped_and_never_shown(
    sb: Sandbox, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="lightning_client")
    ledger = lc.Ledger()
    rep = lc.ReplicateGenerator(api_key="r8_secret\n", base_url=sb.replicate_url)
    with lc.Router([rep], ledger=ledger) as router:
        result = router.generate("a cat", **SMALL)
    assert result.images
    shown = [repr(rep), str(rep), repr(router), result.model_dump_json(), caplog.text]
    shown += [a.model_dump_json() for a in ledger.records()]
    shown += [row.model_dump_json() for row in ledger.summary()]
    assert not [text for text in shown if "r8_secret" in text]


@pytest.mark.parametrize("bad", ["r8_sec ret", "r8_sec\tret", "r8_sé", "r8_\x00x"])
def test_a_token_with_inner_whitespace_or_control_characters_fails_at_construction(bad: str) -> None:
    with pytest.raises(lc.ConfigurationError) as info:
        lc.ReplicateGenerator(api_key=bad)
    assert "api_key" in info.value.message and info.value.path == "api_key"
    assert bad not in str(info.value) and bad.strip() not in repr(info.value)


def test_a_bad_token_in_the_environment_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAL_KEY", "id:sec ret")
    with pytest.raises(lc.ConfigurationError, match="FAL_KEY") as info:
        lc.FalGenerator()
    assert "sec ret" not in str(info.value)
    monkeypatch.setenv("REPLICATE_API_TOKEN", "  r8_fine  \n")
    assert lc.ReplicateGenerator()._token is not None
    assert lc.ReplicateGenerator()._token.get_secret_value() == "r8_fine"  # type: ignore[union-attr]
