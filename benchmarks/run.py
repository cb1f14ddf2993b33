"""Run every benchmark against the sandbox, print one table of targets, and record the numbers.

    python benchmarks/run.py            # full run: benchmarks/results/*.json and docs/benchmarks.md
    python benchmarks/run.py --quick    # under 3 minutes: benchmarks/results/quick/*.json, docs untouched

Each benchmark is a module here with `run(quick) -> dict`: lag, cpu_cost, concurrency,
import_time (ours), failover and hedging (the router's), serving (the server's added cost), realtime
(sessions), ray_scaling (Ray Serve worker replicas on the tiny CPU pipeline), local_batching
(LocalGenerator's dynamic batching against none, tiny CPU pipeline), gateway (the server in front of
hosted fal with its default limits, and one Router at 10,000 in flight), plus the sandbox's own throughput
script, run as a subprocess. A benchmark that fails is reported as such; the others still run.
Only the section of docs/benchmarks.md between the run.py markers is rewritten.
"""

from __future__ import annotations

import argparse
import importlib
import json
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _common import RESULTS, machine, python

HERE = Path(__file__).resolve().parent
DOC = HERE.parent / "docs" / "benchmarks.md"
BEGIN = "<!-- BEGIN GENERATED: run.py -->"
END = "<!-- END GENERATED: run.py -->"
#: Modules that must import without torch, diffusers, the sandbox's server or matplotlib.
LIGHT_MODULES = (
    "lightning_client",
    "lightning_client.providers.replicate",
    "lightning_client.providers.fal",
    "lightning_client.routing",
)
BENCHMARKS = (
    "lag",
    "cpu_cost",
    "concurrency",
    "failover",
    "hedging",
    "import_time",
    "serving",
    "realtime",
    "ray_scaling",
    "local_batching",
    "gateway",
)


@dataclass
class Target:
    """One row of the table: what was promised, what was measured, and whether it holds."""

    benchmark: str
    target: str
    measured: str
    met: bool | None  # None: informational, or not measured

    @property
    def status(self) -> str:
        return "n/a" if self.met is None else "met" if self.met else "NOT MET"


def _run_module(name: str, quick: bool) -> dict[str, Any]:
    module = importlib.import_module(name)
    runner: Callable[[bool], dict[str, Any]] = module.run
    return runner(quick)


def _sandbox_throughput(quick: bool) -> dict[str, Any]:
    args = ["--jobs", "300", "--seconds", "1"] if quick else ["--jobs", "1000", "--seconds", "3"]
    done = subprocess.run(
        [python(), str(HERE / "sandbox_throughput.py"), *args], capture_output=True, text=True, timeout=400, check=True
    )
    return {"args": args, "output": done.stdout.strip().splitlines()}


def _p50(report: dict[str, Any], compute: str, client: str) -> float:
    value: float = report[compute][client]["p50_ms"]
    return value


def _interval(row: dict[str, Any]) -> str:
    """The 90% bootstrap interval of the p50 ratio, where the run recorded one."""
    vs = row.get("vs_official")
    return f"; 90% interval {vs['ci90'][0]:.2f}-{vs['ci90'][1]:.2f}" if vs else ""


#: The compute time at which fal's lag is judged against fal-client's.
FAL_TARGET_COMPUTE = "compute_0.23s"


def _lag_targets(report: dict[str, Any]) -> list[Target]:
    rows = []
    for compute in (k for k in report if k.startswith("compute_")):
        label = f"lag, {compute.removeprefix('compute_')} compute"
        for ours in ("ours_replicate", "ours_fal"):
            value = _p50(report, compute, ours)
            rows.append(Target(label, f"{ours} p50 <= 15 ms", f"{value:.1f} ms", value <= 15.0))
        fal, official = _p50(report, compute, "ours_fal"), _p50(report, compute, "fal_client")
        # The fal target is at 0.23 s, where fal-client's 0.1 s polls do not line up with the job's
        # end; at 1.0 s and 0.2 s they do, which real jobs do not, so those rows are reported only.
        judged = compute == FAL_TARGET_COMPUTE
        rows.append(
            Target(
                label,
                "ours_fal p50 <= 1/2 fal-client's"
                if judged
                else "ours_fal p50 vs fal-client's (polls aligned), reference",
                f"{fal:.1f} vs {official:.1f} ms ({fal / official:.2f}x{_interval(report[compute]['ours_fal'])})",
                fal <= official / 2 if judged else None,
            )
        )
        rep, official = _p50(report, compute, "ours_replicate"), _p50(report, compute, "replicate_python")
        rows.append(
            Target(
                label,
                "ours_replicate p50 <= replicate-python's",
                f"{rep:.1f} vs {official:.1f} ms ({rep / official:.2f}x{_interval(report[compute]['ours_replicate'])})",
                rep <= official,
            )
        )
        raw = _p50(report, compute, "raw_httpx_replicate"), _p50(report, compute, "raw_httpx_fal")
        rows.append(
            Target(label, "raw httpx p50 (replicate / fal), reference", f"{raw[0]:.1f} / {raw[1]:.1f} ms", None)
        )
    return rows


