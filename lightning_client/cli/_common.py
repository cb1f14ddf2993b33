"""Shared CLI plumbing: option parsing, the sandbox option, progress, clean error lines (building is `assembly`'s)."""

from __future__ import annotations

import asyncio
import contextlib
import traceback
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console, ConsoleDimensions
from rich.progress import Progress, TaskID

from lightning_client import _background
from lightning_client._log import get_logger, mask_secrets
from lightning_client._money import format_usd
from lightning_client._suggest import did_you_mean
from lightning_client._sync import INTERRUPT_WAIT_S
from lightning_client.assembly import MissingKeysError, keys_to_set, provider_class, registered
from lightning_client.batching.items import BatchFileError
from lightning_client.errors import ConfigurationError, InvalidRequestError, LightningError
from lightning_client.sandbox_endpoints import SandboxEndpoints

T = TypeVar("T")

logger = get_logger("lightning_client.cli")

#: Width of output that is not a terminal (a pipe, a CI log) when COLUMNS does not say: wide enough that no table is cut.
PIPE_WIDTH = 1000


class WideWhenPiped(Console):
    """A rich console that, writing to a pipe or file without COLUMNS set, never narrows tables to 80 columns."""

    @property
    def size(self) -> ConsoleDimensions:
        size = super().size
        if self._width is None and not self.is_terminal and "COLUMNS" not in self._environ:
            return ConsoleDimensions(PIPE_WIDTH, size.height)
        return size

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        self._width, self._height = new_size


console = WideWhenPiped(highlight=False)
err_console = WideWhenPiped(stderr=True, highlight=False)

