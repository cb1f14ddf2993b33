"""Declarative configuration: generators by registry kind, the router, the ledger, from TOML or a dict.

```toml
[[generators]]
kind = "replicate"                    # a registry kind (case-insensitive), plugins included
name = "rep-a"                        # optional; default: the kind
api_key_env = "REPLICATE_API_TOKEN"   # <option>_env: the option's value from an environment variable
wait_s = 30                           # any other constructor option of the kind
requests_per_s = 10                   # hosted kinds: a rate limit (and max_in_flight), see docs/serving.md

[router]
policy = "fastest"
retries = 2
hedge = "p90"

[ledger]
path = "runs.sqlite"
```

`load_config(source)` validates everything before building anything and returns a ready
`Router` (its `.config` is the validated `Config`); `read_config(source)` only validates.
Every problem is a `ConfigurationError` naming its key path (`generators[1].base_url`).
Tables other than `generators`, `router` and `ledger` belong to other parts of the
package (`[server]`, `[ray]`): see `register_section`.
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import sys
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator

from lightning_client.errors import ConfigurationError, InvalidRequestError, LightningError
from lightning_client.providers._http.generator import HttpGenerator
from lightning_client.providers._http.rate_limit import RateLimiter
from lightning_client.registry import generator_class
from lightning_client.routing.breaker import BreakerConfig
from lightning_client.routing.router import HedgeConfig

if TYPE_CHECKING:
    from lightning_client.cache import ResultCache
    from lightning_client.generator import Generator
    from lightning_client.routing.router import Router

__all__ = [
    "CONFIG_ENV",
    "CacheSettings",
    "Config",
    "GeneratorSettings",
    "LedgerSettings",
    "RouterSettings",
    "load_config",
    "read_config",
    "register_section",
]

M = TypeVar("M", bound=BaseModel)

#: The environment variable naming a configuration file (the `--config` default of `lightning-client`).
CONFIG_ENV = "LIGHTNING_CLIENT_CONFIG"
#: Suffix of a generator key whose value is the name of an environment variable holding the option.
ENV_SUFFIX = "_env"
#: Top-level tables owned by other parts of the package: name -> schema (a model, its
#: "module:Class" path, or None to keep the table as given until `Config.section` reads it).
SECTIONS: dict[str, type[BaseModel] | str | None] = {
    "server": None,
    "ray": "lightning_client.serving.ray_settings:RaySettings",
}
_OWN_TABLES = ("generators", "router", "ledger", "cache")
#: Keys of a hosted generator's entry that set its `rate_limit` rather than a constructor option.
RATE_LIMIT_KEYS = ("requests_per_s", "max_in_flight")


def register_section(name: str, schema: type[BaseModel] | str | None) -> None:
    """Allow a top-level table `name`, validated by `schema` when the file is read.

    `schema` may be a "module:Class" path, imported only when a file has that table.
    """
    if name in _OWN_TABLES:
        raise ValueError(f"[{name}] is part of the core schema")
    SECTIONS[name] = schema


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Breaker(BreakerConfig):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Hedge(HedgeConfig):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RouterSettings(_Strict):
    """The `[router]` table: the `Router` arguments a file can set."""

    policy: Literal["priority", "cheapest", "fastest", "weighted"] = "priority"
    weights: dict[str, float] | None = None
    retries: int = Field(default=2, ge=0)
    breaker: _Breaker | bool | None = None
    hedge: _Hedge | float | str | None = None
    budget_usd: float | None = Field(default=None, gt=0)
    budget_usd_per_day: float | None = Field(default=None, gt=0)
    budget_name: str = Field(default="default", min_length=1)
    max_wait_s: float | None = Field(default=None, gt=0)

    @field_validator("hedge")
    @classmethod
    def _hedge(cls, value: Any) -> Any:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            HedgeConfig.parse(value)  # "p90" or seconds; raises ValueError naming the value
        return value

    @field_validator("weights")
    @classmethod
    def _weights(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        for name, weight in (value or {}).items():
            if weight < 0:
                raise ValueError(f"weight of {name!r} must be >= 0")
        return value


def _path_or_url(value: Any) -> Any:
    """A `postgresql://` URL as given; anything else a path."""
    from lightning_client.state import is_url

    if value is None or (isinstance(value, str) and is_url(value)):
        return value
    return Path(value)


class LedgerSettings(_Strict):
    """The `[ledger]` table: `path` of a SQLite file (relative to the working directory), or a
    `postgresql://` URL shared by many processes; none: in memory."""

    path: Path | str | None = None
    max_records: int = Field(default=100_000, ge=1)

    _path = field_validator("path", mode="before")(lambda value: _path_or_url(value))


class CacheSettings(_Strict):
    """The `[cache]` table: a `ResultCache` at `path` (a folder) or a `postgresql://` URL; none: no cache."""

    path: Path | str | None = None
    folder: Path | None = None
    ttl_s: float | None = Field(default=86_400.0, gt=0)
    max_bytes: int | None = Field(default=1 << 30, gt=0)
    max_entries: int | None = Field(default=None, gt=0)

    _path = field_validator("path", mode="before")(lambda value: _path_or_url(value))


class GeneratorSettings(_Strict):
    """One `[[generators]]` entry as given: literal options, and options read from environment variables.

    Values from the environment are read when the generator is built (and checked when the
    file is read), never stored here, so a `Config` holds no secret it was not given inline.
    """

    kind: str
    name: str
    options: dict[str, Any] = Field(default_factory=dict)
    env: dict[str, str] = Field(default_factory=dict)
    #: `requests_per_s` and `max_in_flight` for the generator's `rate_limit` (hosted kinds).
    rate_limit: dict[str, Any] = Field(default_factory=dict)


class _Invalid(Exception):
    """Problems found in one part of a configuration: (key path, message) pairs."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        super().__init__(problems)
        self.problems = problems