def _cpu_targets(report: dict[str, Any]) -> list[Target]:
    target = report.get("target_ratio", 1.2)
    rows = [
        Target(
            "cpu per request",
            f"{provider}: ours <= {target:g}x raw httpx",
            f"{row['ours_cpu_ms_per_request']:.2f} vs {row['raw_httpx_cpu_ms_per_request']:.2f} ms ({row['ratio']:.2f}x)",
            row["ratio"] <= target,
        )
        for provider, row in ((p, report[p]) for p in ("replicate", "fal"))
    ]
    if "ours_also" in report:
        rows.append(Target("cpu per request", "what ours does that the raw loop does not", report["ours_also"], None))
    return rows


def _concurrency_targets(report: dict[str, Any]) -> list[Target]:
    label = f"concurrency, {report['requests']} requests"
    clients: dict[str, dict[str, Any]] = report["clients"]
    rows = []
    for name, figures in clients.items():
        if "error" in figures:
            rows.append(Target(f"{label}, {name}", "runs", figures["error"][:120], False))
            continue
        rows.append(
            Target(
                f"{label}, {name}",
                "all succeed; wall, client CPU, peak RSS",
                f"{figures['succeeded']}/{figures['requests']}; {figures['wall_s']:.2f} s, "
                f"{figures['client_cpu_s']:.1f} s ({figures['client_cpu_ms_per_request']:.1f} ms/request), "
                f"{figures['peak_rss_mb']:.0f} MiB",
                figures["succeeded"] == figures["requests"],
            )
        )
    for name, ratio in report["ratios"].items():
        for key, what in (("wall_vs_best_official", "wall time"), ("cpu_vs_best_official", "client CPU")):
            rows.append(
                Target(
                    f"{label}, {name}",
                    f"{what} <= 0.8x the better official async client",
                    f"{ratio[key]:.2f}x",
                    ratio[key] <= 0.8,
                )
            )
    return rows


def _failover_targets(report: dict[str, Any]) -> list[Target]:
    scenarios = report["scenarios"]
    baseline = scenarios["baseline (fal alone)"]["added_p50_ms"]
    rows = [
        Target(
            "failover",
            f"{name}: added p50 <= 20 ms",
            f"{scenarios[name]['added_p50_ms']:.1f} ms",
            scenarios[name]["added_p50_ms"] <= 20.0,
        )
        for name in ("refused (closed port)", "503 from replicate")
    ]
    opened = scenarios["breaker open"]["added_p50_ms"]
    rows.append(
        Target(
            "failover",
            "breaker open: added ~0 (within 2 ms of baseline)",
            f"{opened:.2f} vs {baseline:.2f} ms",
            opened - baseline <= 2.0,
        )
    )
    return rows


def _hedging_targets(report: dict[str, Any]) -> list[Target]:
    rows = []
    off = report["off"]
    for mode in (k for k in ("p90", "p75") if k in report):
        row = report[mode]
        rows.append(
            Target(
                f"hedging ({mode})",
                "p99 cut >= 3x for <= 10% extra cost per image",
                f"p99 {off['p99_s']:.2f} -> {row['p99_s']:.2f} s ({row['p99_cut_x']:.2f}x), "
                f"cost {row['extra_cost_pct']:+.1f}%",
                row["p99_cut_x"] >= 3.0 and row["extra_cost_pct"] <= 10.0,
            )
        )
    return rows


def _import_targets(report: dict[str, Any]) -> list[Target]:
    rows = []
    for module, row in report["modules"].items():
        ours = module.startswith("lightning_client")
        rows.append(
            Target(
                "import time",
                module
                + (
                    ": no torch/diffusers/server imports"
                    if module in LIGHT_MODULES
                    else " (informational)"
                    if ours
                    else " (reference)"
                ),
                f"{row['median_ms']:.0f} ms"
                + (f"; heavy: {', '.join(row['heavy_imports'])}" if row["heavy_imports"] else ""),
                (not row["heavy_imports"]) if module in LIGHT_MODULES else None,
            )
        )
    return rows


