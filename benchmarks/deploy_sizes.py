"""Deployment latency at realistic sizes: dense and compressed generators, batch 1 and 64, in PyTorch eager, TorchScript and ONNX Runtime.

The deployment benchmark (``deploy_latency.py``) measures the default 32x32 DCGAN, where operator
dispatch dominates. This one runs the same measurement on four generators (issue 24, item 1):

- ``dcgan32``: the default DCGAN (``DCGANGenerator()``: z 64, 32x32x1, width 32, 4.5 MMACs/sample);
- ``dcgan64-w64``: a 64x64 DCGAN at width 64 (``DCGANGenerator(image_size=64, width=64)``, 102 MMACs);
- ``resnet32-w32``: the SNGAN ResNet generator of configs/sngan.yaml
  (``ResNetGenerator(z_dim=128, image_size=32, width=32)``, 27 MMACs);
- ``resnet32-w128``: the same at width 128 (420 MMACs).

Weights are untrained (BatchNorm statistics away from 0/1): speed only, no quality is measured.
Variants of each, made by the product's own functions (``deploy_latency``'s helpers):

- ``dense``;
- ``structured-4x``, ``structured-8x``: the cut ``--prune.generator_amount A`` makes (every channel
  group keeps the same fraction of its units, ``units_to_keep`` + ``cut_units``), with A the
  smallest amount giving at least 4x / 8x fewer MACs, found by bisection on measured MACs;
- ``structured-4x-rN``, ``structured-8x-rN``: the same with ``--prune.round_to N`` (every cut
  group keeps a multiple of N channels), A again found by bisection; a rounded cut that keeps
  exactly the channels of the unrounded one is not timed twice (the table says so);
- ``lowrank``: every factorizable layer at rank ratio --rank_ratio (``plan_ranks``, ``factorize_module``).

Each runs as the export command writes it without ``--inference_rewrite``: PyTorch eager, the
TorchScript file and the ONNX file from ``write_verified``, ONNX in ONNX Runtime's CPU provider,
and ``onnxruntime-int8``, the file ``export --quantize int8`` writes (``write_quantized``); its
``vs eager`` column for ``structured-8x`` is the issue's end-to-end factor (speed only: the
weights are untrained, so nothing here says what int8 does to quality).
Everything is interleaved in one process: every round times every (generator, variant, runtime)
with --repeats calls each (median of the calls; default 50 at batch 1, 3 at batch 64); a time is
the median over rounds, a speedup the median of per-round ratios against ``dense`` of the same
generator, runtime and batch. ``P2`` is speedup / MAC reduction (1.0: the physical limit).

Target P2 (issue 24): at >= 4x fewer MACs, speedup >= 0.8x the MAC reduction in ONNX Runtime at
batch 64 on the 64x64 generator.

    python benchmarks/deploy_sizes.py [--threads N] [--rounds 9] [--sizes ...] [--batches 1,64] [--runtimes ...] [--out benchmarks/results/deploy_sizes.json]

The full run (defaults) should take about 15 min on 2 quiet CPU cores: ~1.5 min to build, cut
and export, then 9 rounds of ~1.5 min, two thirds of it at batch 64 and most of that in the
width-128 ResNet (estimated from smoke runs with 1 thread on a busy machine, not measured). A
smoke run (``--rounds 1 --repeats 1 --sizes dcgan64-w64 --runtimes onnxruntime --batches 64``,
which prints the target line) takes under a minute.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch
from torch import nn

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run as a script, the project's packages come from the checkout

from benchmarks.deploy_latency import INT8, RUNTIMES, amount_for, dense_module, lowrank_module, macs_of, measure, runtimes, structured_module  # noqa: E402
from gan_lightning.compress.profiling import network_cost  # noqa: E402
from gan_lightning.compress.surgery import trace  # noqa: E402
from gan_lightning.deploy.runtimes import onnx_modules  # noqa: E402
from gan_lightning.networks import DCGANGenerator, ResNetGenerator  # noqa: E402

TARGET = 0.8
KINDS = (*RUNTIMES, INT8)
TARGET_SIZE = "dcgan64-w64"
SIZES: dict[str, Callable[[], nn.Module]] = {
    "dcgan32": lambda: DCGANGenerator(),
    "dcgan64-w64": lambda: DCGANGenerator(image_size=64, width=64),
    "resnet32-w32": lambda: ResNetGenerator(z_dim=128, image_size=32, width=32),
    "resnet32-w128": lambda: ResNetGenerator(z_dim=128, image_size=32, width=128),
}


def channels(module) -> dict[str, int]:
    """Units of every channel group of the generator (what a rounded and an unrounded cut share or not)."""
    return {g.producer: g.units for g in trace(module.generator, torch.zeros(2, module.z_dim)).groups}


def variants(make: Callable[[], nn.Module], reductions: list[float], round_tos: list[int], rank_ratio: float) -> tuple[dict, dict[str, dict]]:
    """The modules to time, and a record per variant (amount, channels, or which timed variant it equals)."""
    modules = {"dense": dense_module(make)}
    records: dict[str, dict] = {"dense": {"channels": channels(modules["dense"])}}
    for reduction in reductions:
        for round_to in [1, *round_tos]:
            name = f"structured-{reduction:g}x" + (f"-r{round_to}" if round_to > 1 else "")
            try:
                amount = amount_for(reduction, round_to, make)
            except ValueError as exc:
                records[name] = {"unreachable": str(exc)}
                continue
            module = structured_module(amount, round_to, make)
            cut = channels(module)
            same = next((other for other, r in records.items() if r.get("channels") == cut and other in modules), None)
            records[name] = {"amount": amount, "round_to": round_to, "channels": cut, **({"same_as": same} if same else {})}
            if same is None:
                modules[name] = module
    modules["lowrank"] = lowrank_module(rank_ratio, make)
    records["lowrank"] = {"rank_ratio": rank_ratio}
    return modules, records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch and ONNX Runtime threads (default: all cores)")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--repeats", type=int, default=None, help="calls per timing (default: 50 at batch 1, 3 at batch 64)")
    parser.add_argument("--sizes", default=",".join(SIZES), help=f"generators, from {', '.join(SIZES)}")
    parser.add_argument("--batches", default="1,64")
    parser.add_argument("--runtimes", default=",".join(KINDS), help=f"from {', '.join(KINDS)}")
    parser.add_argument("--reductions", default="4,8", help="structured: MAC reductions to cut to")
    parser.add_argument("--round_to", default="8,16", help="structured: also cuts with channels in multiples of these (1: none)")
    parser.add_argument("--rank_ratio", type=float, default=0.25, help="lowrank: rank as a fraction of the full rank")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "deploy_sizes.json")
    args = parser.parse_args()
    sizes, kinds = args.sizes.split(","), tuple(args.runtimes.split(","))
    unknown = [s for s in sizes if s not in SIZES] + [k for k in kinds if k not in KINDS]
    if unknown:
        parser.error(f"unknown --sizes/--runtimes value(s) {', '.join(unknown)}; allowed: sizes {', '.join(SIZES)}, runtimes {', '.join(KINDS)}")
    reductions = [float(r) for r in args.reductions.split(",")]
    round_tos = [r for r in (int(x) for x in args.round_to.split(",")) if r > 1]
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]  # other processes on the machine: the noise these numbers carry
    started = time.perf_counter()
    generators, z_dim, macs, records = {}, {}, {}, {}
    for size in sizes:
        modules, records[size] = variants(SIZES[size], reductions, round_tos, args.rank_ratio)
        for variant, module in modules.items():
            key = f"{size}.{variant}"  # one namespace for every generator: all are timed in one interleaved loop
            generators[key], z_dim[key], macs[key] = module.generator, module.z_dim, macs_of(module)
            records[size][variant]["params"] = network_cost(module.generator, torch.zeros(1, module.z_dim)).params
    try:
        _, ort = onnx_modules()
        ort_version = ort.__version__
    except Exception:  # the export extra is optional: the benchmark then covers eager and TorchScript
        ort = ort_version = None
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        calls = runtimes(generators, z_dim, Path(folder), "cpu", ("CPUExecutionProvider",) if ort is not None else None, rewrites=("",), kinds=kinds)
        prepared = time.perf_counter() - started
        for batch in [int(b) for b in args.batches.split(",")]:
            repeats = args.repeats or max(3, min(50, 200 // batch))
            times = measure(calls, z_dim, batch, args.rounds, repeats, "cpu")
            for (runtime, key), series in times.items():
                size, variant = key.split(".", 1)
                base, eager = times[(runtime, f"{size}.dense")], times.get(("eager", f"{size}.dense"))
                reduction = macs[f"{size}.dense"] / macs[key]
                speedup = statistics.median(b / t for b, t in zip(base, series))
                rows.append({
                    "size": size, "batch": batch, "runtime": runtime, "variant": variant, "macs_per_sample": macs[key],
                    "mac_reduction": reduction, "ms": statistics.median(series), "ms_min": min(series), "ms_max": max(series),
                    "speedup": speedup, "p2": speedup / reduction,
                    "vs_eager_dense": statistics.median(b / t for b, t in zip(eager, series)) if eager else None,
                })
    print_table(rows, records, args)
    verdict = target(rows)
    print(verdict["line"])
    for line in end_to_end(rows):
        print(line)
    elapsed = time.perf_counter() - started
    print(f"{elapsed:.0f} s ({prepared:.0f} s building and exporting); 1-minute load average before {load_before:.2f}, after {os.getloadavg()[0]:.2f} (on {os.cpu_count()} CPUs)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    environment = {"torch": torch.__version__, "onnxruntime": ort_version, "python": platform.python_version(),
                   "machine": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(), "threads": args.threads,
                   "load_average_1min": {"before": load_before, "after": os.getloadavg()[0]}, "seconds": elapsed}
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    args.out.write_text(json.dumps({"config": config, "environment": environment, "weights": "untrained (speed only)",
                                    "variants": records, "rows": rows, "target": verdict}, indent=2) + "\n")
    print(f"wrote {args.out}")


def print_table(rows: list[dict], records: dict[str, dict], args) -> None:
    print(f"untrained weights: speed only. {args.threads} threads, {args.rounds} interleaved rounds; speedup: median of per-round ratios against"
          " dense of the same generator, runtime and batch; P2 = speedup / MAC reduction (1.0: the physical limit); vs eager: against the dense eager model")
    for size, record in records.items():
        for variant, r in record.items():
            if "unreachable" in r:
                print(f"{size} {variant}: not measured, {r['unreachable']}")
            elif "same_as" in r:
                print(f"{size} {variant}: the same channels as {r['same_as']} (amount {r['amount']:.3f}), not timed twice")
    print(f"{'generator':<14} {'batch':>5}  {'runtime':<16} {'variant':<20} {'MMACs':>8} {'MAC red':>7} {'ms':>9} {'speedup':>8} {'P2':>5} {'vs eager':>9}")
    for r in sorted(rows, key=lambda r: (list(records).index(r["size"]), r["batch"], r["runtime"])):
        vs = f"{r['vs_eager_dense']:>8.2f}x" if r["vs_eager_dense"] is not None else f"{'-':>9}"
        print(f"{r['size']:<14} {r['batch']:>5}  {r['runtime']:<16} {r['variant']:<20} {r['macs_per_sample'] / 1e6:>8.2f} {r['mac_reduction']:>6.2f}x"
              f" {r['ms']:>9.3f} {r['speedup']:>7.2f}x {r['p2']:>5.2f} {vs}")


def end_to_end(rows: list[dict]) -> list[str]:
    """The issue's last target, speed only: the 8x structured cut as an int8 ONNX file against the
    dense eager model a training run leaves, per generator at batch 64 (aim: >= 20x)."""
    return [
        f"end to end, {r['size']} batch 64: structured-8x int8 ONNX Runtime {r['vs_eager_dense']:.2f}x faster than dense eager"
        f" ({r['mac_reduction']:.2f}x fewer MACs; aim >= 20x: {'reached' if r['vs_eager_dense'] >= 20 else 'missed'})"
        for r in rows if r["runtime"] == INT8 and r["variant"] == "structured-8x" and r["batch"] == 64 and r["vs_eager_dense"]
    ]


def target(rows: list[dict]) -> dict:
    """P2 on the 64x64 generator in ONNX Runtime at batch 64, over every variant with >= 4x fewer
    MACs: the best one decides (it is the best of several, so biased upward: all are listed)."""
    qualifying = [r for r in rows if r["size"] == TARGET_SIZE and r["runtime"] == "onnxruntime" and r["batch"] == 64 and r["mac_reduction"] >= 4]
    if not qualifying:
        return {"line": f"target P2 not measured: it needs --sizes {TARGET_SIZE} --runtimes onnxruntime --batches 64", "pass": None}
    best = max(qualifying, key=lambda r: r["p2"])
    passed = best["p2"] >= TARGET
    listed = ", ".join(f"{r['variant']} {r['speedup']:.2f}x for {r['mac_reduction']:.2f}x = {r['p2']:.2f}" for r in qualifying)
    return {"line": f"target P2 (>= 4x fewer MACs, speedup >= {TARGET} x MAC reduction, ONNX Runtime, batch 64, {TARGET_SIZE}): {'PASS' if passed else 'MISS'}:"
                    f" best {best['p2']:.2f} ({best['variant']}); all: {listed}", "pass": passed, "best": best}


if __name__ == "__main__":
    main()
