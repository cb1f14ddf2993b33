"""The base URLs of a sandbox running in another process (`lightning-client sandbox --port N`).

Light on purpose (no server imports): command-line tools use it to reach a sandbox by URL.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = ["SandboxAt"]


@dataclass(frozen=True)
class SandboxAt:
    """A sandbox elsewhere: the URLs a `Sandbox` has as attributes."""

    replicate_url: str
    fal_url: str
    fal_run_url: str
    fal_rest_url: str

    @classmethod
    def from_url(cls, url: str) -> SandboxAt:
        """Replicate at `url` (port N); fal queue, run and REST on N+1, N+2, N+3, as `Sandbox(port=N)` serves them.

        Raises ValueError for anything but http://HOST:PORT.
        """
        parts = urlsplit(url)
        if parts.scheme != "http" or parts.hostname is None or parts.port is None:
            raise ValueError(f"{url!r} is invalid; allowed: http://HOST:PORT")
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        return cls(*(f"http://{host}:{parts.port + offset}" for offset in range(4)))
