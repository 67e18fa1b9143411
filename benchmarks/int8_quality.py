"""Quality of the int8 generator: FID of ``export --quantize int8`` against the fp32 export, dense and pruned.

For each checkpoint (``--ckpt LABEL=PATH``, repeatable; by default two that it trains itself
through ``train.py``, as ``compress_paths.py`` does: ``dense``, the default DCGAN for
``--dense_epochs`` D epochs, and ``prune8+kd``, that run resumed with ``--callbacks prune,distill
--prune.generator_amount 0.67 --prune.start_epoch D`` to D + ``--after_epochs`` A epochs):

1. ``python -m gan_lightning.commands.export --ckpt_path CKPT --out fp32.onnx`` and the same with
   ``--out int8.onnx --quantize int8`` (default calibration), run as subprocesses, as a user runs them;
2. each file is scored by ``gan_lightning.commands.evaluate.evaluate_file`` (what ``export
   --measure_fid`` records in the card): the product's runtime loader (ONNX Runtime's CPU
   provider) makes ``--num_fake`` samples per latent seed of ``--eval_seeds`` from the same seeded
   draw as ``generate`` and ``evaluate`` (so seed s gives the same latents everywhere), scored with
   the run's own metric settings and domain classifier against ``--num_real`` samples of
   ``--real_split``: FID, KID, precision/recall and classes covered (``modes``), mean and std over
   the seeds;
3. the evaluate command itself runs on the checkpoint with the same seeds and counts (row
   ``ckpt``), so the fp32 file's FID can be checked against it: the two see the same latents and
   differ only by ONNX Runtime's float reordering (about 1e-6 per pixel).

Target (issue 24): int8 FID <= 1.05x the fp32 file's FID, per checkpoint. A difference inside
the FID std over seeds is not a result; the table prints both.

    python benchmarks/int8_quality.py                                   # trains dense and prune8+kd, then scores
    python benchmarks/int8_quality.py --ckpt dense=runs/.../last.ckpt --ckpt pruned=runs/.../last.ckpt
    python benchmarks/int8_quality.py --work runs/compress_paths       # reuse compress_paths.py's dense-D and resume-prune8+kd runs

    # a smoke run (a few minutes on 2 cores)
    python benchmarks/int8_quality.py --dense_epochs 1 --after_epochs 1 --num_fake 300 --num_real 300 --eval_seeds 0,1 \\
        --work /tmp/int8q_smoke --out /tmp/int8q_smoke.json -- --trainer.limit_train_batches 5

Everything after ``--`` goes to every train.py run. Runs finished under ``--work`` are reused
(same folder names and flags as compress_paths.py); exports are written again every time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run as a script, the project's packages come from the checkout

import torch  # noqa: E402

from benchmarks.compress_paths import (  # noqa: E402
    VARIANTS, add_evaluation_flags, evaluate, event_flags, generator_macs, split_argv, train, write_json,
)
from gan_lightning.commands.evaluate import evaluate_file  # noqa: E402
from gan_lightning.deploy.card import card_path  # noqa: E402

TARGET = 1.05  # issue 24: int8 FID <= 1.05x fp32
PRUNED = "prune8+kd"
FORMATS = {"fp32": [], "int8": ["--quantize", "int8"]}


def run_config_file(ckpt: Path) -> Path:
    """The run's resolved config.yaml, found as compress_paths.evaluate finds it (beside the logs)."""
    found = sorted(ckpt.parent.parent.rglob("config.yaml"))
    if not found:
        sys.exit(f"--ckpt {ckpt}: no config.yaml under {ckpt.parent.parent}; pass checkpoints written by train.py in their run folder")
    return found[-1]


def export(ckpt: Path, out: Path, fmt: str) -> dict:
    """The export command as a subprocess; returns the model card it wrote."""
    cmd = ["-m", "gan_lightning.commands.export", "--ckpt_path", str(ckpt), "--out", str(out), "--overwrite", *FORMATS[fmt]]
    print("$", shlex.join(["python", *cmd]), flush=True)
    proc = subprocess.run([sys.executable, *cmd], cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"export failed on {ckpt} ({fmt}): {proc.stderr[-2000:]}")
    return json.loads(card_path(out).read_text())


