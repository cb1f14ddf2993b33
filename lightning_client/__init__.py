"""lightning-client: one interface for SDXL-Lightning over Replicate, fal.ai and local diffusers.

The request/result models and the errors are imported eagerly; generators, the router,
the ledger and the testing sandbox load on first use, so `import lightning_client`
stays fast and never imports torch.

The package is also the composition root: it installs the realtime opener the generator contract
calls (`install_realtime`), so `gen.realtime()` reaches the realtime sessions, a higher layer,
without the generator module importing them.
"""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING, Any

from lightning_client._log import get_logger
from lightning_client._version import __version__
from lightning_client.errors import (
    AllProvidersFailedError,
    AuthenticationError,
    BudgetExceededError,
    ConfigurationError,
    ContentFilteredError,
    GenerationTimeoutError,
    InvalidRequestError,
    LightningError,
    ProviderResponseError,
    ProviderUnavailableError,
    RateLimitError,
    UnknownProviderError,
)
from lightning_client.generator import BaseGenerator, Capabilities, Generator, install_realtime
from lightning_client.request import GenerationRequest
from lightning_client.result import (
    Attempt,
    Cost,
    GeneratedImage,
    GenerationResult,
    GenerationWarning,
    Timings,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from lightning_client import testing, webhooks
    from lightning_client.cache import ResultCache
    from lightning_client.config import Config, load_config, read_config
    from lightning_client.generator import AttemptRecorder
    from lightning_client.ledger import Ledger
    from lightning_client.providers.fal import FalGenerator
    from lightning_client.providers.local import LocalGenerator
    from lightning_client.providers.remote import RemoteGenerator
    from lightning_client.providers.replicate import ReplicateGenerator
    from lightning_client.realtime.session import RealtimeSession
    from lightning_client.routing.router import Router


#: `lc.Warning` is the short name of `GenerationWarning`.
Warning = GenerationWarning

get_logger("lightning_client").addHandler(logging.NullHandler())


def _open_realtime(
    generator: Generator,
    *,
    throttle_s: float,
    ledger: AttemptRecorder | None,
    providers: Sequence[str] | None,
) -> RealtimeSession:
    """A session from `lightning_client.realtime`, imported on the first one (it loads routing too)."""
    from lightning_client.realtime.session import open_session

    return open_session(generator, throttle_s=throttle_s, ledger=ledger, providers=providers)


install_realtime(_open_realtime)

_LAZY = {
    "ReplicateGenerator": "lightning_client.providers.replicate",
    "FalGenerator": "lightning_client.providers.fal",
    "LocalGenerator": "lightning_client.providers.local",
    "RemoteGenerator": "lightning_client.providers.remote",
    "Router": "lightning_client.routing.router",
    "Ledger": "lightning_client.ledger",
    "ResultCache": "lightning_client.cache",
    "load_config": "lightning_client.config",
    "read_config": "lightning_client.config",
    "Config": "lightning_client.config",
}


def __getattr__(name: str) -> Any:
    if name in ("testing", "webhooks"):
        return importlib.import_module(f"lightning_client.{name}")
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'lightning_client' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "AllProvidersFailedError",
    "Attempt",
    "AuthenticationError",
    "BaseGenerator",
    "BudgetExceededError",
    "Capabilities",
    "Config",
    "ConfigurationError",
    "ContentFilteredError",
    "Cost",
    "FalGenerator",
    "GeneratedImage",
    "GenerationRequest",
    "GenerationResult",
    "GenerationTimeoutError",
    "GenerationWarning",
    "Generator",
    "InvalidRequestError",
    "Ledger",
    "LightningError",
    "LocalGenerator",
    "ProviderResponseError",
    "ProviderUnavailableError",
    "RateLimitError",
    "RemoteGenerator",
    "ReplicateGenerator",
    "ResultCache",
    "Router",
    "Timings",
    "UnknownProviderError",
    "Warning",
    "__version__",
    "load_config",
    "read_config",
    "testing",
    "webhooks",
]
