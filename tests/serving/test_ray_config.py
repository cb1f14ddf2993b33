"""The Ray application's configuration: the `[ray]` table, the local entry on the replicas, the app builder."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("ray.serve", reason="the ray extra is part of the dev environment")

from lightning_client.config import read_config
from lightning_client.errors import ConfigurationError
from lightning_client.serving.ray import app, config_from_file
from lightning_client.serving.ray_settings import RaySettings

EXAMPLE = Path(__file__).parents[2] / "examples" / "ray_serve.toml"


@pytest.fixture(autouse=True)
def _fal_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAL_KEY", "id:secret")


def test_the_example_file_describes_autoscaled_gpu_replicas_behind_its_router() -> None:
    config = config_from_file(EXAMPLE)
    assert config.pool_name == "local"
    assert config.local["device"] == "cuda" and config.local["base_model"].startswith("stabilityai/")
    assert config.ledger is not None and Path(config.ledger).is_absolute()
    options = config.ray.worker_options(config.device)
    assert options["ray_actor_options"] == {"num_cpus": 4, "num_gpus": 1}
    assert options["max_ongoing_requests"] == 8  # twice the batch size
    assert options["autoscaling_config"] == {
        "min_replicas": 1,
        "initial_replicas": 1,
        "max_replicas": 8,
        "target_ongoing_requests": 4,
    }
    assert "num_replicas" not in options
    spec = config.worker_spec()
    assert spec.local["max_batch_size"] == 4 and spec.local["batch_wait_s"] == 0.005
    assert spec.torch_threads is None  # a GPU replica keeps torch's own threads


def test_replicas_override_and_cpu_defaults() -> None:
    config = config_from_file(EXAMPLE, overrides={"replicas": 3, "autoscaling": None}, device="cpu")
    options = config.ray.worker_options(config.device)
    assert options["num_replicas"] == 3
    assert options["ray_actor_options"]["num_gpus"] == 1  # set in the file: kept
    assert config.worker_spec().torch_threads == 4  # num_cpus threads on CPU
    assert RaySettings().gpus("cpu") == 0.0 and RaySettings().gpus("cuda:0") == 1.0  # unset: from the device


def test_a_bad_ray_key_is_named_when_the_file_is_read(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(EXAMPLE.read_text().replace("max_batch_size = 4", "max_batch_size = 0"))
    with pytest.raises(ConfigurationError) as caught:
        read_config(bad)
    assert "ray.max_batch_size" in str(caught.value)


def test_ongoing_requests_below_the_batch_size_are_refused() -> None:
    with pytest.raises(ValueError, match="max_ongoing_requests=2 must be at least max_batch_size=4"):
        RaySettings(max_ongoing_requests=2, max_batch_size=4)


def test_a_file_without_exactly_one_local_entry_is_refused(tmp_path: Path) -> None:
    only_fal = tmp_path / "fal.toml"
    only_fal.write_text('[[generators]]\nkind = "fal"\napi_key_env = "FAL_KEY"\n')
    with pytest.raises(ConfigurationError, match="one local generator"):
        config_from_file(only_fal)


def test_the_app_builder_refuses_unknown_arguments_naming_the_allowed_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown argument.*replica.*allowed: api_key, config"):
        app({"replica": "2"})


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--replicas", "2", "--sandbox"], "apply with --ray"),
        (["--ray", "--port", "0", "--local-model", "."], "explicit --port"),
        (["--ray", "--port", "8123"], "give --local-model DIR"),
        (["--ray", "--port", "8123", "--local-model", ".", "--replicas", "0"], "--replicas"),
    ],
)
def test_serve_ray_usage_errors_exit_2_naming_the_option(args: list[str], message: str) -> None:
    from typer.testing import CliRunner

    from lightning_client.cli import app as cli

    done = CliRunner().invoke(cli, ["serve", *args])
    assert done.exit_code == 2, done.output
    assert message in done.output