def row(fmt: str, result: dict, seconds: float, file: Path | None = None, card: dict | None = None) -> dict:
    m = result["metrics"]
    out = {
        "format": fmt, "fid": m["fid"]["mean"], "fid_std": m["fid"]["std"], "modes": m["modes"]["mean"] if "modes" in m else None,
        "modes_std": m["modes"]["std"] if "modes" in m else None, "kid": m["kid"]["mean"], "precision": m["precision"]["mean"],
        "recall": m["recall"]["mean"], "per_seed_fid": {s: v["fid"] for s, v in result["per_seed"].items()},
        "num_fake": result["num_fake"], "num_real": result["num_real"], "split": result["split"], "features": result["features"],
        "eval_seeds": result["seeds"], "seconds": round(seconds, 1),
    }
    if file is not None:
        q = card.get("quantization") or {}
        out.update(file=str(file), bytes=file.stat().st_size, sha256=card["sha256"],
                   agreement_psnr_db=q["agreement_with_fp32"]["psnr_db"] if q else None, calibration=q.get("calibration"))
    return out


def measure(label: str, ckpt: Path, args, work: Path, seeds: list[int], dense_macs: int) -> dict:
    """The checkpoint's evaluate row, and one row per exported format."""
    folder = work / "exports" / label
    folder.mkdir(parents=True, exist_ok=True)
    config = run_config_file(ckpt)
    start = time.perf_counter()
    tag = f"evaluate-{args.num_fake}x{args.eval_seeds.replace(',', '_')}-{args.num_real}{args.real_split}.json"
    rows = {"ckpt": row("ckpt", evaluate(ckpt, args, folder / tag), time.perf_counter() - start)}
    for fmt in FORMATS:
        card = export(ckpt, folder / f"{fmt}.onnx", fmt)
        start = time.perf_counter()
        scored = evaluate_file(folder / f"{fmt}.onnx", ckpt, seeds, config, num_fake=args.num_fake, num_real=args.num_real, real_split=args.real_split)
        rows[fmt] = row(fmt, scored, time.perf_counter() - start, folder / f"{fmt}.onnx", card)
        print_row(label, rows[fmt])
    macs = generator_macs(ckpt)
    fp32, int8 = rows["fp32"], rows["int8"]
    ratio = int8["fid"] / fp32["fid"]
    return {
        "label": label, "checkpoint": str(ckpt), "config": str(config), "g_macs": macs,
        "mac_reduction": round(dense_macs / macs, 2), "rows": rows,
        "int8_over_fp32": round(ratio, 4),
        "fp32_file_minus_ckpt": {s: fp32["per_seed_fid"][s] - rows["ckpt"]["per_seed_fid"][s] for s in fp32["per_seed_fid"]},
        "target": {"goal": f"int8 FID <= {TARGET}x fp32 FID", "pass": bool(ratio <= TARGET),
                   "inside_std": bool(abs(int8["fid"] - fp32["fid"]) <= max(int8["fid_std"], fp32["fid_std"]))},
    }


def print_row(label: str, r: dict) -> None:
    modes = "" if r["modes"] is None else f"  modes {r['modes']:g}"
    print(f"  {label:10s} {r['format']:5s} FID {r['fid']:8.3f} ± {r['fid_std']:.3f}{modes}", flush=True)