def _serving_targets(report: dict[str, Any]) -> list[Target]:
    label = f"server, {report['size']}"
    added = report["added_p50_ms"]
    return [
        Target(
            label,
            f"added p50 <= {report['target_added_p50_ms']:g} ms vs in-process",
            f"{report['via_server']['p50_ms']:.2f} vs {report['in_process']['p50_ms']:.2f} ms ({added:+.2f} ms; "
            f"paired median {report['added_median_paired_ms']:+.2f} ms)",
            added <= report["target_added_p50_ms"],
        ),
        Target(
            label,
            "added CPU per request (client + server), informational",
            f"{report['via_server_cpu_ms_per_request']:.2f} vs {report['in_process_cpu_ms_per_request']:.2f} ms "
            f"(+{report['added_cpu_ms_per_request']:.2f} ms)",
            None,
        ),
    ]


def _realtime_targets(report: dict[str, Any]) -> list[Target]:
    lag, latest, local = report["lag"], report["latest_wins"], report["local"]
    rt, queue = lag["realtime"]["p50_ms"], lag["queue"]["p50_ms"]
    requests = lag["http_requests_per_frame"]
    return [
        Target(
            f"realtime frame lag, {lag['compute_s']} s compute",
            "fal realtime socket p50 <= the queue path's",
            f"{rt:.1f} vs {queue:.1f} ms ({lag['ratio_p50']:.2f}x)",
            rt <= queue,
        ),
        Target(
            "realtime round trips",
            "HTTP requests per frame: socket 0 (queue path, reference)",
            f"{requests['realtime']:g} vs {requests['queue']:g}",
            requests["realtime"] == 0,
        ),
        Target(
            "realtime latest wins",
            "20 sends 30 ms apart: last served last, <= 6 served",
            f"{latest['served']} served, {latest['superseded']} superseded; "
            f"last frame {latest['last_frame_after_last_send_ms']:.0f} ms after the last send",
            latest["last_is_last_send"] and latest["served"] <= 6,
        ),
        Target(
            "realtime local (tiny, CPU)",
            "session fps >= 0.8x direct agenerate",
            f"{local['session_fps']:.2f} vs {local['direct_fps']:.2f} fps ({local['size']})",
            local["ratio"] >= 0.8,
        ),
    ]


def _ray_targets(report: dict[str, Any]) -> list[Target]:
    ips = report["median_images_per_s"]
    return [
        Target(
            f"ray serve, {report['requests']} concurrent requests",
            "2 replicas >= 1.6x the images/s of 1",
            f"{ips['2 replicas']:.2f} vs {ips['1 replica']:.2f} images/s ({report['ratio']:.2f}x)",
            report["ratio"] >= 1.6,
        )
    ]


def _local_batching_targets(report: dict[str, Any]) -> list[Target]:
    label = f"local batching (tiny, CPU, {report['concurrent']} concurrent)"
    return [
        Target(
            label,
            f"images/s with max_batch_size={report['max_batch_size']} vs 1 (reported; the GPU target is >= 2x)",
            f"{report['batched_images_per_s']:.2f} vs {report['unbatched_images_per_s']:.2f} img/s "
            f"({report['ratio']:.2f}x)",
            None,
        ),
        Target(
            label,
            "every batched image has its unbatched bytes",
            "yes" if report["same_bytes"] else "no",
            bool(report["same_bytes"]),
        ),
        Target(
            label,
            "at most 3 pipeline calls",
            f"{report['batched_pipeline_calls_per_round']} calls",
            report["batched_pipeline_calls_per_round"] <= 3,
        ),
    ]


