"""`lightning-client serve --config`: the file's router, and its `[server]` table under the options."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import openai

from lightning_client.testing import Sandbox
from tests.serving.conftest import start_serve


def _config(path: Path, fal_url: str) -> Path:
    path.write_text(
        "[[generators]]\n"
        'kind = "fal"\n'
        'name = "fal"\n'
        'api_key_env = "TEST_FAL_KEY"\n'
        f'base_url = "{fal_url}"\n'
        "\n[server]\n"
        "max_queue = 3\n"
        "max_concurrency = 2\n"
        'api_keys_env = "TEST_SERVER_KEYS"\n'
    )
    return path


def test_a_config_file_sets_the_router_and_the_server_table(tmp_path: Path) -> None:
    with Sandbox() as sb:
        config = _config(tmp_path / "lightning.toml", sb.fal_url)
        server = start_serve(
            "--config", str(config), "--max-concurrency", "5", env={"TEST_FAL_KEY": "k", "TEST_SERVER_KEYS": "s1,s2"}
        )
        try:
            client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="s2", max_retries=0)
            response = client.images.generate(prompt="a fox", size="512x512", extra_body={"seed": 1})
            assert (response.model_extra or {})["provider"] == "fal"
            status = httpx.get(f"{server.url}/v1/status", headers={"Authorization": "Bearer s1"}).json()
            assert status["max_queue"] == 3  # from [server]
            assert status["max_concurrency"] == 5  # the option wins
            assert httpx.get(f"{server.url}/v1/status").status_code == 401
        finally:
            server.stop()


def test_a_bad_config_is_a_usage_error(tmp_path: Path) -> None:
    bad_kind = tmp_path / "bad.toml"
    bad_kind.write_text('[[generators]]\nkind = "nope"\nname = "x"\n')
    bad_server = tmp_path / "bad_server.toml"
    bad_server.write_text('[[generators]]\nkind = "fal"\nname = "fal"\n\n[server]\nmax_queue = -1\n')
    for config, named in ((bad_kind, "nope"), (bad_server, "max_queue")):
        done = subprocess.run(
            [sys.executable, "-m", "lightning_client", "serve", "--config", str(config), "--port", "0"],
            capture_output=True,
            text=True,
            timeout=120,
            env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(Path.cwd())},
        )
        assert done.returncode == 2 and named in done.stderr, done.stderr