Debug = Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors.")]
UseSandbox = Annotated[
    bool, typer.Option("--sandbox", help="Start an in-process provider sandbox (offline, no keys, nothing billed).")
]
SandboxUrl = Annotated[
    str | None,
    typer.Option(
        "--sandbox-url",
        help="Use a sandbox already running (`lightning-client sandbox --port N`): its first URL, "
        "http://127.0.0.1:N (the other providers are on the next ports).",
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
    str | None,
    typer.Option(
        "--ledger",
        help="Record every attempt in this ledger: a SQLite file path, or a postgresql://user@host:port/db URL "
        "(shared by processes: one ledger and one budget).",
    ),
]
Size = Annotated[str | None, typer.Option("--size", help="Image size WxH, e.g. 1024x1024 (multiples of 64).")]
AspectRatio = Annotated[
    str | None, typer.Option("--aspect-ratio", help="W:H, mapped to the nearest SDXL size, e.g. 16:9.")
]
Format = Annotated[str, typer.Option("--format", help="Output format: png, jpeg or webp.")]


def folder_flags() -> list[str]:
    return [cls.folder_flag for _, cls in registered() if getattr(cls, "folder_flag", None)] or ["--model-folder"]


def _folder_help() -> str:
    helps = [f"{kind}: {cls.folder_help}" for kind, cls in registered() if getattr(cls, "folder_flag", None)]
    return "Folder of model weights for a provider that loads them from disk (" + "; ".join(helps) + ")."


def _options_help() -> str:
    listed = [
        f"{kind}: {', '.join(o.name for o in cls.options)}" for kind, cls in registered() if getattr(cls, "options", ())
    ]
    return (
        "PROVIDER.OPTION=VALUE passed to that provider's constructor (repeatable). Options: " + "; ".join(listed) + "."
    )


ModelFolder = Annotated[Path | None, typer.Option(*folder_flags(), help=_folder_help(), file_okay=False)]
ProviderOptions = Annotated[list[str] | None, typer.Option("--option", help=_options_help())]


def missing_keys_message(providers: Sequence[str], command: str) -> str:
    """Which variables to set for `providers`, and how to try the sandbox instead."""
    return (
        f"no API key found: set {keys_to_set(providers)}. "
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


def provider_choices(*, auto: bool = False) -> str:
    """The one wording of the provider choices: "auto or one of a, b" or "a comma-separated list of a, b"."""
    from lightning_client.registry import provider_kinds

    kinds = ", ".join(provider_kinds())
    return f"auto or one of {kinds}" if auto else f"a comma-separated list of {kinds}"


def provider_name(text: str) -> str:
    """The registered provider kind for `text`, case-insensitive (ValueError lists every kind, with a suggestion)."""
    from lightning_client.errors import UnknownProviderError
    from lightning_client.registry import provider_kinds

    kind = text.strip().lower()
    if kind not in provider_kinds():
        raise UnknownProviderError(
            f"provider {text!r} is unknown{did_you_mean(kind, provider_kinds())}; allowed: {', '.join(provider_kinds())}"
        )
    return kind


def parse_providers(text: str, *, option: str = "--providers", single: bool = False) -> list[str]:
    """'Acme,other,acme' -> ['acme', 'other']: registered kinds, case-insensitive, duplicates dropped.

    With `single` (`--provider`), exactly one kind, and the message offers auto too.
    """
    names = [p.strip() for p in text.split(",") if p.strip()]
    try:
        if not names or (single and len(names) > 1):
            raise ValueError("one provider" if single else "no provider given")
        kinds = [provider_name(p) for p in names]
    except ValueError:
        from lightning_client.registry import provider_kinds

        wrong = next((n for n in names if n.lower() not in provider_kinds()), None)
        unknown = did_you_mean(wrong, provider_kinds()) if wrong else ""
        raise typer.BadParameter(
            f"{text!r} is invalid{unknown}; allowed: {provider_choices(auto=single)}", param_hint=option
        ) from None
    return list(dict.fromkeys(kinds))


def parse_options(values: Sequence[str] | None, providers: Sequence[str]) -> dict[str, dict[str, Any]]:
    """['acme.mode=run'] -> {'acme': {'mode': 'run'}}, checked against each provider class's `options`."""
    chosen: dict[str, dict[str, Any]] = {}
    for value in values or ():
        target, sep, raw = value.partition("=")
        kind_text, dot, name = target.strip().partition(".")
        try:
            kind = provider_name(kind_text) if dot and sep else ""
        except ValueError as exc:
            raise typer.BadParameter(f"{value!r}: {exc}", param_hint="--option") from None
        if not kind:
            raise typer.BadParameter(f"{value!r} is invalid; allowed: PROVIDER.OPTION=VALUE", param_hint="--option")
        offered = {o.name: o for o in provider_class(kind).options}
        option = offered.get(name.strip())
        if option is None:
            allowed = ", ".join(offered) or "none"
            raise typer.BadParameter(
                f"{value!r}: {kind} has no option {name.strip()!r}; allowed: {allowed}", param_hint="--option"
            )
        if option.choices and raw not in option.choices:
            raise typer.BadParameter(f"{value!r}: allowed: {', '.join(option.choices)}", param_hint="--option")
        try:
            converted = option.type(raw)
        except ValueError:
            raise typer.BadParameter(
                f"{value!r}: {option.name} must be a {option.type.__name__}", param_hint="--option"
            ) from None
        chosen.setdefault(kind, {})[option.name] = converted
    unused = [kind for kind in chosen if kind not in providers]
    if unused:
        raise typer.BadParameter(f"options for {', '.join(unused)}, which this run does not use", param_hint="--option")
    return chosen


def parse_steps(text: str, *, option: str = "--steps") -> list[int]:
    """'1,2,4,8' -> [1, 2, 4, 8]."""
    try:
        steps = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        steps = []
    if not steps or any(s not in (1, 2, 4, 8) for s in steps):
        raise typer.BadParameter(
            f"{text!r} is invalid; allowed: 1, 2, 4 or 8, comma-separated (e.g. 1,2,4,8)", param_hint=option
        )
    return list(dict.fromkeys(steps))


def parse_limits(values: Sequence[str] | None, option: str, parse: Callable[[str], T]) -> dict[str, T]:
    """['acme=2', 'other=4'] -> {'acme': parse('2'), ...}."""
    from lightning_client.registry import provider_kinds

    limits: dict[str, T] = {}
    for value in values or ():
        provider, sep, limit = value.partition("=")
        try:
            kind = provider_name(provider) if sep else None
        except ValueError:
            kind = None
        if kind is None:
            raise typer.BadParameter(
                f"{value!r} is invalid; allowed: PROVIDER=VALUE with PROVIDER one of {', '.join(provider_kinds())}",
                param_hint=option,
            )
        try:
            limits[kind] = parse(limit.strip())
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


@contextlib.asynccontextmanager
async def maybe_sandbox(
    enabled: bool, url: str | None = None, *, configure: Mapping[str, Mapping[str, Any]] | None = None
) -> AsyncIterator[SandboxEndpoints | None]:
    """Start an in-process sandbox when `enabled` (or use the one at `url`); `configure` maps provider -> settings."""
    if url is not None:
        if enabled:
            raise UsageError("use either --sandbox (start one here) or --sandbox-url (use a running one), not both")
        try:
            elsewhere = sandbox_at(url)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--sandbox-url") from None
        yield elsewhere
        return
    if not enabled:
        yield None
        return
    async with _sandbox_class()() as sandbox:
        for provider, settings in (configure or {}).items():
            sandbox.provider(provider).configure(**settings)
        yield sandbox


def start_sandbox(stack: contextlib.ExitStack, enabled: bool, url: str | None) -> SandboxEndpoints | None:
    """`--sandbox` (a sandbox started here, stopped with `stack`) or `--sandbox-url`; None without either.

    A bad URL raises `UsageError`.
    """
    if url is not None:
        try:
            return sandbox_at(url)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    if not enabled:
        return None
    sandbox: SandboxEndpoints = stack.enter_context(_sandbox_class()())
    return sandbox


def sandbox_at(url: str) -> SandboxEndpoints:
    """The endpoints of the sandbox `lightning-client sandbox` serves at `url` (ValueError for a bad URL)."""
    from lightning_client.testing import ENDPOINTS

    return SandboxEndpoints.from_url(url, ENDPOINTS)


def _sandbox_class() -> Any:
    try:
        from lightning_client.testing.sandbox import Sandbox
    except ImportError as exc:
        raise UsageError(
            f"the sandbox needs its extra ({exc.name} is missing): pip install -e '.[sandbox]' in the checkout"
        ) from None
    return Sandbox


class UsageError(Exception):
    """A problem with how the command was called (exit status 2)."""


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


# Typer raises click's UsageError (BadParameter's base), from click itself or from the copy of
# click that newer typer releases vendor; taking it from BadParameter works with both.
ClickUsageError: type[Exception] = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")


def usage_error_exit(exc: Any) -> NoReturn:
    """Print a click usage error as one line naming the command's help, and exit 2."""
    if type(exc).__name__ == "NoArgsIsHelpError":
        raise exc  # a bare group or command prints its help
    message = " ".join(exc.format_message().split())
    ctx = getattr(exc, "ctx", None)
    where = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
    err_console.print(f"[bold red]error[/]: {_escape(message + where)}", soft_wrap=True)
    raise typer.Exit(2)


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
    except ClickUsageError as exc:  # a bad option value found once the command runs
        usage_error_exit(exc)
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


def usd(value: float | None, known: float = 0.0, *, estimated: bool = False) -> str:
    """Dollars as every table prints them (`format_usd`): never $0 for a non-zero or unknown cost."""
    return format_usd(value, known, estimated=estimated)


def per_image(value: float | None, *, unknown: bool, estimated: bool) -> str:
    """A $/image cell: "unknown" when some cost is, "–" when no image was delivered."""
    if unknown:
        return "unknown"
    return "–" if value is None else usd(value, estimated=estimated)


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