def _gateway_targets(report: dict[str, Any]) -> list[Target]:
    goal = report["targets"]
    vs, lat, scale, clients = report["server_vs_direct"], report["added_latency"], report["scale"], report["clients"]
    small, large = scale["small"], scale["large"]

    def every_one(row: dict[str, Any]) -> bool:
        return sum(row["outcomes"].values()) == row.get("requests", row.get("clients")) and not row.get(
            "unclassified_errors"
        )

    return [
        Target(
            "gateway, 64-way at 0.5 s",
            f"server (default limits) <= {goal['wall_ratio']:g}x direct wall",
            f"{vs['wall_server_s']:.2f} vs {vs['wall_direct_s']:.2f} s ({vs['ratio']:.2f}x)",
            vs["ratio"] <= goal["wall_ratio"],
        ),
        Target(
            "gateway, sequential at 0.5 s",
            f"added p50 <= {goal['added_p50_ms']:g} ms (paired)",
            f"{lat['added_paired_p50_ms']:+.2f} ms (p95 {lat['added_paired_p95_ms']:+.2f} ms)",
            lat["added_paired_p50_ms"] <= goal["added_p50_ms"],
        ),
        Target(
            "gateway, sequential at 0.5 s",
            f"server CPU <= {goal['server_cpu_ms']:g} ms per request",
            f"{lat['server_cpu_ms_per_request']:.2f} ms",
            lat["server_cpu_ms_per_request"] <= goal["server_cpu_ms"],
        ),
        Target(
            f"gateway, {large['requests']:,}-way Router",
            "every request a result or a classified error; nothing left",
            f"{large['outcomes']}; {large['tasks_left']} tasks, {large['fds_left']} fds left; {large['wall_s']:.1f} s",
            every_one(large) and large["tasks_left"] <= 0 and large["fds_left"] <= 0,
        ),
        Target(
            f"gateway, {large['requests']:,}-way Router",
            f"peak RSS <= {goal['peak_rss_mb']:g} MiB",
            f"{large['peak_rss_mb']:.0f} MiB ({small['requests']:,}-way: {small['peak_rss_mb']:.0f} MiB)",
            large["peak_rss_mb"] <= goal["peak_rss_mb"],
        ),
        Target(
            f"gateway, {large['requests']:,}-way Router",
            f"client CPU/request <= {goal['cpu_growth']:g}x the {small['requests']:,}-way",
            f"{large['client_cpu_ms_per_request']:.2f} vs {small['client_cpu_ms_per_request']:.2f} ms "
            f"({scale['cpu_growth']:.2f}x)",
            scale["cpu_growth"] <= goal["cpu_growth"],
        ),
        Target(
            f"gateway, {clients['clients']:,} clients via the server",
            "every client a result or a classified error",
            f"{clients['outcomes']} in {clients['wall_s']:.1f} s",
            every_one(clients),
        ),
    ]


TARGETS: dict[str, Callable[[dict[str, Any]], list[Target]]] = {
    "lag": _lag_targets,
    "cpu_cost": _cpu_targets,
    "concurrency": _concurrency_targets,
    "failover": _failover_targets,
    "hedging": _hedging_targets,
    "import_time": _import_targets,
    "serving": _serving_targets,
    "realtime": _realtime_targets,
    "ray_scaling": _ray_targets,
    "local_batching": _local_batching_targets,
    "gateway": _gateway_targets,
}


def _table(rows: list[Target]) -> str:
    lines = ["| Benchmark | Target | Measured | Status |", "|---|---|---|---|"]
    lines += [f"| {r.benchmark} | {r.target} | {r.measured} | {r.status} |" for r in rows]
    return "\n".join(lines)


