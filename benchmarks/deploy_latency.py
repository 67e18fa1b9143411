"""Deployment latency of dense and compressed generators in PyTorch eager, TorchScript and ONNX Runtime.

The default DCGAN generator (configs/default.yaml: z 64, 32x32x1, width 32) and compressed
copies of it, made by the project's own compression functions:

- ``structured``: ``cut_units`` keeps ``1 - --amount`` of every hidden layer's units (the
  latency depends on the shapes only, so which units survive does not matter here);
- ``unstructured``: --sparsity of every weight zeroed by magnitude (dense kernels: no saving
  expected; what a user who prunes unstructured gets in these runtimes);
- ``lowrank``: every factorizable layer at rank ratio --rank_ratio (``plan_ranks``).

Each is run as exported for deployment: PyTorch eager, the TorchScript file and the ONNX file
written by ``gan_lightning.deploy.runtimes.write_verified`` (the export command's code path),
and the same three after ``gan_lightning.deploy.inference.for_inference`` (BatchNorm folded,
the output transposed convolution in sub-pixel form) marked ``+rewrite``. All runs are
interleaved in one process: every round times every (runtime, variant) pair with
--repeats calls each, at batch 1 and 64; a time is the median over rounds, a speedup the median
of per-round ratios against the dense model in the same runtime without the rewrite. Weights
are random with BatchNorm statistics away from 0/1 (latency does not depend on their values).
With a CUDA GPU, eager and TorchScript also run on it (and ONNX Runtime when its CUDA provider
is installed).

Target (issue 13): speedup >= 0.7 x MAC reduction in at least one deployable runtime, at >= 4x
fewer MACs, without slowing the dense model down.

    python benchmarks/deploy_latency.py [--threads 2] [--rounds 15] [--amount 0.55] [--out benchmarks/results/deploy_latency.json]
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from gan_lightning.compress.lowrank import factorize_module, plan_ranks
from gan_lightning.compress.pruning import cut_units, example_input, prunable_groups
from gan_lightning.compress.profiling import network_cost, output_layer
from gan_lightning.compress.selection import units_to_keep, unstructured_masks
from gan_lightning.core.module import GANModule
from gan_lightning.deploy.inference import for_inference
from gan_lightning.deploy.quantize import write_quantized
from gan_lightning.deploy.runtimes import OnnxGenerator, load_runtime, onnx_modules, write_verified
from gan_lightning.networks import DCGANDiscriminator, DCGANGenerator

REPO = Path(__file__).resolve().parent.parent
TARGET = 0.7
RUNTIMES = ("eager", "torchscript", "onnxruntime")
INT8 = "onnxruntime-int8"  # the file export --format onnx --quantize int8 writes (deploy_sizes times it)


def default_generator() -> nn.Module:
    """The generator of configs/default.yaml."""
    return DCGANGenerator(z_dim=64, image_size=32, channels=1, width=32)


def dense_module(make: Callable[[], nn.Module] = default_generator) -> GANModule:
    """A GANModule around ``make()``, untrained, with BatchNorm statistics away from 0/1 (so that
    folding them is not a no-op); latency does not depend on the weights' values."""
    torch.manual_seed(0)
    module = GANModule(make(), DCGANDiscriminator(), ema_decay=None)
    with torch.no_grad():
        for m in module.generator.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.normal_(0, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return module.eval()


def structured_module(amount: float, round_to: int = 1, make: Callable[[], nn.Module] = default_generator) -> GANModule:
    """The cut ``--prune.generator_amount amount --prune.round_to round_to`` makes (every group
    keeps the same fraction of its units, the output layer skipped), by the product's own
    ``units_to_keep`` and ``cut_units``; which units survive does not matter for latency."""
    module = dense_module(make)
    example = example_input(module, "generator")
    groups = prunable_groups(module, "generator", {f"generator.{output_layer(module.generator, example)}"})
    units = {g.producer: torch.zeros(g.units) for g in groups}  # equal scores: the first units are kept
    keep = units_to_keep(units, {g.producer: g.units for g in groups}, amount, "layerwise", round_to)
    module.edits.append("generator", cut_units(module, "generator", keep))
    return module


def macs_of(module: GANModule) -> int:
    return network_cost(module.generator, torch.zeros(1, module.z_dim)).macs


def amount_for(reduction: float, round_to: int = 1, make: Callable[[], nn.Module] = default_generator, steps: int = 14) -> float:
    """The smallest amount (to 2^-steps) whose cut of ``make()`` has at least ``reduction`` x fewer
    MACs, by bisection on measured MACs (the reduction only grows with the amount). At most 0.9:
    a group cut to one unit can no longer be traced (it reads as a one-channel gate)."""
    dense = macs_of(dense_module(make))
    lo, hi = 0.0, 0.9
    if dense / macs_of(structured_module(hi, round_to, make)) < reduction:
        raise ValueError(f"no amount reaches {reduction}x fewer MACs with channels rounded to {round_to}")
    for _ in range(steps):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if dense / macs_of(structured_module(mid, round_to, make)) >= reduction else (mid, hi)
    return hi


def lowrank_module(rank_ratio: float, make: Callable[[], nn.Module] = default_generator) -> GANModule:
    """Every factorizable layer of ``make()`` at rank ratio ``rank_ratio`` (``plan_ranks``)."""
    module = dense_module(make)
    plans = plan_ranks(module.generator, torch.zeros(1, module.z_dim), "ratio", rank_ratio, set())
    for network, edit in factorize_module(module, {f"generator.{p.layer}": p.rank for p in plans if p.factorize}).items():
        module.edits.append(network, edit)
    return module


def compressed(amount: float, sparsity: float, rank_ratio: float, round_to: int) -> dict[str, GANModule]:
    modules = {"dense": dense_module(), "structured": structured_module(amount)}
    if round_to > 1:
        modules[f"structured-r{round_to}"] = structured_module(amount_for(4.0, round_to), round_to)
    unstructured = dense_module()
    weights = {n: p for n, p in unstructured.generator.named_parameters() if p.dim() > 1}
    masks = unstructured_masks({n: p.abs() for n, p in weights.items()}, sparsity, "layerwise")
    with torch.no_grad():
        for n, p in weights.items():
            p.mul_(masks[n])
    modules["unstructured"] = unstructured
    modules["lowrank"] = lowrank_module(rank_ratio)
    return {name: m.eval() for name, m in modules.items()}


def timer(fn: Callable, z: torch.Tensor, repeats: int, cuda: bool) -> float:
    """Median ms of ``repeats`` calls (after one untimed call)."""
    fn(z)
    times = []
    for _ in range(repeats):
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn(z)
        if cuda:
            torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def runtimes(
    generators: dict[str, nn.Module], z_dim: dict[str, int], folder: Path, device: str, ort_providers,
    rewrites: tuple[str, ...] = ("", "+rewrite"), kinds: tuple[str, ...] = RUNTIMES,
) -> dict[tuple[str, str], Callable]:
    """(runtime, variant) -> a callable on latents, for every variant in every runtime of ``kinds``
    (without and with the inference rewrite, as ``rewrites`` lists)."""
    out = {}
    for name, generator in generators.items():
        for rewrite in rewrites:
            net = for_inference(generator) if rewrite else copy.deepcopy(generator).eval()
            variant = name + rewrite
            if "eager" in kinds:
                out[("eager", variant)] = net.to(device)
            if "torchscript" in kinds:
                ts = folder / f"{variant}.ts"
                write_verified(net.cpu(), z_dim[name], ts, "torchscript", {"z_dim": z_dim[name]}, reference=generator)
                out[("torchscript", variant)] = load_runtime(ts, device=device)
                net.to(device)
            if ort_providers is not None and "onnxruntime" in kinds:
                path = folder / f"{variant}.onnx"
                write_verified(net.cpu(), z_dim[name], path, "onnx", {"z_dim": z_dim[name]}, reference=generator)
                net.to(device)
                out[("onnxruntime", variant)] = OnnxGenerator(path, threads=torch.get_num_threads(), providers=ort_providers)
            if ort_providers is not None and INT8 in kinds:
                path = folder / f"{variant}.int8.onnx"
                write_quantized(net.cpu(), z_dim[name], path, "int8", {"z_dim": z_dim[name]}, reference=generator)
                net.to(device)
                out[(INT8, variant)] = OnnxGenerator(path, threads=torch.get_num_threads(), providers=ort_providers)
    return out


def measure(calls, z_dim, batch: int, rounds: int, repeats: int, device: str) -> dict[tuple[str, str], list[float]]:
    cuda = device == "cuda"
    latents = {name: torch.randn(batch, d, generator=torch.Generator().manual_seed(0)) for name, d in z_dim.items()}
    times = {key: [] for key in calls}
    with torch.inference_mode():
        for _ in range(rounds):
            for (runtime, variant), fn in calls.items():
                z = latents[variant.removesuffix("+rewrite")]
                times[(runtime, variant)].append(timer(fn, z if runtime == "onnxruntime" else z.to(device), repeats, cuda))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--amount", type=float, default=0.55, help="structured: fraction of each hidden layer's units removed")
    parser.add_argument("--sparsity", type=float, default=0.8, help="unstructured: fraction of each weight zeroed")
    parser.add_argument("--rank_ratio", type=float, default=0.25, help="lowrank: rank as a fraction of the full rank")
    parser.add_argument("--round_to", type=int, default=16, help="also a structured variant whose channel counts are multiples of this, at >= 4x fewer MACs (1: none)")
    parser.add_argument("--batches", default="1,64")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "deploy_latency.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    modules = compressed(args.amount, args.sparsity, args.rank_ratio, args.round_to)
    generators = {name: m.generator for name, m in modules.items()}
    z_dim = {name: m.z_dim for name, m in modules.items()}
    costs = {name: network_cost(g, torch.zeros(1, z_dim[name])) for name, g in generators.items()}
    try:
        _, ort = onnx_modules()
        ort_version = ort.__version__
    except Exception:  # the export extra is optional: the benchmark then covers eager and TorchScript
        ort = ort_version = None
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    rows = []
    for device in devices:
        providers = None
        if ort is not None:
            wanted = "CUDAExecutionProvider" if device == "cuda" else "CPUExecutionProvider"
            providers = (wanted,) if wanted in ort.get_available_providers() else None
        with tempfile.TemporaryDirectory() as folder:
            calls = runtimes(generators, z_dim, Path(folder), device, providers)
            for batch in [int(b) for b in args.batches.split(",")]:
                repeats = max(3, min(50, 200 // batch))
                times = measure(calls, z_dim, batch, args.rounds, repeats, device)
                for (runtime, variant), series in times.items():
                    rewrite = variant.endswith("+rewrite")
                    base = times[(runtime, "dense+rewrite" if rewrite else "dense")]
                    name = variant.removesuffix("+rewrite")
                    reduction = costs["dense"].macs / costs[name].macs
                    speedup = statistics.median(b / t for b, t in zip(base, series))
                    rows.append({
                        "device": device, "batch": batch, "runtime": runtime, "variant": variant, "macs": costs[name].macs,
                        "mac_reduction": reduction, "params": costs[name].params, "nonzero": costs[name].nonzero,
                        "ms": statistics.median(series), "ms_min": min(series), "ms_max": max(series),
                        "speedup": speedup, "speedup_per_mac_reduction": speedup / reduction,
                        "vs_plain_dense": statistics.median(b / t for b, t in zip(times[(runtime, "dense")], series)),
                    })
    print_table(rows, args)
    verdict = targets(rows)
    for line in verdict["lines"]:
        print(line)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    environment = {"torch": torch.__version__, "onnxruntime": ort_version, "python": platform.python_version(), "machine": platform.processor() or platform.machine(),
                   "cpu_count": torch.get_num_threads(), "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None}
    args.out.write_text(json.dumps({"config": config, "environment": environment, "rows": rows, "targets": verdict}, indent=2) + "\n")
    print(f"wrote {args.out}")


def print_table(rows: list[dict], args) -> None:
    print(f"threads {args.threads}, {args.rounds} interleaved rounds; structured amount {args.amount}, unstructured sparsity {args.sparsity}, lowrank ratio {args.rank_ratio}")
    print("speedup: median of per-round ratios against 'dense' in the same runtime and device with the same rewrite setting;"
          " vs plain: against dense without the rewrite")
    print(f"{'device':<6} {'batch':>5}  {'runtime':<12} {'variant':<28} {'MMACs':>6} {'MAC red':>7} {'ms':>8} {'speedup':>8} {'/MAC red':>9} {'vs plain':>9}")
    for r in rows:
        print(f"{r['device']:<6} {r['batch']:>5}  {r['runtime']:<12} {r['variant']:<28} {r['macs'] / 1e6:>6.2f} {r['mac_reduction']:>6.2f}x {r['ms']:>8.3f}"
              f" {r['speedup']:>7.2f}x {r['speedup_per_mac_reduction']:>9.2f} {r['vs_plain_dense']:>8.2f}x")


def targets(rows: list[dict]) -> dict:
    """Best speedup / MAC reduction of a >= 4x compressed variant per runtime, and whether the
    rewrite slows the dense model (dense+rewrite speedup < 1 by more than the rounds' spread)."""
    lines, best = [], None
    for r in rows:
        if r["mac_reduction"] >= 4 and (best is None or r["speedup_per_mac_reduction"] > best["speedup_per_mac_reduction"]):
            best = r
    if best is None:
        return {"lines": ["no variant has >= 4x fewer MACs: raise --amount"], "pass": False}
    passed = best["speedup_per_mac_reduction"] >= TARGET
    lines.append(
        f"target speedup >= {TARGET} x MAC reduction at >= 4x fewer MACs: {'PASS' if passed else 'FAIL'}: best {best['speedup_per_mac_reduction']:.2f}"
        f" ({best['runtime']}, {best['variant']}, batch {best['batch']}, {best['device']}: {best['speedup']:.2f}x for {best['mac_reduction']:.2f}x fewer MACs)"
    )
    dense_rewrites = [r for r in rows if r["variant"] == "dense+rewrite"]
    slower = [r for r in dense_rewrites if r["vs_plain_dense"] < 0.95]
    lines.append(
        "the rewrite does not slow the dense model (dense+rewrite >= 0.95x dense): "
        + ("PASS" if not slower else "FAIL: " + ", ".join(f"{r['runtime']} batch {r['batch']} {r['vs_plain_dense']:.2f}x" for r in slower))
    )
    return {"lines": lines, "pass": passed and not slower, "best": best}


if __name__ == "__main__":
    main()
