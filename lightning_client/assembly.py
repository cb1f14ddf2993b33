"""Building what is routed and served: generators from provider kinds, a sandbox or a configuration file.

The one builder the command line, the server and the Ray application share. Providers are found
through the registry, so nothing here names one.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lightning_client.generator import Generator
from lightning_client.state import is_url

if TYPE_CHECKING:
    from lightning_client.config import Config
    from lightning_client.providers.local import LocalGenerator
    from lightning_client.routing.router import Router
    from lightning_client.sandbox_endpoints import SandboxEndpoints

__all__ = [
    "MissingKeysError",
    "build_generators",
    "build_served",
    "configured_router",
    "has_key",
    "hosted_generator",
    "hosted_providers",
    "keys_to_set",
    "local_generator",
    "open_configured_router",
    "open_router",
    "provider_class",
    "registered",
]


class MissingKeysError(ValueError):
    """Hosted providers were asked for without their credentials; `providers` names them."""

    def __init__(self, providers: Sequence[str]) -> None:
        self.providers = list(providers)
        super().__init__(f"no API key found: set {keys_to_set(self.providers)}")


def keys_to_set(providers: Sequence[str]) -> str:
    """What to set for those of `providers` whose credentials are missing: "VAR for kind or ..."."""
    return " or ".join(f"{provider_class(p).credential_hint()} for {p}" for p in providers if not has_key(p))


def registered() -> list[tuple[str, Any]]:
    """(kind, class) for every registered provider, built-in first (in registry order), then plugins."""
    from lightning_client.registry import REGISTRY, generator_class, provider_kinds

    provider_kinds()  # loads the entry points into REGISTRY
    return [(kind, generator_class(kind)) for kind in list(REGISTRY)]


def provider_class(kind: str) -> Any:
    """The registered generator class for a provider kind."""
    from lightning_client.registry import generator_class

    return generator_class(kind)


def has_key(provider: str) -> bool:
    """Whether the environment holds the provider's credentials (always, for one that needs none)."""
    return bool(provider_class(provider).has_credentials())


def hosted_providers(sandboxed: bool) -> list[str]:
    """With a sandbox, every provider it emulates; else every provider that needs a key and has one.

    None at all raises `MissingKeysError` naming what to set.
    """
    if sandboxed:
        return [kind for kind, cls in registered() if cls.sandboxed]
    needing = [kind for kind, cls in registered() if cls.credential_env]
    chosen = [kind for kind in needing if has_key(kind)]
    if not chosen:
        raise MissingKeysError(needing)
    return chosen


