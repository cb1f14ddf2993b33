"""The constructor arguments every hosted generator shares, and their deprecated spellings."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

from lightning_client.generator import LightningDeprecationWarning

__all__ = ["hosted_arguments"]

#: The positional arguments hosted generators once took, in order.
_POSITIONAL = ("api_key", "base_url", "model")
#: Frames between a warning raised here and the caller's line: this module's function, the helper, `__init__`.
_STACKLEVEL = 4


def hosted_arguments(
    owner: str,
    legacy: Sequence[Any],
    *,
    api_key: Any,
    base_url: str | None,
    model: str | None,
    renamed: Mapping[str, tuple[str, Any]] | None = None,
) -> tuple[Any, str | None, str | None]:
    """`(api_key, base_url, model)` of a hosted generator's constructor, read from their deprecated
    spellings too (each with a `LightningDeprecationWarning` at the caller's line).

    `legacy` holds positional arguments (api_key, base_url, model, in that order); `renamed` maps an old
    keyword to the new one it stands for and the value given under it: `{"api_token": ("api_key", value)}`.
    Giving both spellings of one argument is a TypeError.
    """
    values: dict[str, Any] = {"api_key": api_key, "base_url": base_url, "model": model}
    for old, (new, old_value) in (renamed or {}).items():
        values[new] = _renamed(owner, old, old_value, new, values[new])
    values.update(_positional(owner, legacy))
    return values["api_key"], values["base_url"], values["model"]


def _positional(owner: str, values: Sequence[Any]) -> dict[str, Any]:
    """Deprecated positional arguments by their keyword names."""
    if not values:
        return {}
    if len(values) > len(_POSITIONAL):
        raise TypeError(f"{owner}() takes at most {len(_POSITIONAL)} positional arguments ({len(values)} given)")
    names = ", ".join(_POSITIONAL[: len(values)])
    warnings.warn(
        f"positional arguments to {owner}() are deprecated; pass them by keyword ({names}=)",
        LightningDeprecationWarning,
        stacklevel=_STACKLEVEL,
    )
    return dict(zip(_POSITIONAL, values, strict=False))


def _renamed(owner: str, old: str, old_value: Any, new: str, new_value: Any) -> Any:
    """`new_value`, or the value given under the deprecated name `old`."""
    if old_value is None:
        return new_value
    if new_value is not None:
        raise TypeError(f"{owner}() got both {new}= and its deprecated spelling {old}=; pass only {new}=")
    warnings.warn(f"{owner}({old}=...) is deprecated; use {new}=", LightningDeprecationWarning, stacklevel=_STACKLEVEL)
    return old_value
