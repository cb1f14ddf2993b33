"""Shared CLI plumbing: option parsing, key detection, building generators, clean error lines."""

from __future__ import annotations

import asyncio
import contextlib
import traceback
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar, Union
from urllib.parse import urlsplit

import typer
from rich.console import Console
from rich.progress import Progress, TaskID

from lightning_client import _background
from lightning_client._sync import INTERRUPT_WAIT_S
from lightning_client.batching.items import BatchFileError
from lightning_client.credentials import get_logger, mask_secrets
from lightning_client.errors import ConfigurationError, InvalidRequestError, LightningError
from lightning_client.result import format_usd

if TYPE_CHECKING:
    from lightning_client.generator import Generator
    from lightning_client.routing.router import Router
    from lightning_client.testing.sandbox import Sandbox

T = TypeVar("T")

logger = get_logger("lightning_client.cli")

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)

HOSTED = ("replicate", "fal")
PROVIDERS = ("replicate", "fal", "local")
#: The environment variables each hosted provider reads its key from.
KEY_VARIABLES = {
    "replicate": "REPLICATE_API_TOKEN",
    "fal": "FAL_KEY (or FAL_KEY_ID and FAL_KEY_SECRET)",
}
#: Keys the sandbox accepts; not secrets.
SANDBOX_KEYS = {"replicate": "r8_sandbox", "fal": "sandbox:key"}

Debug = Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors.")]
UseSandbox = Annotated[
    bool, typer.Option("--sandbox", help="Start an in-process provider sandbox (offline, no keys, no cost).")
]
SandboxUrl = Annotated[
    str | None,
    typer.Option(
        "--sandbox-url",
        help="Use a sandbox already running (`lightning-client sandbox --port N`): its Replicate URL, "
        "e.g. http://127.0.0.1:N; fal is on the next three ports.",
    ),
]
ConfigFile = Annotated[
    Path | None,
    typer.Option(
        "--config",
        envvar="LIGHTNING_CLIENT_CONFIG",
        dir_okay=False,
        help="Configuration file (TOML) with the generators, router and ledger to use instead of --provider; "
        "default: $LIGHTNING_CLIENT_CONFIG (see docs/configuration.md).",
    ),
]
LedgerPath = Annotated[
    Path | None, typer.Option("--ledger", help="Record every attempt in this SQLite ledger file.", dir_okay=False)
]
Size = Annotated[str | None, typer.Option("--size", help="Image size WxH, e.g. 1024x1024 (multiples of 64).")]
AspectRatio = Annotated[
    str | None, typer.Option("--aspect-ratio", help="W:H, mapped to the nearest SDXL size, e.g. 16:9.")
]
Format = Annotated[str, typer.Option("--format", help="Output format: png, jpeg or webp.")]
LocalModel = Annotated[
    Path | None,
    typer.Option("--local-model", help="Folder with base/ and lightning/ for the local provider.", file_okay=False),
]


def has_key(provider: str) -> bool:
    """Whether the environment holds the provider's credentials (always, for one that needs none)."""
    from lightning_client.registry import generator_class

    return bool(generator_class(provider).has_credentials())


def hosted_providers(sandbox: bool, sandbox_url: str | None) -> list[str]:
    """Every hosted provider with a sandbox, else those with a key in the environment (none: `MissingKeysError`)."""
    chosen = list(HOSTED) if sandbox or sandbox_url else [p for p in HOSTED if has_key(p)]
    if not chosen:
        raise MissingKeysError(HOSTED)
    return chosen


def missing_keys_message(providers: Sequence[str], command: str) -> str:
    """Which variables to set for `providers`, and how to try the sandbox instead."""
    needed = [f"{KEY_VARIABLES[p]} for {p}" for p in providers if p in KEY_VARIABLES and not has_key(p)]
    return (
        f"no API key found: set {' or '.join(needed)}. "
        f"To try it offline with emulated providers, add --sandbox (e.g. `lightning-client {command} --sandbox ...`) "
        "or run `lightning-client demo`."
    )


POLICY_HELP = "Router policy: priority (the --providers order), cheapest, fastest or weighted."


