"""int8 against fp32 in ONNX Runtime: the files ``export --format onnx [--quantize int8|int8-dynamic]`` writes.

Two generators with untrained weights (latency does not depend on their values; BatchNorm
statistics are set away from 0/1 so folding them is not a no-op): the default DCGAN
(configs/default.yaml: z 64, 32x32x1, width 32) and a 64x64 DCGAN at width 64. Each is written
by the export command's own functions (``write_verified`` for fp32, ``write_quantized`` with the
default calibration of 32 batches of 16 latents for int8), plus the fp32 sub-pixel graph that
``--quantize int8`` quantizes (``fp32-subpixel``: BatchNorm folded, every transposed convolution
as Conv2d + PixelShuffle), which separates what the int8 kernels give from what the rewrite costs, and ``int8-convtranspose``
(``write_quantized(..., subpixel=False)``: QDQ around the transposed convolutions, which ONNX
Runtime's CPU provider runs in float), which shows why the export rewrites them.
All files run in ONNX Runtime's CPU provider, interleaved in one process: every round times
every (model, variant) with --repeats calls each (median of the calls), at batch 1 and 64; a time
is the median over rounds, a speedup the median of per-round ratios against ``fp32`` of the same
model and batch.

Target (issue 24): int8 >= 1.8x faster than fp32 at batch 64 on the 64x64 generator.

    python benchmarks/int8_latency.py [--threads N] [--rounds 9] [--out benchmarks/measured/int8_latency.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
from pathlib import Path

import torch
from torch import nn

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run as a script, the project's packages come from the checkout

from benchmarks.deploy_latency import timer  # noqa: E402  (one timing helper for every latency table)
from gan_lightning.compress.profiling import network_cost  # noqa: E402
from gan_lightning.deploy.inference import for_inference  # noqa: E402
from gan_lightning.deploy.quantize import SUBPIXEL_ALL, write_quantized  # noqa: E402
from gan_lightning.deploy.runtimes import OnnxGenerator, onnx_modules, write_verified  # noqa: E402
from gan_lightning.networks import DCGANGenerator  # noqa: E402

TARGET = 1.8
MODELS = {"dcgan32": dict(z_dim=64, image_size=32, channels=1, width=32), "dcgan64-w64": dict(image_size=64, width=64)}


def untrained(init_args: dict) -> nn.Module:
    torch.manual_seed(0)
    generator = DCGANGenerator(**init_args).eval()
    with torch.no_grad():
        for m in generator.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.normal_(0, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return generator.requires_grad_(False)


def write_files(generator: nn.Module, folder: Path, name: str) -> tuple[dict[str, Path], dict[str, dict]]:
    """The five files of one generator, and the quantization records of the int8 ones."""
    z_dim, files, records = generator.z_dim, {}, {}
    files["fp32"] = folder / f"{name}.onnx"
    write_verified(generator, z_dim, files["fp32"], "onnx", {"z_dim": z_dim})
    files["fp32-subpixel"] = folder / f"{name}-subpixel.onnx"
    write_verified(for_inference(generator, subpixel_max_out_channels=SUBPIXEL_ALL), z_dim, files["fp32-subpixel"], "onnx", {"z_dim": z_dim}, reference=generator)
    for mode in ("int8", "int8-dynamic"):
        files[mode] = folder / f"{name}-{mode}.onnx"
        _, records[mode] = write_quantized(generator, z_dim, files[mode], mode, {"z_dim": z_dim})
    files["int8-convtranspose"] = folder / f"{name}-int8-convtranspose.onnx"
    _, records["int8-convtranspose"] = write_quantized(generator, z_dim, files["int8-convtranspose"], "int8", {"z_dim": z_dim}, subpixel=False)
    return files, records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--batches", default="1,64")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "measured" / "int8_latency.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    _, ort = onnx_modules()
    load_before = os.getloadavg()[0]  # other processes on the machine: the noise these numbers carry
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        calls, records, z_dims, sizes, macs = {}, {}, {}, {}, {}
        for name, init_args in MODELS.items():
            generator = untrained(init_args)
            files, records[name] = write_files(generator, Path(folder), name)
            z_dims[name], macs[name] = generator.z_dim, network_cost(generator, torch.zeros(1, generator.z_dim)).macs
            for variant, path in files.items():
                calls[(name, variant)] = OnnxGenerator(path, threads=args.threads)
                sizes[(name, variant)] = path.stat().st_size
        for batch in [int(b) for b in args.batches.split(",")]:
            repeats = max(3, min(50, 200 // batch))
            z = {name: torch.randn(batch, d, generator=torch.Generator().manual_seed(0)) for name, d in z_dims.items()}
            times = {key: [] for key in calls}
            for _ in range(args.rounds):  # interleaved: every file once per round
                for (name, variant), fn in calls.items():
                    times[(name, variant)].append(timer(fn, z[name], repeats, cuda=False))
            for (name, variant), series in times.items():
                base = times[(name, "fp32")]
                agreement = records[name].get(variant, {}).get("agreement_with_fp32")
                rows.append({
                    "model": name, "init_args": MODELS[name], "macs_per_sample": macs[name], "batch": batch, "variant": variant,
                    "bytes": sizes[(name, variant)], "ms": statistics.median(series), "ms_min": min(series), "ms_max": max(series),
                    "speedup_vs_fp32": statistics.median(b / t for b, t in zip(base, series)),
                    "psnr_db_vs_fp32": agreement["psnr_db"] if agreement else None,
                })
    print_table(rows, args)
    print(f"1-minute load average before {load_before:.2f}, after {os.getloadavg()[0]:.2f} (on {os.cpu_count()} CPUs)")
    verdict = target(rows)
    print(verdict["line"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    environment = {"torch": torch.__version__, "onnxruntime": ort.__version__, "python": platform.python_version(),
                   "machine": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(), "threads": args.threads,
                   "load_average_1min": {"before": load_before, "after": os.getloadavg()[0]}}
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    args.out.write_text(json.dumps({"config": config, "environment": environment, "rows": rows, "target": verdict}, indent=2) + "\n")
    print(f"wrote {args.out}")


def print_table(rows: list[dict], args) -> None:
    print(f"ONNX Runtime CPU, {args.threads} threads, {args.rounds} interleaved rounds; speedup: median of per-round ratios against fp32 of the same model and batch")
    print(f"{'model':<12} {'MMACs':>6} {'batch':>5}  {'variant':<18} {'bytes':>11} {'ms':>9} {'speedup':>8} {'PSNR dB':>8}")
    for r in rows:
        psnr = f"{r['psnr_db_vs_fp32']:.1f}" if r["psnr_db_vs_fp32"] is not None else "-"
        print(f"{r['model']:<12} {r['macs_per_sample'] / 1e6:>6.1f} {r['batch']:>5}  {r['variant']:<18} {r['bytes']:>11,} {r['ms']:>9.3f} {r['speedup_vs_fp32']:>7.2f}x {psnr:>8}")


def target(rows: list[dict]) -> dict:
    row = next((r for r in rows if r["model"] == "dcgan64-w64" and r["batch"] == 64 and r["variant"] == "int8"), None)
    if row is None:
        return {"line": "target not measured: run with batch 64", "pass": None}
    passed = row["speedup_vs_fp32"] >= TARGET
    return {"line": f"target int8 >= {TARGET}x faster than fp32 at batch 64 on the 64x64 generator: {'PASS' if passed else 'MISS'}"
                    f" ({row['speedup_vs_fp32']:.2f}x, {row['ms']:.1f} ms)", "pass": passed, "speedup": row["speedup_vs_fp32"]}


if __name__ == "__main__":
    main()
