"""Call a lightning-client server with the official OpenAI SDK (`pip install openai`).

    lightning-client serve --sandbox --api-key k --port 8000       # or, on a GPU box:
    lightning-client serve --local-model /models/sdxl-lightning --host 0.0.0.0 --api-key k
    python examples/serve_openai_client.py http://127.0.0.1:8000 k

Without arguments it first starts a server over the sandbox in this process (offline, no keys).
"""

from __future__ import annotations

import base64
import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path

import openai


@contextlib.contextmanager
def server(argv: list[str]) -> Iterator[tuple[str, str]]:
    """The server named on the command line, or one over the sandbox started here."""
    if argv:
        yield argv[0], argv[1] if len(argv) > 1 else "none"
        return
    import lightning_client as lc
    from lightning_client.serving.app import create_app
    from lightning_client.serving.runner import ServerThread
    from lightning_client.serving.settings import ServerSettings

    with lc.testing.Sandbox() as sb:
        router = lc.Router([lc.ReplicateGenerator.for_sandbox(sb), lc.FalGenerator.for_sandbox(sb)])
        with ServerThread(create_app(router, settings=ServerSettings(api_keys=("k",)))) as url:
            yield url, "k"


def main() -> None:
    with server(sys.argv[1:]) as (url, key):
        client = openai.OpenAI(base_url=f"{url}/v1", api_key=key)
        response = client.images.generate(
            model="sdxl-lightning",
            prompt="a lighthouse at dusk, film photo",
            size="1024x1024",
            extra_body={"steps": 4, "seed": 42},  # our fields travel in the body
        )
        extra = response.model_extra or {}
        assert response.data
        path = Path("out/lighthouse.png")  # out/ is ignored by git
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(response.data[0].b64_json or ""))
        print(f"{extra['provider']} drew seed {extra['seed']} in {extra['timings']['total_s']:.2f} s -> {path}")


if __name__ == "__main__":
    main()