def build_generators(
    providers: Sequence[str],
    sandbox: SandboxEndpoints | None,
    *,
    folder: Path | None = None,
    options: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[Generator]:
    """One generator per provider kind, built by its registered class.

    With `sandbox`, providers it emulates are pointed at it; without, missing keys raise
    `MissingKeysError`. `folder` goes to the providers that load weights from disk (their
    `folder_flag`), `options` maps kind -> constructor options.
    """
    if sandbox is None:
        missing = [p for p in providers if not has_key(p)]
        if missing:
            raise MissingKeysError(missing)
    generators: list[Generator] = []
    for kind in providers:
        cls = provider_class(kind)
        kwargs: dict[str, Any] = dict((options or {}).get(kind, {}))
        if folder is not None and cls.folder_flag:
            kwargs.update(cls.folder_options(folder))
        if sandbox is not None and cls.sandboxed:
            generators.append(cls.for_sandbox(sandbox, **kwargs))
        else:
            generators.append(cls(**kwargs))
    return generators


def hosted_generator(kind: str, sandbox: SandboxEndpoints | None) -> Generator:
    """A generator of a registered kind: pointed at `sandbox` when given, else configured from the environment."""
    (generator,) = build_generators([kind], sandbox)
    return generator


def local_generator(folder: Path | None = None, *, factory: str | None = None, **options: Any) -> LocalGenerator:
    """A `LocalGenerator` on a folder of weights (its `folder_options`), or on `options` alone.

    `factory` ("module:function", called with the options as keyword arguments) builds it
    instead, e.g. around an in-memory pipeline; it must return a `LocalGenerator`.
    """
    from lightning_client.providers.local import LocalGenerator

    if folder is not None:
        options = {**LocalGenerator.folder_options(folder), **options}
    if factory is None:
        return LocalGenerator(**options)
    module, _, name = factory.partition(":")
    built = getattr(importlib.import_module(module), name)(**options)
    if not isinstance(built, LocalGenerator):
        raise TypeError(f"factory {factory!r} returned {type(built).__name__}, not a LocalGenerator")
    return built


def configured_router(
    path: str | Path, *, ledger: str | Path | None = None, replace: Mapping[str, Generator] | None = None
) -> Router:
    """The router a configuration file describes; `ledger` replaces its [ledger] path, `replace` maps a
    generator's name to the one to use in its place."""
    from lightning_client.config import read_config

    config: Config = read_config(path)
    if ledger is not None:
        where = ledger if is_url(ledger) else Path(ledger)
        config = config.model_copy(update={"ledger": config.ledger.model_copy(update={"path": where})})
    return config.build_router(replace=replace)


def build_served(
    *,
    config: str | Path | None = None,
    sandbox: SandboxEndpoints | None = None,
    folder: Path | None = None,
    local: Generator | None = None,
    hosted: Sequence[str] = (),
    ledger: str | Path | None = None,
    max_wait_s: float | None = None,
) -> Generator:
    """The generator a server serves (`lightning-client serve`, `mcp` and the Ray ingress alike).

    `config`: the file's router (`ledger` replaces its [ledger] path; `local` takes the place of
    the file's generator of the same name). Otherwise the local generator (`local`, or one on the
    weights in `folder`) then the `hosted` providers (pointed at `sandbox` when given): the local
    one alone is served as it is, unless a `ledger` or `max_wait_s` asks for a `Router`; with any
    hosted provider, a `Router` over them all. Nothing to serve raises `ValueError`.
    """
    if config is not None:
        return configured_router(config, ledger=ledger, replace=None if local is None else {local.name: local})
    if local is None and folder is not None:
        local = local_generator(folder)
    if local is None and not hosted:
        raise ValueError("nothing to serve: give --config, --sandbox, --local-model, or set a provider's API key")
    if local is not None and not hosted and ledger is None and max_wait_s is None:
        return local
    from lightning_client.ledger import Ledger
    from lightning_client.routing.router import Router

    members = ([] if local is None else [local]) + build_generators(hosted, sandbox)
    return Router(members, ledger=None if ledger is None else Ledger(ledger), max_wait_s=max_wait_s)


@contextlib.asynccontextmanager
async def open_router(
    providers: Sequence[str],
    sandbox: SandboxEndpoints | None,
    *,
    ledger_path: str | Path | None,
    folder: Path | None = None,
    provider_options: Mapping[str, Mapping[str, Any]] | None = None,
    wrap: Callable[[Generator], Generator] | None = None,
    **options: Any,
) -> AsyncIterator[Router]:
    """A router over `providers` (each optionally wrapped), recording into a ledger when given a path or URL.

    On exit the generators and the ledger are closed.
    """
    from lightning_client.ledger import Ledger
    from lightning_client.routing.router import Router

    generators = build_generators(providers, sandbox, folder=folder, options=provider_options)
    if wrap is not None:
        generators = [wrap(g) for g in generators]
    ledger = Ledger(ledger_path) if ledger_path is not None else Ledger()
    try:
        async with Router(generators, ledger=ledger, **options) as router:
            yield router
    finally:
        ledger.close()


@contextlib.asynccontextmanager
async def open_configured_router(path: Path, *, ledger_path: str | Path | None = None) -> AsyncIterator[Router]:
    """The router a configuration file describes (`ledger_path` replaces its [ledger] path); closed on exit."""
    router = configured_router(path, ledger=ledger_path)
    try:
        async with router:
            yield router
    finally:
        router.ledger.close()
