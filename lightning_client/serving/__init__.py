"""Self-hosted serving: an OpenAI-compatible and native HTTP API over any generator or router.

`create_app(generator)` (in `lightning_client.serving.app`) builds the FastAPI application;
`lightning-client serve` runs it on uvicorn. Needs the `serve` extra; importing this package
alone imports nothing heavy.
"""
