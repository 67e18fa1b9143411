"""Structured pruning of the SNGAN ResNet generator: ours against Torch-Pruning, same network, same MACs.

The dense generator is trained with the user's command (``train.py --config sngan``, D epochs,
then the same run resumed to D + A epochs as the dense reference). At each MAC reduction of
``--reductions`` (about 2x, 4x, 8x), two decisions of *which* channels go, each followed by
the *same* A epochs of fine-tuning through ``train.py``, with and without ``distill``:

- ``ours``: the user's path, ``train.py --ckpt_path dense-D/last.ckpt --callbacks prune[,distill]
  --prune.generator_amount a`` (the event at epoch D), ``a`` found by bisection so the pruned
  generator has the target MACs;
- ``tp``: Torch-Pruning (``MetaPruner``, ``GroupMagnitudeImportance(p=2)``, its default, the last
  conv ignored) decides on the dense-D generator at the ratio that gives the same MACs as ours
  (bisection on MACs measured after the cut); its choice is executed by the project's surgery and
  recorded as an edit in a copy of dense-D's checkpoint (the generator's Adam moments reset, as a
  cut's new shapes require), which ``train.py --ckpt_path`` then fine-tunes, with ``distill``
  taught by dense-D (``--distill.teacher_ckpt``), exactly as ours is.

With ``--dcgan`` the default DCGAN is trained for the same D + A epochs and evaluated the same
way, so the SNGAN's FID is read next to the default network's.

Torch-Pruning is installed for this benchmark only (``pip install torch-pruning``); it is not a
project dependency. FID, KID, precision/recall and classes covered come from
``python -m gan_lightning.commands.evaluate`` on each final checkpoint (mean and std over
``--eval_seeds``). A difference inside the FID std is not a result. Targets (printed, never tuned
for): at equal MACs ours is at least as good as Torch-Pruning's; at >= 8x with ``distill``, FID
<= 1.10x the dense generator's.

    python benchmarks/residual_pruning.py --seeds 0 --out benchmarks/results/residual_pruning_digits.json
    # smoke: python benchmarks/residual_pruning.py --dense_epochs 1 --after_epochs 1 --reductions 4 --num_fake 200 \\
    #     --eval_seeds 0,1 --work /tmp/rp_smoke --out /tmp/rp_smoke.json -- --trainer.limit_train_batches 4
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compress_paths import REPO, add_evaluation_flags, print_row, record, split_argv, train  # noqa: E402  (the same runner and evaluation as every path benchmark)

from equal_macs import bisect, ours_macs_at, tp_macs_at  # noqa: E402

from gan_lightning.compress.profiling import interleaved_latency_ms  # noqa: E402
from gan_lightning.compress.pruning import cut_units  # noqa: E402
from gan_lightning.core.module import GANModule  # noqa: E402

CONFIG = ["--config", "sngan"]


def _load(ckpt: Path) -> GANModule:
    return GANModule.load_from_checkpoint(ckpt, map_location="cpu").eval()


def _last_conv(generator: torch.nn.Module) -> list[torch.nn.Module]:
    return [[m for m in generator.modules() if isinstance(m, torch.nn.Conv2d)][-1]]  # the image's channels stay


def _z(z_dim: int) -> torch.Tensor:
    return torch.zeros(2, z_dim)


def write_tp_checkpoint(dense_ckpt: Path, keep: dict[str, torch.Tensor], out: Path) -> Path:
    """dense-D's checkpoint with Torch-Pruning's choice cut by the project's surgery and recorded
    as an edit, so train.py resumes it as it resumes any cut run."""
    module = _load(dense_ckpt)
    module.edits.append("generator", cut_units(module, "generator", keep))
    checkpoint = torch.load(dense_ckpt, map_location="cpu", weights_only=False)
    checkpoint["state_dict"] = module.state_dict()
    module.on_save_checkpoint(checkpoint)  # the edit record, beside the state it shapes
    checkpoint["optimizer_states"][0]["state"] = {}  # the generator's moments had the dense shapes
    torch.save(checkpoint, out)
    return out


def main() -> None:
    argv = sys.argv[1:]
    own, extra = split_argv(argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dense_epochs", type=int, default=10)
    parser.add_argument("--after_epochs", type=int, default=5)
    parser.add_argument("--reductions", default="2,4,8", help="generator MAC reductions")
    parser.add_argument("--distill", default="off,on", help="fine-tuning without and/or with --callbacks distill")
    parser.add_argument("--tools", default="ours,tp", help="ours (the default criterion), tp, and ours:<criterion> rows, e.g. ours:group")
    parser.add_argument("--dcgan", action="store_true", help="also train and evaluate the default DCGAN for D + A epochs")
    parser.add_argument("--seeds", default="0")
    add_evaluation_flags(parser)
    parser.add_argument("--latency_batch", type=int, default=64, help="batch of the eager latency, measured interleaved in this process")
    parser.add_argument("--tag", default="digits")
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "residual_pruning")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "residual_pruning.json")
    args = parser.parse_args(own)
    d, total = args.dense_epochs, args.dense_epochs + args.after_epochs
    tools = [t for t in args.tools.split(",") if t]
    result = {"command": shlex.join(["python", "benchmarks/residual_pruning.py", *argv]), "train_args": [*CONFIG, *extra], "tag": args.tag,
              "dense_epochs": d, "after_epochs": args.after_epochs, "platform": platform.platform(), "seeds": {}}
    wall = time.perf_counter()
    for seed in [int(s) for s in args.seeds.split(",") if s]:
        work = args.work / args.tag / f"seed{seed}"
        work.mkdir(parents=True, exist_ok=True)
        base = [*CONFIG, *extra, "--seed_everything", str(seed)]
        dense_d = train(work / f"dense-{d}", [*base, "--trainer.max_epochs", str(d)], work / f"dense-{d}.log")
        dense_ckpt = train(work / "dense", [*base, "--ckpt_path", str(dense_d), "--trainer.max_epochs", str(total)], work / "dense.log")
        dense = record("dense", dense_ckpt, args)
        teacher = record(f"dense-{d}", dense_d, args, dense["g_macs"])
        if args.dcgan:  # the default network, the same epochs and evaluation: what SNGAN is worth here
            dcgan = train(work / "dcgan-dense", [*extra, "--seed_everything", str(seed), "--trainer.max_epochs", str(total)], work / "dcgan-dense.log")
            result.setdefault("dcgan", {})[str(seed)] = record("dcgan-dense", dcgan, args)
        module = _load(dense_d)
        g, z_dim = module.generator, module.z_dim
        rows, generators = [], {}
        for r in [float(x) for x in args.reductions.split(",") if x]:
            target = dense["g_macs"] / r
            amount = bisect(lambda a: ours_macs_at(g, _z(z_dim), a), target)
            ratio = tp_ckpt = None
            if "tp" in tools:  # only runs that compare with it rewrite Torch-Pruning's checkpoint
                ratio = bisect(lambda a: tp_macs_at(g, _z(z_dim), a, _last_conv)[0], ours_macs_at(g, _z(z_dim), amount))
                tp_ckpt = write_tp_checkpoint(dense_d, tp_macs_at(g, _z(z_dim), ratio, _last_conv)[1], work / f"tp-x{r:g}.ckpt")
            for kd in [k for k in args.distill.split(",") if k]:
                distill = kd == "on"
                for tool in tools:
                    name = f"{tool.replace(':', '-')}-x{r:g}{'+kd' if distill else ''}"
                    if tool.startswith("ours"):  # "ours:<criterion>" adds --prune.criterion <criterion> to the user's command
                        criterion = tool.partition(":")[2]
                        flags = ["--ckpt_path", str(dense_d), "--callbacks", "prune,distill" if distill else "prune",
                                 "--prune.generator_amount", str(amount), "--prune.start_epoch", str(d)]
                        flags += ["--prune.criterion", criterion] if criterion else []
                    else:
                        flags = ["--ckpt_path", str(tp_ckpt)]
                        flags += ["--callbacks", "distill", "--distill.teacher_ckpt", str(dense_d)] if distill else []
                    ckpt = train(work / name, [*base, *flags, "--trainer.max_epochs", str(total)], work / f"{name}.log")
                    row = {"tool": tool, "reduction": r, "distill": distill, "amount": ratio if tool == "tp" else amount,
                           **record(name, ckpt, args, dense["g_macs"])}
                    generators[name] = _load(ckpt).sampling_generator
                    row["g_params"] = sum(p.numel() for p in generators[name].parameters())
                    rows.append(row)
                    print_row(f"{name:12s}", row, dense)
        add_latency(dense, dense_ckpt, rows, generators, z_dim, args.latency_batch)
        result["seeds"][str(seed)] = {"dense": dense, "teacher": teacher, "rows": rows, "targets": targets(rows, dense)}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))
    result["wall_seconds"] = round(time.perf_counter() - wall, 1)
    args.out.write_text(json.dumps(result, indent=2))
    print_table(result)
    print(f"wrote {args.out}")


def add_latency(dense: dict, dense_ckpt: Path, rows: list[dict], generators: dict[str, torch.nn.Module], z_dim: int, batch: int) -> None:
    """Eager latency of every final generator and the dense one at ``batch``, interleaved in
    this process (machine noise hits them alike); the speedup is over the dense generator."""
    networks = {"dense": _load(dense_ckpt).sampling_generator, **generators}
    z = torch.randn(batch, z_dim, generator=torch.Generator().manual_seed(0))
    ms = interleaved_latency_ms(networks, z)
    dense.update(latency_ms=ms["dense"], latency_batch=batch, torch_threads=torch.get_num_threads())
    for row in rows:
        row.update(latency_ms=ms[row["name"]], speedup=ms["dense"] / ms[row["name"]])


def targets(rows: list[dict], dense: dict) -> list[dict]:
    """Each goal passes, misses, or is ``None``: the two FIDs differ by less than the larger of
    their stds over evaluation seeds, which is no result either way."""
    out = []
    by = {(r["tool"], r["reduction"], r["distill"]): r for r in rows}
    for (tool, r, kd), row in by.items():
        other = by.get(("tp", r, kd))
        if tool.startswith("ours") and other is not None:
            tie = abs(row["fid"] - other["fid"]) <= max(row["fid_std"], other["fid_std"])
            out.append({"row": row["name"], "goal": f"FID <= Torch-Pruning's {other['fid']:.2f} ± {other['fid_std']:.2f} at equal MACs",
                        "pass": None if tie else row["fid"] < other["fid"]})
        if tool.startswith("ours") and kd and row["mac_reduction"] >= 8:
            out.append({"row": row["name"], "goal": f"FID <= 1.10 x dense {dense['fid']:.2f}", "pass": row["fid"] <= 1.10 * dense["fid"]})
    return out


def print_table(result: dict) -> None:
    for seed, s in result["seeds"].items():
        dense = s["dense"]
        print(f"\nseed {seed}: dense {dense['fid']:.2f} ± {dense['fid_std']:.2f} FID, {dense['modes']:g} classes, {dense['g_macs']:,} MACs"
              f" ({dense['num_fake']} fake vs {dense['num_real']} real, eval seeds {dense['eval_seeds']})")
        dcgan = result.get("dcgan", {}).get(seed)
        if dcgan:
            print(f"default DCGAN, same epochs: {dcgan['fid']:.2f} ± {dcgan['fid_std']:.2f} FID, {dcgan['modes']:g} classes, {dcgan['g_macs']:,} MACs")
        if "latency_ms" in dense:
            print(f"dense eager latency {dense['latency_ms']:.2f} ms at batch {dense['latency_batch']} ({dense['torch_threads']} threads)")
        print(f"{'row':16s} {'MACs':>11s} {'x':>6s} {'params':>8s} {'FID':>16s} {'classes':>7s} {'prec':>5s} {'rec':>5s} {'speedup':>7s}")
        for r in s["rows"]:
            speedup = f"{r['speedup']:.2f}x" if "speedup" in r else ""
            print(f"{r['name']:16s} {r['g_macs']:>11,} {r['mac_reduction']:>6} {r['g_params']:>8,} {r['fid']:>8.2f} ± {r['fid_std']:<5.2f}"
                  f" {r['modes']:>7g} {r['precision']:>5.2f} {r['recall']:>5.2f} {speedup:>7s}")
        for t in s["targets"]:
            print(f"  {({True: 'PASS', False: 'MISS', None: 'TIE '})[t['pass']]} {t['row']}: {t['goal']}")


if __name__ == "__main__":
    main()