class Config(_Strict):
    """A validated configuration; `build_router()` and `build_generators()` construct what it describes."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    generators: list[GeneratorSettings]
    router: RouterSettings = RouterSettings()
    ledger: LedgerSettings = LedgerSettings()
    cache: CacheSettings = CacheSettings()
    #: Tables owned by other parts of the package (`[server]`, `[ray]`), validated or as given.
    sections: dict[str, Any] = Field(default_factory=dict)
    source: str | None = None

    def section(self, name: str, schema: type[M]) -> M:
        """The `[name]` table validated by `schema` (an empty table when absent); errors name `name.key`."""
        value = self.sections.get(name, {})
        if isinstance(value, schema):
            return value
        if isinstance(value, BaseModel):
            value = value.model_dump()
        try:
            return schema.model_validate(value)
        except ValidationError as exc:
            raise _error(self.source, _pydantic_problems(exc, (name,))) from None

    def build_generators(
        self, environ: Mapping[str, str] | None = None, *, replace: Mapping[str, Generator] | None = None
    ) -> list[Generator]:
        """One generator per `[[generators]]` entry, in file order.

        `replace` maps entry names to generators used instead of building those entries (the Ray
        application serves its worker pool in place of the `local` entry).
        """
        env = os.environ if environ is None else environ
        built: list[Generator] = []
        try:
            for index, spec in enumerate(self.generators):
                given = None if replace is None else replace.get(spec.name)
                built.append(given if given is not None else _build(spec, index, env, self.source))
        except BaseException:
            for generator in built:
                generator.close()
            raise
        return built

    def build_router(
        self, environ: Mapping[str, str] | None = None, *, replace: Mapping[str, Generator] | None = None
    ) -> Router:
        """The `Router` over `build_generators(environ, replace=replace)`, with the `[router]` settings and the `[ledger]`."""
        from lightning_client.ledger import Ledger
        from lightning_client.routing.router import Router

        generators = self.build_generators(environ, replace=replace)
        settings = self.router
        ledger = Ledger(settings_path(self.ledger.path), max_records=self.ledger.max_records)
        cache = self._cache()
        breaker: BreakerConfig | bool | None = settings.breaker
        hedge: HedgeConfig | float | str | None = settings.hedge
        try:
            router = Router(
                generators,
                settings.policy,
                ledger=ledger,
                retries=settings.retries,
                breaker=breaker,
                hedge=hedge,
                budget_usd=settings.budget_usd,
                budget_usd_per_day=settings.budget_usd_per_day,
                budget_name=settings.budget_name,
                cache=cache,
                weights=settings.weights,
                max_wait_s=settings.max_wait_s,
            )
        except (ValueError, TypeError) as exc:
            for generator in generators:
                generator.close()
            ledger.close()
            if cache is not None:
                cache.close()
            raise _error(self.source, [("router", str(exc))]) from None
        router.config = self
        return router

    def _cache(self) -> ResultCache | None:
        """The `[cache]` table's `ResultCache` (None when it names no path)."""
        settings = self.cache
        if settings.path is None:
            return None
        from lightning_client.cache import ResultCache

        return ResultCache(
            settings_path(settings.path) or settings.path,
            folder=settings_path(settings.folder),
            ttl_s=settings.ttl_s,
            max_bytes=settings.max_bytes,
            max_entries=settings.max_entries,
        )


