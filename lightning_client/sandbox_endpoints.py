"""`SandboxEndpoints`: where a provider sandbox serves its emulated endpoints, one base URL per name.

Light on purpose (no server imports): generators point themselves at a sandbox through it, and
command-line tools reach a sandbox running in another process by its URL.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from urllib.parse import urlsplit

from lightning_client.errors import ConfigurationError

__all__ = ["SandboxEndpoints"]


class SandboxEndpoints:
    """The base URL of each endpoint a sandbox emulates, by endpoint name (a provider's kind, or one of
    its extra endpoints such as `fal_run`).

    `lightning_client.testing.Sandbox` is one, running in this process; `SandboxEndpoints.from_url`
    names one running elsewhere (`lightning-client sandbox --port N`).
    """

    def __init__(self, urls: Mapping[str, str]) -> None:
        self._urls = dict(urls)

    @property
    def urls(self) -> dict[str, str]:
        """Every endpoint's base URL, by name."""
        return {name: self.url(name) for name in self._urls}

    def url(self, endpoint: str) -> str:
        """The base URL of `endpoint`; `ConfigurationError` naming the endpoints there are otherwise."""
        try:
            return self._urls[endpoint]
        except KeyError:
            allowed = ", ".join(sorted(self._urls)) or "none"
            raise ConfigurationError(
                f"the sandbox serves no endpoint {endpoint!r}; allowed: {allowed}", path="sandbox"
            ) from None

    @classmethod
    def from_url(cls, url: str, endpoints: Sequence[str]) -> SandboxEndpoints:
        """`endpoints` on consecutive ports from `url` (the first at its port N, the next at N+1, ...), as
        `lightning-client sandbox --port N` serves them.

        Raises ValueError for anything but http://HOST:PORT.
        """
        parts = urlsplit(url)
        if parts.scheme != "http" or parts.hostname is None or parts.port is None:
            raise ValueError(f"{url!r} is invalid; allowed: http://HOST:PORT")
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        return cls({name: f"http://{host}:{parts.port + offset}" for offset, name in enumerate(endpoints)})

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._urls}>"
