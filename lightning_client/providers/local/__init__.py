"""The local diffusers backend: `LocalGenerator`, its warm pipeline, checkpoint files and batch queue.

Importing this package does not import torch or diffusers; the pipeline loads them when it warms.
"""

from __future__ import annotations

from lightning_client.providers.local.generator import LocalGenerator, ProgressCallback

__all__ = ["LocalGenerator", "ProgressCallback"]