def settings_path(path: Path | str | None) -> Path | str | None:
    """A ledger path with `~` expanded (a database URL as it is)."""
    return path.expanduser() if isinstance(path, Path) else path


def load_config(
    source: str | os.PathLike[str] | Mapping[str, Any], *, environ: Mapping[str, str] | None = None
) -> Router:
    """Read and validate a configuration (TOML or JSON file, or a dict) and build its `Router`.

    The router's `.config` is the validated `Config` (for `[server]`/`[ray]` and the settings).
    Raises `ConfigurationError` naming the key path of every problem; nothing is built then.
    """
    return read_config(source, environ=environ).build_router(environ)


def read_config(
    source: str | os.PathLike[str] | Mapping[str, Any], *, environ: Mapping[str, str] | None = None
) -> Config:
    """Validate a configuration without building anything: unknown keys, bad values, unknown kinds,
    unset environment variables are all reported, each with its key path."""
    env = os.environ if environ is None else environ
    data, where = _load(source)
    problems: list[tuple[str, str]] = []
    allowed = (*_OWN_TABLES, *SECTIONS)
    for key in data:
        if key not in allowed:
            problems.append((str(key), f"unknown table or key; allowed: {', '.join(allowed)}"))
    raw_generators = data.get("generators")
    generators: list[GeneratorSettings] = []
    if not isinstance(raw_generators, list) or not raw_generators:
        problems.append(("generators", "at least one [[generators]] entry (a list of tables) is required"))
    else:
        for index, raw in enumerate(raw_generators):
            spec, found = _generator_settings(raw, index, env)
            problems += found
            if spec is not None:
                generators.append(spec)
        names = [g.name for g in generators]
        for index, spec in enumerate(generators):
            if names.index(spec.name) != index:
                problems.append((f"generators[{index}].name", f"{spec.name!r} is used twice; names must be distinct"))
    router = _validated(RouterSettings, data.get("router", {}), "router", problems)
    if router is not None and router.weights:
        for name in router.weights:
            if name not in {g.name for g in generators}:
                problems.append((f"router.weights.{name}", "names no generator"))
    ledger = _validated(LedgerSettings, data.get("ledger", {}), "ledger", problems)
    cache = _validated(CacheSettings, data.get("cache", {}), "cache", problems)
    sections: dict[str, Any] = {}
    for name, schema in SECTIONS.items():
        if name not in data:
            continue
        value = data[name]
        if schema is None:
            if not isinstance(value, Mapping):
                problems.append((name, "must be a table"))
            else:
                sections[name] = dict(value)
            continue
        model = _import_schema(schema)
        checked = _validated(model, value, name, problems)
        if checked is not None:
            sections[name] = checked
    if problems:
        raise _error(where, problems)
    assert router is not None and ledger is not None and cache is not None
    return Config(generators=generators, router=router, ledger=ledger, cache=cache, sections=sections, source=where)


# -- reading ----------------------------------------------------------------------------------------


