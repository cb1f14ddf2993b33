"""`lc.load_config`: generators, router and ledger from TOML or a dict; every problem names its key path."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict

import lightning_client as lc
from lightning_client.config import register_section
from lightning_client.testing import Sandbox
from tests.test_registry import write_plugin

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "lightning.toml"
SMALL: dict[str, Any] = {"width": 256, "height": 256, "seed": 11}


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    with Sandbox() as sb:
        yield sb


@pytest.fixture
def sb(sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Sandbox:
    """The sandbox, its variables set as `lightning-client sandbox` prints them, in a scratch folder."""
    for name in list(os.environ):
        if name.startswith(("REPLICATE_", "FAL_", "LIGHTNING_CLIENT_")):
            monkeypatch.delenv(name)
    for name, value in sandbox.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)
    sandbox.replicate.reset()
    sandbox.fal.reset()
    return sandbox


def problem(config: dict[str, Any], environ: dict[str, str] | None = None) -> lc.ConfigurationError:
    with pytest.raises(lc.ConfigurationError) as info:
        lc.read_config(config, environ=environ or {})
    return info.value


# -- the example file -----------------------------------------------------------------------------


def test_the_example_file_builds_a_router_that_serves_a_request(sb: Sandbox, tmp_path: Path) -> None:
    router = lc.load_config(EXAMPLE)
    with router:
        assert [g.name for g in router.generators] == ["replicate", "fal"]
        assert router.policy.name == "priority" and router.retries == 2 and router.hedge is not None
        assert router.budget.limited
        result = router.generate("a cat", **SMALL)
    assert result.provider == "replicate" and result.images
    assert sb.replicate.stats()["created"] == 1
    assert router.config is not None and router.config.source == str(EXAMPLE)
    assert [row.provider for row in router.ledger.summary()] == ["replicate"]
    router.ledger.close()
    assert (
        tmp_path / "out" / "lightning-ledger.sqlite"
    ).exists()  # the [ledger] path, relative to the working directory


def test_the_example_names_an_unset_secret_variable(sb: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FAL_KEY")
    with pytest.raises(lc.ConfigurationError, match=r"generators\[1\]\.api_key_env: environment variable FAL_KEY"):
        lc.load_config(EXAMPLE)


def test_a_misspelled_key_names_its_path() -> None:
    error = problem({"generators": [{"kind": "replicate"}, {"kind": "fal", "base_ur": "http://x"}]})
    assert error.path == "generators[1].base_ur"
    assert "generators[1].base_ur: unknown option for provider 'fal'" in error.message
    assert "base_url" in error.message  # the valid options are listed
    assert problem({"generators": [{"kind": "fal"}], "routr": {}}).path == "routr"
    assert problem({"generators": [{"kind": "fal"}], "router": {"polcy": "fastest"}}).path == "router.polcy"
    assert problem({"generators": [{"kind": "fal"}], "router": {"breaker": {"cooldown": 1}}}).path == (
        "router.breaker.cooldown"
    )


def test_bad_values_name_their_path_and_every_problem_is_reported() -> None:
    error = problem(
        {
            "generators": [{"kind": "replicate", "wait_s": "soon"}, {"kind": "FAL", "use_sse": "maybe"}],
            "router": {"policy": "random", "retries": -1, "hedge": "later"},
            "ledger": {"max_records": 0},
        }
    )
    for path in (
        "generators[0].wait_s",
        "generators[1].use_sse",
        "router.policy",
        "router.retries",
        "router.hedge",
        "ledger.max_records",
    ):
        assert f"{path}: " in error.message, path
    assert error.path == "generators[0].wait_s"
    assert "'priority', 'cheapest', 'fastest' or 'weighted'" in error.message


def test_unknown_kinds_duplicate_names_and_missing_generators() -> None:
    error = problem({"generators": [{"kind": "replikate"}]})
    assert error.path == "generators[0].kind" and "available: " in error.message and "replicate" in error.message
    assert problem({"generators": [{"name": "x"}]}).path == "generators[0].kind"
    error = problem({"generators": [{"kind": "fal"}, {"kind": "fal"}]})
    assert error.path == "generators[1].name" and "used twice" in error.message
    assert problem({}).path == "generators"
    assert problem({"generators": [{"kind": "remote"}]}).message.endswith("generators[0].base_url: required")
    assert problem({"generators": [{"kind": "fal", "name": "a"}], "router": {"weights": {"b": 1}}}).path == (
        "router.weights.b"
    )


def test_options_from_environment_variables(sb: Sandbox) -> None:
    config = {
        "generators": [
            {
                "kind": "replicate",
                "name": "rep-a",
                "api_key_env": "TEAM_A_TOKEN",
                "base_url_env": "TEAM_A_URL",
            }
        ]
    }
    environ = {"TEAM_A_TOKEN": "r8_team_a", "TEAM_A_URL": sb.replicate_url}
    with lc.load_config(config, environ=environ) as router:
        assert router.generate("a cat", **SMALL).provider == "rep-a"
    assert problem(config, {"TEAM_A_TOKEN": "r8_x"}).path == "generators[0].base_url_env"
    both = {"generators": [{"kind": "fal", "api_key": "a:b", "api_key_env": "X"}]}
    assert problem(both).path == "generators[0].api_key_env"


def test_a_bad_secret_from_the_environment_names_the_key_but_never_the_value(sb: Sandbox) -> None:
    config = {"generators": [{"kind": "replicate", "api_key_env": "TOKEN"}]}
    with pytest.raises(lc.ConfigurationError) as info:
        lc.load_config(config, environ={"TOKEN": "r8_se cret"})
    assert info.value.path == "generators[0].api_key_env"
    assert "r8_se" not in str(info.value)


def test_the_config_holds_no_secret_read_from_the_environment(sb: Sandbox) -> None:
    config = lc.read_config(EXAMPLE)
    dumped = config.model_dump_json()
    assert "api_key_env" not in dumped and "REPLICATE_API_TOKEN" in dumped
    assert os.environ["FAL_KEY"] not in dumped and os.environ["REPLICATE_API_TOKEN"] not in dumped


def test_constructor_errors_name_the_generator(sb: Sandbox) -> None:
    with pytest.raises(lc.ConfigurationError) as info:
        lc.load_config({"generators": [{"kind": "fal", "model": "no-slash", "api_key": "a:b"}]})
    assert info.value.path == "generators[0]" and "owner/app" in info.value.message


def test_router_settings_reach_the_router(sb: Sandbox) -> None:
    config = {
        "generators": [{"kind": "replicate", "name": "a"}, {"kind": "fal", "name": "b"}],
        "router": {
            "policy": "weighted",
            "weights": {"a": 0, "b": 1},
            "retries": 0,
            "breaker": False,
            "hedge": {"delay_s": 0.5, "max_hedges": 1},
            "max_wait_s": 2.5,
        },
    }
    with lc.load_config(config) as router:
        assert router.policy.name == "weighted" and router.retries == 0
        assert router.hedge is not None and router.hedge.delay_s == 0.5
        assert router.max_wait_s == 2.5
        assert router.generate("a cat", **SMALL).provider == "b"  # weight 0: failover only


class ServerTable(BaseModel):
    model_config = ConfigDict(extra="forbid")

    port: int = 8000


def test_other_tables_are_kept_for_their_owners_and_validated_by_registered_schemas(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    base: dict[str, Any] = {"generators": [{"kind": "fal", "api_key": "a:b"}]}
    config = lc.read_config({**base, "server": {"port": 9000}, "ray": {"replicas": 2}})
    assert config.section("server", ServerTable).port == 9000
    from lightning_client.serving.ray_settings import RaySettings

    assert config.section("ray", RaySettings).replicas == 2  # validated by its registered schema
    with pytest.raises(lc.ConfigurationError, match=r"ray\.replica"):
        lc.read_config({**base, "ray": {"replica": 2}})
    with pytest.raises(lc.ConfigurationError, match=r"server\.prot"):
        lc.read_config({**base, "server": {"prot": 1}}).section("server", ServerTable)
    monkeypatch.setattr("lightning_client.config.SECTIONS", {"server": None, "ray": None})
    register_section("server", ServerTable)
    assert problem({**base, "server": {"port": "x"}}).path == "server.port"


def test_a_plugin_provider_is_usable_by_kind_from_a_config_file(tmp_path: Path) -> None:
    plugins = write_plugin(tmp_path / "site")
    config = tmp_path / "acme.toml"
    config.write_text('[[generators]]\nkind = "Acme"\nname = "solid"\ncolor = "green"\n')
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(plugins), str(ROOT)])}
    code = (
        "import sys, lightning_client as lc\n"
        "router = lc.load_config(sys.argv[1])\n"
        "result = router.generate('a cat', width=64, height=64)\n"
        "print(result.provider, result.images[0].to_pil().getpixel((0, 0)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(config)], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["solid", "(0,", "128,", "0)"]


# -- the command line -----------------------------------------------------------------------------


def cli(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lightning_client", *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=120
    )


def test_the_cli_reads_the_config_from_the_environment_variable(sb: Sandbox, tmp_path: Path) -> None:
    env = {**os.environ, "LIGHTNING_CLIENT_CONFIG": str(EXAMPLE), "PYTHONPATH": str(ROOT)}
    done = cli(["generate", "a cat", "--size", "256x256", "--seed", "2", "--out", "out"], tmp_path, env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "replicate" in done.stdout and sb.replicate.stats()["created"] == 1
    done = cli(["generate", "a cat", "--size", "256x256", "--provider", "fal", "--out", "out"], tmp_path, env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert sb.fal.stats()["created"] == 1  # --provider picks a configured generator by name
    assert (tmp_path / "out" / "lightning-ledger.sqlite").exists()


def test_the_cli_reports_a_bad_config_in_one_line_with_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[[generators]]\nkind = "fal"\nbase_ur = "http://x"\n')
    done = cli(["generate", "a cat", "--config", str(bad)], tmp_path, {**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 2
    assert "generators[0].base_ur" in done.stderr and "Traceback" not in done.stderr


def test_a_plugin_provider_is_usable_from_the_cli_through_a_config_file(tmp_path: Path) -> None:
    plugins = write_plugin(tmp_path / "site")
    config = tmp_path / "acme.toml"
    config.write_text('[[generators]]\nkind = "acme"\nname = "solid"\n')
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(plugins), str(ROOT)])}
    done = cli(["generate", "a cat", "--config", str(config), "--size", "64x64", "--out", "out"], tmp_path, env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "solid" in done.stdout and list((tmp_path / "out").glob("solid-*.png"))
