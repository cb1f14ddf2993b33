"""The `lightning-client` command line."""

from __future__ import annotations

from lightning_client.cli.app import app


def main() -> None:
    """Entry point of the `lightning-client` console script."""
    app()


__all__ = ["app", "main"]
