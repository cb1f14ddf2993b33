"""`python -m lightning_client` runs the CLI."""

from lightning_client.cli import main

main()
