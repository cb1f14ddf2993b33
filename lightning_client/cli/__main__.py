"""`python -m lightning_client.cli`: the same as the `lightning-client` command."""

from lightning_client.cli import main

main()