def parse_policy(text: str) -> str:
    """A router policy name, checked against the router's policies (case-insensitive)."""
    from lightning_client.routing.policies import POLICIES

    allowed = [*POLICIES, "weighted"]
    name = text.strip().lower()
    if name not in allowed:
        raise typer.BadParameter(f"{text!r} is invalid; allowed: {', '.join(allowed)}", param_hint="--policy")
    return name


def provider_name(text: str) -> str:
    """The registered provider name for `text`, case-insensitive (ValueError lists the allowed names)."""
    from lightning_client.providers import REGISTRY

    name = text.strip().lower()
    if name not in REGISTRY:
        raise ValueError(f"provider {text!r} is unknown; allowed: {', '.join(REGISTRY)}")
    return name


def parse_providers(text: str, allowed: Sequence[str] = PROVIDERS) -> list[str]:
    """'replicate,fal' -> ['replicate', 'fal'], each checked against `allowed`."""
    names = [p.strip().lower() for p in text.split(",") if p.strip()]
    bad = [p for p in names if p not in allowed]
    if not names or bad:
        raise typer.BadParameter(f"{text!r} is invalid; allowed: a comma-separated list of {', '.join(allowed)}")
    return list(dict.fromkeys(names))


def parse_steps(text: str) -> list[int]:
    """'1,2,4,8' -> [1, 2, 4, 8]."""
    try:
        steps = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        steps = []
    if not steps or any(s not in (1, 2, 4, 8) for s in steps):
        raise typer.BadParameter(f"{text!r} is invalid; allowed: 1, 2, 4 or 8, comma-separated (e.g. 1,2,4,8)")
    return list(dict.fromkeys(steps))


def parse_limits(values: Sequence[str] | None, option: str, parse: Callable[[str], T]) -> dict[str, T]:
    """['fal=2', 'replicate=4'] -> {'fal': parse('2'), ...}."""
    limits: dict[str, T] = {}
    for value in values or ():
        provider, sep, limit = value.partition("=")
        provider = provider.strip().lower()
        if not sep or provider not in PROVIDERS:
            raise typer.BadParameter(
                f"{value!r} is invalid; allowed: PROVIDER=VALUE with PROVIDER one of {', '.join(PROVIDERS)}",
                param_hint=option,
            )
        try:
            limits[provider] = parse(limit.strip())
        except ValueError as exc:
            raise typer.BadParameter(f"{value!r}: {exc}", param_hint=option) from None
    return limits


def size_fields(size: str | None, aspect_ratio: str | None) -> dict[str, Any]:
    """Request fields for --size WxH or --aspect-ratio W:H (not both)."""
    if size is not None and aspect_ratio is not None:
        raise typer.BadParameter("use either --size WxH or --aspect-ratio W:H, not both", param_hint="--size")
    if aspect_ratio is not None:
        return {"aspect_ratio": aspect_ratio}
    if size is None:
        return {}
    width, sep, height = size.lower().partition("x")
    if not sep or not width.strip().isdigit() or not height.strip().isdigit():
        raise typer.BadParameter(f"{size!r} is invalid; allowed: WxH, e.g. 1024x1024", param_hint="--size")
    return {"width": int(width), "height": int(height)}


def check_request_fields(fields: dict[str, Any]) -> None:
    """Validate request fields once, before anything starts (raises `InvalidRequestError`)."""
    from lightning_client.request import GenerationRequest

    GenerationRequest(prompt="check", **fields)


@dataclass(frozen=True)
class SandboxEndpoints:
    """The base URLs of a sandbox running elsewhere (the attributes a `Sandbox` has too)."""

    replicate_url: str
    fal_url: str
    fal_run_url: str
    fal_rest_url: str

    @classmethod
    def from_url(cls, url: str) -> SandboxEndpoints:
        """Replicate at `url` (port N); fal queue, run and REST on N+1, N+2, N+3, as `Sandbox(port=N)` serves them."""
        parts = urlsplit(url)
        if parts.scheme != "http" or parts.hostname is None or parts.port is None:
            raise typer.BadParameter(f"{url!r} is invalid; allowed: http://HOST:PORT", param_hint="--sandbox-url")
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        urls = [f"http://{host}:{parts.port + offset}" for offset in range(4)]
        return cls(*urls)


