"""Resumable batches: JSONL items, a manifest of finished work, per-provider limits and the runner."""

from __future__ import annotations

from lightning_client.batching.items import BatchFileError, BatchItem, file_stem, load_items, parse_items
from lightning_client.batching.limits import LimitedGenerator, RateLimiter, parse_rate
from lightning_client.batching.manifest import Manifest, ManifestEntry
from lightning_client.batching.matrix import Cell, plan_matrix, run_matrix
from lightning_client.batching.pool import run_pool
from lightning_client.batching.runner import BatchSummary, Routes, run_batch

__all__ = [
    "BatchFileError",
    "BatchItem",
    "BatchSummary",
    "Cell",
    "LimitedGenerator",
    "Manifest",
    "ManifestEntry",
    "RateLimiter",
    "Routes",
    "file_stem",
    "load_items",
    "parse_items",
    "parse_rate",
    "plan_matrix",
    "run_batch",
    "run_matrix",
    "run_pool",
]
