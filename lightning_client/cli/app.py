"""The typer application; each command group lives in its own module."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="lightning-client",
    help="SDXL-Lightning over Replicate, fal.ai and local diffusers: generate, compare, batch, sandbox.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)


@app.command()
def version() -> None:
    """Print the installed version."""
    from lightning_client import __version__

    typer.echo(__version__)