Endpoints = Union["Sandbox", SandboxEndpoints]


def hosted_generator(name: str, sandbox: Endpoints | None) -> Generator:
    """A hosted generator by registry kind: pointed at `sandbox` when given, else configured from the environment."""
    from lightning_client.registry import generator_class

    cls = generator_class(name)
    if sandbox is None:
        return cls()  # type: ignore[no-any-return]
    return cls.for_sandbox(sandbox)  # type: ignore[no-any-return]


def build_generators(
    providers: Sequence[str], sandbox: Endpoints | None, *, local_model: Path | None = None
) -> list[Generator]:
    """One generator per provider name; without a sandbox, missing keys are a clear error."""
    if sandbox is None:
        missing = [p for p in providers if not has_key(p)]
        if missing:
            raise MissingKeysError(missing)
    generators: list[Generator] = []
    for name in providers:
        if name == "local":
            from lightning_client.providers.local import LocalGenerator

            if local_model is None:
                generators.append(LocalGenerator())
            else:
                generators.append(
                    LocalGenerator(base_model=str(local_model / "base"), lightning_repo=str(local_model / "lightning"))
                )
        else:
            generators.append(hosted_generator(name, sandbox))
    return generators


@contextlib.asynccontextmanager
async def open_router(
    providers: Sequence[str],
    sandbox: Endpoints | None,
    *,
    ledger_path: Path | None,
    local_model: Path | None = None,
    wrap: Callable[[Generator], Generator] | None = None,
    **options: Any,
) -> AsyncIterator[Router]:
    """A router over `providers` (each optionally wrapped), recording into a SQLite ledger when given a path.

    On exit the generators and the ledger are closed.
    """
    from lightning_client.ledger import Ledger
    from lightning_client.routing.router import Router

    generators = build_generators(providers, sandbox, local_model=local_model)
    if wrap is not None:
        generators = [wrap(g) for g in generators]
    ledger = Ledger(ledger_path) if ledger_path is not None else Ledger()
    try:
        async with Router(generators, ledger=ledger, **options) as router:
            yield router
    finally:
        ledger.close()


@contextlib.asynccontextmanager
async def open_configured_router(path: Path, *, ledger_path: Path | None = None) -> AsyncIterator[Router]:
    """The router a configuration file describes (`--ledger` replaces its [ledger] path); closed on exit."""
    from lightning_client.config import read_config

    config = read_config(path)
    if ledger_path is not None:
        config = config.model_copy(update={"ledger": config.ledger.model_copy(update={"path": ledger_path})})
    router = config.build_router()
    try:
        async with router:
            yield router
    finally:
        router.ledger.close()


@contextlib.asynccontextmanager
async def maybe_sandbox(
    enabled: bool, url: str | None = None, *, configure: Mapping[str, Mapping[str, Any]] | None = None
) -> AsyncIterator[Endpoints | None]:
    """Start an in-process sandbox when `enabled` (or use the one at `url`); `configure` maps provider -> settings."""
    if url is not None:
        if enabled:
            raise UsageError("use either --sandbox (start one here) or --sandbox-url (use a running one), not both")
        yield SandboxEndpoints.from_url(url)
        return
    if not enabled:
        yield None
        return
    try:
        from lightning_client.testing.sandbox import Sandbox
    except ImportError as exc:
        raise UsageError(
            f"the sandbox needs its extra ({exc.name} is missing): pip install 'lightning-client[sandbox]'"
        ) from None
    async with Sandbox() as sandbox:
        for provider, settings in (configure or {}).items():
            getattr(sandbox, provider).configure(**settings)
        yield sandbox


class UsageError(Exception):
    """A problem with how the command was called (exit status 2)."""


class MissingKeysError(UsageError):
    """Hosted providers were asked for without their API keys."""

    def __init__(self, providers: Sequence[str], command: str = "generate") -> None:
        self.providers = list(providers)
        super().__init__(missing_keys_message(providers, command))


