"""What `lightning-client serve` serves: one generator or a Router, from its options or a config file.

This is the one place that turns the command's options into the served generator, so the same
configuration serves in-process, behind the server and behind a Ray Serve ingress.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lightning_client.generator import Generator

if TYPE_CHECKING:
    from lightning_client.sandbox_endpoints import SandboxEndpoints

__all__ = ["build_served", "local_generator"]


def local_generator(folder: Path, **options: Any) -> Generator:
    """A `LocalGenerator` on a folder holding `base/` (a diffusers SDXL pipeline) and `lightning/` (checkpoints)."""
    from lightning_client.providers.local import LocalGenerator

    return LocalGenerator(base_model=str(folder / "base"), lightning_repo=str(folder / "lightning"), **options)


def _configured_router(path: Path, ledger: str | Path) -> Generator:
    """The file's router recording into `ledger` (`--ledger` replaces its [ledger] path)."""
    from lightning_client.config import read_config

    config = read_config(path)
    return config.model_copy(update={"ledger": config.ledger.model_copy(update={"path": ledger})}).build_router()


def _from_config(path: Path) -> Generator:
    config = importlib.import_module("lightning_client")
    load = getattr(config, "load_config", None)
    if load is None:
        raise ValueError("--config needs lightning_client.load_config, which this installation lacks")
    loaded = load(path)
    if isinstance(loaded, Generator):
        return loaded
    for name in ("router", "build_router", "build"):
        make = getattr(loaded, name, None)
        if callable(make):
            made = make()
            if isinstance(made, Generator):
                return made
    raise ValueError(f"{path}: the configuration does not describe a generator or router")


def build_served(
    *,
    config: Path | None = None,
    sandbox: SandboxEndpoints | None = None,
    local_model: Path | None = None,
    folder: Path | None = None,
    hosted: Sequence[str] = (),
    ledger_path: str | Path | None = None,
) -> Generator:
    """The generator to serve.

    `config`: the file's router (or generator). Otherwise: a `LocalGenerator` on `local_model`
    alone, or a `Router` over it (when given) then the hosted providers (`hosted`: those with
    keys; with `sandbox` both, pointed at it).
    """
    if config is not None:
        return _from_config(config) if ledger_path is None else _configured_router(config, ledger_path)
    local_model = local_model or folder  # `folder`: the command line's folder of local weights
    from lightning_client.cli._common import build_generators

    names = (["local"] if local_model is not None else []) + list(hosted)
    if not names:
        raise ValueError("nothing to serve: give --config, --sandbox, --local-model, or set a provider's API key")
    if names == ["local"] and local_model is not None:
        return local_generator(local_model)
    from lightning_client.ledger import Ledger
    from lightning_client.routing.router import Router

    generators = build_generators(names, sandbox, folder=local_model)
    return Router(generators, ledger=Ledger(ledger_path) if ledger_path is not None else None)
