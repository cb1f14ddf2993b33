"""Measured figures quoted outside docs/benchmarks.md, rendered from benchmarks/results/*.json.

    python benchmarks/doc_numbers.py           # rewrite the marked sections in docs/*.md
    python benchmarks/doc_numbers.py --check   # exit 1 when a section differs from the results

A doc quotes a measurement only between `<!-- BEGIN GENERATED: doc_numbers.py NAME -->` and
`<!-- END GENERATED: doc_numbers.py NAME -->`, so each figure has one source, the results
file, and carries the date of its run. `run.py` calls `update()` after a full run.
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
DOCS = HERE.parent / "docs"
_MARKER = re.compile(
    r"(<!-- BEGIN GENERATED: doc_numbers\.py (?P<name>[a-z_]+) -->\n)(?P<body>.*?)(<!-- END GENERATED: doc_numbers\.py (?P=name) -->)",
    re.S,
)


def _load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((RESULTS / f"{name}.json").read_text())
    return data


def _run(data: dict[str, Any]) -> str:
    machine = data.get("machine", {})
    return f"{machine.get('date', 'undated')}, {machine.get('cores', '?')} cores"


def hedging() -> str:
    data = _load("hedging")
    lines = [
        f"Measured (`benchmarks/hedging.py`, run {_run(data)}; loopback sandbox, 5% of jobs 10x slower on each",
        "provider, prices scaled so each normal image costs what it does at real prices;",
        f"{data['requests_per_mode']} requests per mode, {data['concurrency']} at a time; cost per image from the ledger "
        "after every loser finished cancelling):",
        "",
        "| hedge | p50 s | p95 s | p99 s | $/image | hedged | p99 cut | extra cost |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for mode in ("off", "p90", "p75"):
        row = data[mode]
        label = mode if mode == "off" else f"{mode} ({data[f'delay_{mode}_s']:.3f} s)"
        cut = "" if mode == "off" else f"{row['p99_cut_x']:.2f}x"
        extra = "" if mode == "off" else f"{row['extra_cost_pct']:+.0f}%"
        lines.append(
            f"| {label} | {row['p50_s']:.3f} | {row['p95_s']:.3f} | {row['p99_s']:.3f} | "
            f"{row['cost_per_image_usd']:.6f} | {row['hedged_share']:.1%} | {cut} | {extra} |"
        )
    return "\n".join(lines) + "\n"


def failover() -> str:
    data = _load("failover")
    names = {
        "baseline (fal alone)": "none (router overhead)",
        "refused (closed port)": "connection refused (closed port)",
        "503 from replicate": "503",
        "breaker open": "behind an open breaker",
    }
    lines = [
        f"Measured (`benchmarks/failover.py`, run {_run(data)}; loopback sandbox, "
        f"{data['requests_per_scenario']} sequential requests per row, all served by fal; "
        "\"added\" = the request's end-to-end time minus the serving attempt's own time):",
        "",
        "| primary | added p50 | added max | failed try p50 |",
        "|---|---|---|---|",
    ]
    for key, row in data["scenarios"].items():
        failed = f"{row['failed_attempt_p50_ms']:.1f} ms" if row["failed_attempt_p50_ms"] else "–"
        lines.append(
            f"| {names.get(key, key)} | {row['added_p50_ms']:.1f} ms | {row['added_max_ms']:.1f} ms | {failed} |"
        )
    return "\n".join(lines) + "\n"


def lag() -> str:
    data = _load("lag")
    case = data["compute_0.23s"]
    return (
        f"Measured (`benchmarks/lag.py`, run {_run(data)}; sandbox in its own process, {data['image']}, "
        "0.23 s of compute): the time beyond the compute, from create to the decoded image, download "
        f"included, is {case['ours_fal']['p50_ms']:.1f} ms (p50) for fal over SSE and "
        f"{case['ours_replicate']['p50_ms']:.1f} ms for Replicate with `Prefer: wait`; every row is in "
        "[benchmarks](benchmarks.md).\n"
    )


def sandbox_capacity() -> str:
    data = _load("sandbox_throughput")
    quoted = "\n".join(f"    {line}" for line in data["output"])
    return f"Measured (`benchmarks/sandbox_throughput.py {' '.join(data['args'])}`, run {_run(data)}):\n\n{quoted}\n"


def _gpu_row(name: str, steps: int, dtype: str = "bf16") -> dict[str, Any]:
    data = _load(name)
    return next(
        r
        for r in data["results"]
        if r["steps"] == steps and r["batch"] == 1 and r["dtype"] == dtype and not r.get("raw_pipeline")
    )


def local_speed() -> str:
    eager = _gpu_row("local_gpu_h200_eager", 4)
    regional = _gpu_row("local_gpu_h200_compiled_regional", 4)
    full = _gpu_row("local_gpu_h200_compiled_full", 4)
    gpu = _load("local_gpu_h200_eager")["environment"]["gpu"]
    return (
        "\n".join(
            [
                f"| flag | what it does | measured ({gpu}, bf16, 4 steps, 1024x1024; [benchmarks](benchmarks.md), 2026-11-27) |",
                "|---|---|---|",
                f"| none (eager) | | {eager['ms_per_image']:.0f} ms per image |",
                f'| `compile="regional"` (or `True`) | `torch.compile` of the UNet\'s repeated transformer blocks; '
                f"{regional['first_call_s']:.1f} s to compile | {regional['ms_per_image']:.0f} ms: no gain at 4 steps "
                "(eager time there is dominated by kernel-launch overhead, which regional compile leaves in place) |",
                f'| `compile="full"` | whole UNet and VAE decoder compiled with CUDA graphs (`mode="reduce-overhead"`); '
                f"{full['first_call_s']:.0f} s to compile on first use | **{full['ms_per_image']:.0f} ms** end to end, "
                f"{full['pipeline_ms_per_image']:.0f} ms in the pipeline |",
                "| `channels_last=True` | channels-last memory format for UNet and VAE | not measured |",
                "| `fuse_qkv=True` | fused QKV projections (unet variant only) | not measured |",
            ]
        )
        + "\n"
    )


SECTIONS: dict[str, Callable[[], str]] = {
    "hedging": hedging,
    "failover": failover,
    "lag": lag,
    "sandbox_capacity": sandbox_capacity,
    "local_speed": local_speed,
}


def render(text: str) -> str:
    """`text` with every marked section rendered from the results."""

    def fill(match: re.Match[str]) -> str:
        return match.group(1) + SECTIONS[match.group("name")]() + match.group(4)

    return _MARKER.sub(fill, text)


def stale(docs: Path = DOCS) -> list[Path]:
    """Docs whose marked sections differ from what the results give."""
    return [path for path in sorted(docs.glob("*.md")) if render(path.read_text()) != path.read_text()]


def update(docs: Path = DOCS) -> list[Path]:
    """Rewrite the marked sections; returns the files changed."""
    changed = stale(docs)
    for path in changed:
        path.write_text(render(path.read_text()))
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--check", action="store_true", help="report stale sections instead of rewriting them")
    args = parser.parse_args(argv)
    if args.check:
        out_of_date = stale()
        for path in out_of_date:
            print(f"{path}: generated figures differ from benchmarks/results (run benchmarks/doc_numbers.py)")
        return 1 if out_of_date else 0
    for path in update():
        print(f"updated {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