def error_line(exc: BaseException) -> str:
    """One line: the error class, the provider and the message, secrets masked."""
    if isinstance(exc, LightningError):
        where = f" [{exc.provider}]" if exc.provider else ""
        details = [
            f"{k}={v}" for k, v in (("status", exc.status_code), ("request_id", exc.request_id)) if v is not None
        ]
        suffix = f" ({', '.join(details)})" if details else ""
        text = f"{type(exc).__name__}{where}: {exc.message}{suffix}"
    else:
        text = f"{type(exc).__name__}: {exc}"
    return mask_secrets(" ".join(text.split()))


def fail(exc: BaseException, *, debug: bool, code: int = 1) -> NoReturn:
    """Print `exc` as one clean line (plus the traceback with --debug) and exit non-zero."""
    if debug:
        err_console.print(mask_secrets("".join(traceback.format_exception(exc))), markup=False, end="")
    err_console.print(f"[bold red]error[/]: {_escape(error_line(exc))}", soft_wrap=True)
    raise typer.Exit(code)


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def run(main: Callable[[], Coroutine[Any, Any, T]], *, debug: bool, command: str) -> T:
    """Run an async command body with the CLI's error handling (Ctrl-C exits 130)."""

    async def guarded() -> T:
        if not debug:
            # Errors of background tasks nobody awaits (e.g. a create still failing as Ctrl-C shuts
            # the loop down) go to the package logger, not as tracebacks onto the terminal.
            asyncio.get_running_loop().set_exception_handler(_log_loop_error)
        try:
            return await main()
        finally:
            # Ctrl-C cancels the command; remote cancels it started (and late creates' reapers) finish
            # here, bounded, before asyncio.run would cancel them along with every other task.
            await _background.drain(INTERRUPT_WAIT_S)

    try:
        return asyncio.run(guarded())
    except typer.Exit:
        raise
    except MissingKeysError as exc:
        exc.args = (missing_keys_message(exc.providers, command),)
        fail(exc, debug=debug, code=2)
    except BatchFileError as exc:
        # A plain-text file is wrong on every line: a few of them and the hint say enough.
        shown = exc.problems[:3] if exc.hint else exc.problems
        for problem in shown:
            err_console.print(f"[bold red]error[/]: {_escape(mask_secrets(problem))}", soft_wrap=True)
        if len(shown) < len(exc.problems):
            err_console.print(f"[bold red]error[/]: ... and {len(exc.problems) - len(shown)} more line(s) like these")
        if exc.hint:
            err_console.print(f"[yellow]hint[/]: {_escape(exc.hint)}", soft_wrap=True)
        raise typer.Exit(2) from None
    except (UsageError, InvalidRequestError, ConfigurationError) as exc:
        fail(exc, debug=debug, code=2)
    except LightningError as exc:
        fail(exc, debug=debug)
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/]")
        raise typer.Exit(130) from None
    except Exception as exc:  # noqa: BLE001 - anything else still gets one clean line unless --debug
        fail(exc, debug=debug)


def _log_loop_error(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    error = context.get("exception")
    logger.debug("%s: %s", context.get("message", "event loop error"), error_line(error) if error else "")


def usd(value: float | None) -> str:
    """Dollars with 4 decimals, or 6 for sub-tenth-of-a-cent amounts; None is an unknown cost, never $0."""
    return format_usd(value)


def seconds(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f} s"


def progress_bar(*, transient: bool = False) -> Progress:
    """A rich progress bar with count, rate, elapsed time and ETA."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        SpinnerColumn(),
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[status]}"),
        console=console,
        transient=transient,
    )


def advance_progress(bar: Progress, task: TaskID, failed: int) -> None:
    """One more done: advance `task` and show the rate and the failures so far."""
    bar.advance(task)
    state = bar.tasks[task]
    bar.update(
        task,
        rate=rate_text(int(state.completed), state.elapsed),
        status=f"[red]{failed} failed[/]" if failed else "",
    )


def rate_text(done: int, elapsed: float | None) -> str:
    """'1.3 img/s' style throughput."""
    if not done or not elapsed:
        return "– /s"
    per_second = done / elapsed
    return f"{per_second:.2f}/s" if per_second >= 0.1 else f"{per_second * 60:.1f}/min"