def print_table(result: dict) -> None:
    first = next(iter(result["checkpoints"]), None)
    if first is None:
        return
    r0 = first["rows"]["fp32"]
    print(f"\nFID mean ± std over latent seeds {r0['eval_seeds']}, {r0['num_fake']} generated vs {r0['num_real']} {r0['split']} samples,"
          f" {r0['features']} features; ckpt: the evaluate command on the checkpoint")
    print(f"{'checkpoint':12s} {'MACs':>6} {'row':5s} {'FID':>18} {'modes':>6} {'x fp32':>7} {'PSNR dB':>8}  target")
    for c in result["checkpoints"]:
        reduction = f"x{c['mac_reduction']:g}"
        for fmt, r in c["rows"].items():
            x = f"{r['fid'] / c['rows']['fp32']['fid']:7.3f}" if fmt != "ckpt" else f"{'':>7}"
            psnr = f"{r['agreement_psnr_db']:8.1f}" if r.get("agreement_psnr_db") else f"{'':>8}"
            modes = f"{r['modes']:6g}" if r["modes"] is not None else f"{'':>6}"
            t = c["target"]
            verdict = f"  {'PASS' if t['pass'] else 'FAIL'}: {t['goal']}{' (difference inside the std)' if t['inside_std'] else ''}" if fmt == "int8" else ""
            print(f"{c['label']:12s} {reduction:>6} {fmt:5s} {r['fid']:9.3f} ± {r['fid_std']:6.3f} {modes} {x} {psnr}{verdict}")
        worst = max(abs(v) for v in c["fp32_file_minus_ckpt"].values())
        print(f"{'':12s} fp32 file - ckpt FID, largest over seeds: {worst:.2g}")


def parse_ckpts(values: list[str], parser: argparse.ArgumentParser) -> list[tuple[str, Path]]:
    out = []
    for value in values:
        label, sep, path = value.partition("=")
        if not sep or not label or not path:
            parser.error(f"--ckpt takes LABEL=PATH (e.g. dense=runs/.../last.ckpt), got {value!r}")
        if not Path(path).is_file():
            parser.error(f"--ckpt {value}: {path} does not exist")
        out.append((label, Path(path)))
    if len({label for label, _ in out}) < len(out):
        parser.error("--ckpt labels must differ")
    return out


def main() -> None:
    argv = sys.argv[1:]
    own, extra = split_argv(argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", action="append", default=[], metavar="LABEL=PATH",
                        help="a train.py checkpoint to score (repeatable); default: train dense and prune8+kd here")
    parser.add_argument("--dense_epochs", type=int, default=10, help="D: epochs of the dense run")
    parser.add_argument("--after_epochs", type=int, default=10, help="A: epochs of the pruned+distilled resume after D")
    parser.add_argument("--seed", type=int, default=0, help="training seed (--seed_everything)")
    add_evaluation_flags(parser)
    parser.set_defaults(num_fake=10000)  # issue 24: FID of 10,000 samples
    parser.add_argument("--tag", default="digits", help="the dataset's name in the work folder")
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "int8_quality")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "int8_quality.json")
    args = parser.parse_args(own)
    ckpts = parse_ckpts(args.ckpt, parser)
    seeds = [int(s) for s in args.eval_seeds.split(",") if s.strip()]
    work = args.work / args.tag / f"seed{args.seed}"
    work.mkdir(parents=True, exist_ok=True)
    result = {"command": shlex.join(["python", "benchmarks/int8_quality.py", *argv]), "train_args": extra, "platform": platform.platform(),
              "torch_threads": torch.get_num_threads(), "target": f"int8 FID <= {TARGET}x fp32", "checkpoints": []}
    wall = time.perf_counter()
    if not ckpts:
        d, total = args.dense_epochs, args.dense_epochs + args.after_epochs
        base = [*extra, "--seed_everything", str(args.seed)]
        dense = train(work / f"dense-{d}", [*base, "--trainer.max_epochs", str(d)], work / f"dense-{d}.log")
        flags = [*VARIANTS[PRUNED], *event_flags(PRUNED, d), "--trainer.max_epochs", str(total)]
        pruned = train(work / f"resume-{PRUNED}", [*base, "--ckpt_path", str(dense), *flags], work / f"resume-{PRUNED}.log")
        ckpts = [(f"dense-{d}", dense), (PRUNED, pruned)]
        result.update(dense_epochs=d, after_epochs=args.after_epochs, seed=args.seed)
    dense_macs = generator_macs(ckpts[0][1])  # the first checkpoint is the MAC reference
    for label, ckpt in ckpts:
        result["checkpoints"].append(measure(label, ckpt, args, work, seeds, dense_macs))
        write_json(args.out, result)
    result["wall_seconds"] = round(time.perf_counter() - wall, 1)
    write_json(args.out, result)
    print_table(result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore::DeprecationWarning")
    main()