def _section(rows: list[Target], info: dict[str, Any], reports: dict[str, Any], seconds: float) -> str:
    m = info
    parts = [
        BEGIN,
        "## Sandbox benchmarks (generated by `python benchmarks/run.py`)",
        "",
        f"Measured {m['date']} on {m['cpu']}, {m['cores']} cores, Python {m['python']}, {m['os']}; "
        f"the whole run took {seconds:.0f} s. Every comparison is side by side in one run against the "
        "loopback sandbox (lag, CPU and concurrency with the sandbox in its own process); images are "
        "256x256 PNG so that downloads do not dominate. The raw numbers are in `benchmarks/results/*.json`.",
        "",
        _table(rows),
        "",
        "How to read it:",
        "",
        "- Lag is end-to-end time minus the provider's compute: create or submit, the wait for completion, "
        "the result and the image download (and, for our generators, validating and decoding the image). "
        "Clients run one request at a time, interleaved, so machine noise hits them alike; absolute "
        "milliseconds move between runs on a shared machine, the ratios much less.",
        "- fal-client polls every 0.1 s. With 1.0 s and 0.2 s of compute its polls line up with the end of "
        "the sandbox's job, which real jobs do not do; the 0.23 s row shows the usual case.",
        "- CPU per request: the sandbox is in another process, so only the client's CPU is counted.",
        "- Concurrency: one sandbox process serves every client; each client runs alone in a fresh process "
        "of its own, so its wall time, CPU seconds and peak RSS are its own. Ours is compared with the better "
        "of the two official async clients (`replicate` `async_run`, `fal_client.AsyncClient.subscribe`), "
        "each downloading its images as ours does.",
        "- Every client asks for its own prompts: the sandbox caches rendered images, and a client repeating "
        "another client's prompts would be answered from that cache. The lag benchmark draws a new random "
        "order of its clients every round (seeded), and the CPU benchmark alternates which side goes first; "
        "each lag ratio comes with a 90% bootstrap interval.",
        "- CPU per request: the raw loop does not validate images; what ours does per request that the raw "
        "loop does not is listed in the table.",
        "- Server: the same `ReplicateGenerator` called in-process and through `lightning-client serve` "
        "(`RemoteGenerator` over HTTP), alternating request by request; client, server and sandbox are three "
        "processes on the two cores, so the added p50 grows with the machine's load while the added CPU "
        "(client plus server) stays near 2.5 ms.",
        "- Ray Serve: two applications on one local Ray cluster (1 and 2 `LocalWorker` replicas, one torch "
        "thread each, tiny CPU pipeline at 128x128, 4 steps) take the same burst in turn; the ratio is of "
        "median images per second. It needs both cores free: other load on the machine pulls it towards 1.",
    ]
    throughput = reports.get("sandbox_throughput")
    if isinstance(throughput, dict) and "output" in throughput:
        parts += [
            "",
            "Sandbox throughput (`benchmarks/sandbox_throughput.py " + " ".join(throughput["args"]) + "`):",
            "",
        ]
        parts += [f"    {line}" for line in throughput["output"]]
    failed = [name for name, report in reports.items() if isinstance(report, dict) and "error" in report]
    if failed:
        parts += ["", "Failed to run: " + ", ".join(failed) + " (see the JSON files)."]
    parts.append(END)
    return "\n".join(parts)


def update_doc(section: str, path: Path = DOC) -> None:
    """Replace the text between the run.py markers (append the section when they are absent)."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        _, tail = rest.split(END, 1)
        text = head + section + tail
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer samples, under 3 minutes; docs untouched")
    parser.add_argument("--only", nargs="*", choices=(*BENCHMARKS, "sandbox_throughput"), help="run only these")
    parser.add_argument("--no-docs", action="store_true", help="do not rewrite docs/benchmarks.md")
    args = parser.parse_args(argv)
    out = RESULTS / "quick" if args.quick else RESULTS
    out.mkdir(parents=True, exist_ok=True)
    info = machine()
    started = time.perf_counter()
    reports: dict[str, Any] = {}
    rows: list[Target] = []
    for name in (*BENCHMARKS, "sandbox_throughput"):
        if args.only and name not in args.only:
            continue
        t0 = time.perf_counter()
        print(f"running {name} ...", file=sys.stderr, flush=True)
        try:
            report = _sandbox_throughput(args.quick) if name == "sandbox_throughput" else _run_module(name, args.quick)
            report["seconds"] = round(time.perf_counter() - t0, 1)
            if name in TARGETS:
                rows += TARGETS[name](report)
        except Exception as exc:  # noqa: BLE001 - one broken benchmark must not hide the others
            traceback.print_exc()
            report = {"error": f"{type(exc).__name__}: {exc}"}
            rows.append(Target(name, "runs", report["error"][:80], False))
        reports[name] = report
        (out / f"{name}.json").write_text(
            json.dumps({"machine": info, "quick": args.quick, **report}, indent=2, default=str) + "\n"
        )
    seconds = time.perf_counter() - started
    width = max(len(r.target) for r in rows) if rows else 10
    label = max(len(r.benchmark) for r in rows) if rows else 10
    print(f"\n{info['cpu']}, {info['cores']} cores, Python {info['python']}, {info['os']}, {info['date']}")
    print(f"{'benchmark':<{label + 2}}{'target':<{width + 2}}{'status':<9}measured")
    for row in rows:
        print(f"{row.benchmark:<{label + 2}}{row.target:<{width + 2}}{row.status:<9}{row.measured}")
    print(f"\ntotal {seconds:.0f} s; results in {out}")
    if not args.quick and not args.no_docs and not args.only:
        update_doc(_section(rows, info, reports, seconds))
        print(f"updated {DOC}")
        import doc_numbers  # the figures other docs quote, from the same results

        for path in doc_numbers.update():
            print(f"updated {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