def _load(source: str | os.PathLike[str] | Mapping[str, Any]) -> tuple[dict[str, Any], str | None]:
    if isinstance(source, Mapping):
        return dict(source), None
    path = Path(source)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigurationError(f"cannot read configuration {path}: {exc.strerror or exc}", path=str(path)) from None
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else _toml().loads(text)
    except ValueError as exc:  # tomllib.TOMLDecodeError and json.JSONDecodeError are ValueErrors
        raise ConfigurationError(f"{path}: not valid {'JSON' if path.suffix == '.json' else 'TOML'}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigurationError(f"{path}: the configuration must be a table (an object) at the top level")
    return data, str(path)


def _toml() -> Any:
    if sys.version_info >= (3, 11):
        import tomllib

        return tomllib
    return importlib.import_module("tomli")  # the tomli dependency on Python 3.10


def _import_schema(schema: type[BaseModel] | str) -> type[BaseModel]:
    if not isinstance(schema, str):
        return schema
    module, _, name = schema.partition(":")
    value = getattr(importlib.import_module(module), name)
    assert isinstance(value, type) and issubclass(value, BaseModel)
    return value


# -- validation -------------------------------------------------------------------------------------


def _path(loc: Sequence[str | int]) -> str:
    """("generators", 1, "base_url") -> "generators[1].base_url"."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


def _pydantic_problems(exc: ValidationError, prefix: Sequence[str | int]) -> list[tuple[str, str]]:
    problems = []
    for error in exc.errors(include_url=False):
        loc = [*prefix, *error["loc"]]
        # Union members add their type name to the location ("hedge._Hedge.delay_s"): keep the keys only.
        loc = [p for p in loc if not (isinstance(p, str) and _is_union_tag(p))]
        if error["type"] == "extra_forbidden":
            problems.append((_path(loc), "unknown key"))
            continue
        if error["type"] == "missing":
            problems.append((_path(loc), "required"))
            continue
        message = str(error["msg"]).removeprefix("Value error, ")
        problems.append((_path(loc), f"{message} (got {_shown(error.get('input'))})"))
    return _dedupe(problems)


_TYPE_TAGS = frozenset({"str", "int", "float", "bool", "none", "dict", "list", "tuple", "set", "bytes"})


def _is_union_tag(part: str) -> bool:
    """Whether a location part is pydantic's name of a union member, not a key."""
    return part in _TYPE_TAGS or part[:1].isupper() or part[:1] == "_" or "[" in part or "-" in part


def _dedupe(problems: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """One entry per path; a union's other members' complaints about a parent of a deeper problem are dropped."""
    merged: dict[str, list[str]] = {}
    for path, message in problems:
        if message not in merged.setdefault(path, []):
            merged[path].append(message)
    deeper = [p for p in merged if any(other.startswith((p + ".", p + "[")) for other in merged)]
    return [(path, " or ".join(messages)) for path, messages in merged.items() if path not in deeper]


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _validated(model: type[M], value: Any, where: str, problems: list[tuple[str, str]]) -> M | None:
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        problems += _pydantic_problems(exc, (where,))
        return None


def _error(source: str | None, problems: list[tuple[str, str]]) -> ConfigurationError:
    where = f" ({source})" if source else ""
    text = "; ".join(f"{path}: {message}" if path else message for path, message in problems)
    return ConfigurationError(f"invalid configuration{where}: {text}", path=problems[0][0] if problems else None)


_OPTION_MODELS: dict[type, tuple[type[BaseModel], set[str]]] = {}


def _options_model(cls: type) -> tuple[type[BaseModel], set[str]]:
    """A pydantic model of `cls`'s keyword constructor options (cached), and the required ones."""
    cached = _OPTION_MODELS.get(cls)
    if cached is not None:
        return cached
    signature = inspect.signature(cls)
    try:
        hints = typing.get_type_hints(getattr(cls, "__init__"))  # noqa: B009 - mypy rejects cls.__init__
    except Exception:  # noqa: BLE001 - an annotation we cannot resolve: accept any value for every option
        hints = {}
    fields: dict[str, Any] = {}
    required: set[str] = set()
    for parameter in signature.parameters.values():
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD, parameter.POSITIONAL_ONLY):
            continue
        annotation = hints.get(parameter.name, Any)
        if parameter.default is parameter.empty:
            required.add(parameter.name)
            fields[parameter.name] = (annotation, ...)
        else:
            fields[parameter.name] = (annotation, parameter.default)
    model = create_model(
        f"{cls.__name__}Options",
        __config__=ConfigDict(extra="forbid", arbitrary_types_allowed=True, protected_namespaces=()),
        **fields,
    )
    _OPTION_MODELS[cls] = (model, required)
    return model, required


def _generator_settings(
    raw: Any, index: int, env: Mapping[str, str]
) -> tuple[GeneratorSettings | None, list[tuple[str, str]]]:
    here = f"generators[{index}]"
    if not isinstance(raw, Mapping):
        return None, [(here, "must be a table")]
    kind = raw.get("kind")
    if not isinstance(kind, str) or not kind.strip():
        return None, [(f"{here}.kind", "required: a provider kind")]
    try:
        cls = generator_class(kind)
    except ConfigurationError as exc:
        return None, [(f"{here}.kind", exc.message)]
    model, _ = _options_model(cls)
    accepted = set(model.model_fields)
    limited = issubclass(cls, HttpGenerator)
    options: dict[str, Any] = {}
    variables: dict[str, str] = {}
    limits: dict[str, Any] = {}
    problems: list[tuple[str, str]] = []
    for key, value in raw.items():
        if key == "kind":
            continue
        if limited and key in RATE_LIMIT_KEYS and key not in accepted:
            limits[key] = value
            continue
        option = key[: -len(ENV_SUFFIX)] if key.endswith(ENV_SUFFIX) and key not in accepted else None
        if option is not None and option in accepted:
            if not isinstance(value, str) or not value:
                problems.append((f"{here}.{key}", "must be the name of an environment variable"))
            elif option in raw:
                problems.append((f"{here}.{key}", f"give either {option} or {key}, not both"))
            else:
                variables[option] = value
        elif key in accepted:
            options[key] = value
        else:
            choices = ", ".join(sorted(accepted | set(RATE_LIMIT_KEYS if limited else ())))
            problems.append(
                (
                    f"{here}.{key}",
                    f"unknown option for provider {kind!r}; options: kind, {choices} (each also as <option>_env)",
                )
            )
    name = options.get("name", getattr(cls, "kind", kind))
    spec = GeneratorSettings(
        kind=kind.strip().lower(), name=str(name), options=options, env=variables, rate_limit=limits
    )
    try:
        _resolve(spec, model, here, env)
    except _Invalid as exc:
        problems += exc.problems
    try:
        RateLimiter(spec.name, **limits)
    except ConfigurationError as exc:
        problems.append((f"{here}.{exc.path}", exc.message))
    return (None, problems) if problems else (spec, [])


def _resolve(spec: GeneratorSettings, model: type[BaseModel], here: str, env: Mapping[str, str]) -> dict[str, Any]:
    """The constructor keyword arguments of `spec`: its options plus the environment's, validated."""
    values = dict(spec.options)
    problems: list[tuple[str, str]] = []
    for option, variable in spec.env.items():
        found = env.get(variable)
        if found is None or not found.strip():
            problems.append((f"{here}.{option}{ENV_SUFFIX}", f"environment variable {variable} is not set"))
        else:
            values[option] = found
    if not problems:
        try:
            checked = model.model_validate(values)
        except ValidationError as exc:
            # A value read from the environment is reported at its `_env` key, never shown.
            index = int(here.removeprefix("generators[").removesuffix("]"))
            for path, message in _pydantic_problems(exc, ("generators", index)):
                option = path.removeprefix(here + ".").split(".")[0].split("[")[0]
                if option in spec.env:
                    problems.append((f"{here}.{option}{ENV_SUFFIX}", f"{spec.env[option]} is invalid"))
                else:
                    problems.append((path, message))
        else:
            return {key: getattr(checked, key) for key in checked.model_fields_set}
    raise _Invalid(problems)


def _build(spec: GeneratorSettings, index: int, env: Mapping[str, str], source: str | None) -> Generator:
    here = f"generators[{index}]"
    cls = generator_class(spec.kind)
    model, _ = _options_model(cls)
    try:
        arguments = _resolve(spec, model, here, env)
    except _Invalid as exc:
        raise _error(source, exc.problems) from None
    try:
        generator: Generator = cls(**arguments)
    except ConfigurationError as exc:
        key = _from_source(exc.path or "", spec)
        raise _error(source, [(f"{here}.{key}" if key else here, exc.message)]) from None
    except InvalidRequestError as exc:
        raise _error(source, [(f"{here}.{exc.field}" if exc.field else here, exc.message)]) from None
    except (LightningError, ValueError, TypeError) as exc:
        raise _error(source, [(here, str(exc))]) from None
    if spec.rate_limit and isinstance(generator, HttpGenerator):
        generator.rate_limit.configure(**spec.rate_limit)
    return generator


def _from_source(path: str, spec: GeneratorSettings) -> str:
    """The configuration key behind a constructor error's `path` (an argument or a variable)."""
    for option, variable in spec.env.items():
        if variable in path or path == option:
            return f"{option}{ENV_SUFFIX}"
    return path if path in spec.options else ""
