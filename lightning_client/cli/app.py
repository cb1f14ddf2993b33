"""The typer application; each command group lives in its own module."""

from __future__ import annotations

import typer

from lightning_client.cli._commands import Group

app = typer.Typer(
    name="lightning-client",
    cls=Group,
    help="SDXL-Lightning over hosted providers and your own GPU: generate, compare, batch, serve, mcp, sandbox, demo.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    # Plain help (click's): it wraps at any width, where rich's option tables cut long names at 80 columns.
    rich_markup_mode=None,
)


@app.command()
def version() -> None:
    """Print the installed version."""
    from lightning_client._version import __version__

    typer.echo(__version__)


from lightning_client.cli.batch import batch  # noqa: E402
from lightning_client.cli.compare import compare  # noqa: E402
from lightning_client.cli.demo import demo  # noqa: E402
from lightning_client.cli.generate import generate  # noqa: E402
from lightning_client.cli.ledger import ledger_app  # noqa: E402
from lightning_client.cli.mcp import mcp  # noqa: E402
from lightning_client.cli.sandbox import sandbox  # noqa: E402
from lightning_client.cli.serve import serve  # noqa: E402

app.command()(sandbox)
app.command()(generate)
app.command()(compare)
app.command()(batch)
app.command()(demo)
app.command()(serve)
app.command()(mcp)
app.add_typer(ledger_app, name="ledger")
