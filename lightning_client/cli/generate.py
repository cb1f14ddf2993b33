"""`lightning-client generate`: one request, printed with provider, seed, latency breakdown and cost."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from lightning_client.assembly import hosted_providers, open_configured_router, open_router, provider_class
from lightning_client.batching.items import file_stem
from lightning_client.cli._common import (
    AspectRatio,
    ConfigFile,
    Debug,
    Format,
    LedgerPath,
    ModelFolder,
    ProviderOptions,
    SandboxUrl,
    Size,
    UseSandbox,
    check_request_fields,
    console,
    err_console,
    maybe_sandbox,
    parse_options,
    parse_providers,
    run,
    seconds,
    size_fields,
)
from lightning_client.result import GenerationResult, format_usd


def free_stem(folder: Path, result: GenerationResult) -> str:
    """`provider-seed`, or `provider-seed_N` with the first N >= 2 whose files do not exist yet."""
    base = file_stem(f"{result.provider}-{result.seed}")
    for n in itertools.count(1):
        stem = base if n == 1 else f"{base}_{n}"
        if not any((folder / f"{stem}-{i}.{image.extension}").exists() for i, image in enumerate(result.images)):
            return stem
    raise AssertionError("unreachable")


def print_result(result: GenerationResult, paths: list[Path]) -> None:
    """The provider, seed, latency breakdown, cost, warnings, attempts and saved files."""
    t = result.timings
    console.print(
        f"[bold green]✓[/] [bold]{result.provider}[/] · {escape(result.model.split(':')[0])} · seed {result.seed} · "
        f"{result.steps} steps · {len(result.images)} image(s)"
    )
    load = "" if t.load_s is None else f"load {seconds(t.load_s)} · "
    console.print(
        f"  latency   queue {seconds(t.queue_s)} · {load}inference {seconds(t.inference_s)} · "
        f"download {seconds(t.download_s)} · total {seconds(t.total_s)}"
    )
    estimated = ", estimated" if result.cost.estimated else ""
    console.print(
        f"  cost      {format_usd(result.cost.usd, result.cost.known_usd)} ({escape(result.cost.basis or 'no basis reported')}{estimated})"
    )
    tried = [a for a in result.attempts if a.outcome != "skipped"]
    if len(tried) > 1:
        steps = " → ".join(f"{a.provider} {a.outcome}" + (f" ({a.error_type})" if a.error_type else "") for a in tried)
        console.print(f"  attempts  {escape(steps)}")
    for warning in result.warnings:
        console.print(f"  [yellow]warning[/]   {escape(str(warning))}")
    for path in paths:
        console.print(f"  saved     {escape(str(path))}")


def show_steps(generators: Sequence[Any]) -> None:
    """Print each denoising step of generators that report them (a `progress` attribute)."""

    def on_step(step: int, total: int) -> None:
        err_console.print(f"  step {step}/{total}")

    for generator in generators:
        if hasattr(generator, "progress"):
            generator.progress = on_step


def generate(
    prompt: Annotated[str, typer.Argument(help="What to draw.")],
    provider: Annotated[
        str,
        typer.Option(
            "--provider",
            "-p",
            help="A registered provider (any case), or auto: every provider that needs a key and has one "
            "(with --sandbox: every one it emulates).",
        ),
    ] = "auto",
    steps: Annotated[int, typer.Option("--steps", help="Inference steps: 1, 2, 4 or 8.")] = 4,
    size: Size = None,
    aspect_ratio: AspectRatio = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Seed (drawn at random when absent).")] = None,
    num_images: Annotated[int, typer.Option("--num-images", "-n", help="Images per request, 1 to 8.")] = 1,
    output_format: Format = "png",
    negative_prompt: Annotated[str | None, typer.Option("--negative-prompt", help="Things to avoid.")] = None,
    timeout: Annotated[
        float | None, typer.Option("--timeout", help="Deadline in seconds for the whole request.")
    ] = None,
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            "-o",
            help="Folder for the images, named PROVIDER-SEED-N.EXT; an existing name gets _2, _3, ... "
            "before -N unless --overwrite.",
            file_okay=False,
        ),
    ] = Path("outputs"),
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace images of the same name in --out.")] = False,
    folder: ModelFolder = None,
    option: ProviderOptions = None,
    sandbox: UseSandbox = False,
    sandbox_url: SandboxUrl = None,
    ledger: LedgerPath = None,
    config: ConfigFile = None,
    debug: Debug = False,
) -> None:
    """Generate images with one provider (or auto failover) and save them with their metadata."""
    if config is not None and (sandbox or sandbox_url):
        raise typer.BadParameter("the configuration file names the generators; drop --sandbox", param_hint="--config")
    # With --config, --provider picks one configured generator by its name; else it is a registered kind.
    chosen = (
        None
        if provider.strip().lower() == "auto" or config is not None
        else parse_providers(provider, option="--provider", single=True)
    )
    if chosen is not None and (sandbox or sandbox_url) and not provider_class(chosen[0]).sandboxed:
        raise typer.BadParameter(f"the sandbox does not emulate {chosen[0]}; drop --sandbox", param_hint="--sandbox")
    fields: dict[str, Any] = {
        "steps": steps,
        "seed": seed,
        "num_images": num_images,
        "output_format": output_format,
        "negative_prompt": negative_prompt,
        "timeout_s": timeout,
        **size_fields(size, aspect_ratio),
    }

    async def main() -> None:
        check_request_fields(fields)
        if config is not None:  # --provider then picks one configured generator by name
            async with open_configured_router(config, ledger_path=ledger) as router:
                named = None if provider.strip().lower() == "auto" else [provider]
                show_steps(router.generators)
                result = await router.agenerate(prompt, providers=named, **fields)
        else:
            providers = chosen or hosted_providers(bool(sandbox or sandbox_url))
            settings = parse_options(option, providers)
            async with (
                maybe_sandbox(sandbox, sandbox_url) as sb,
                open_router(providers, sb, ledger_path=ledger, folder=folder, provider_options=settings) as router,
            ):
                show_steps(router.generators)
                result = await router.agenerate(prompt, **fields)
        stem = file_stem(f"{result.provider}-{result.seed}") if overwrite else free_stem(out, result)
        paths = await asyncio.to_thread(result.save, out, stem)
        print_result(result, paths)

    run(main, debug=debug, command="generate")
