"""Compression on the paths users take: ``train.py`` itself, one run and a resume, any data.

Every number here comes from ``python train.py ...`` run as a subprocess, with the flags a user
types, followed by ``python -m gan_lightning.commands.evaluate`` on the run's ``last.ckpt``.
For each training seed (``--seeds``):

- ``dense-<D>``: ``train.py --trainer.max_epochs D`` (the dense run that the resume form starts from,
  and the student's teacher at the benchmark's budget);
- ``dense``: that run resumed to ``D + A`` epochs with no plug-in: the dense reference of the same
  total length as every compressed run;
- each ``--variants`` entry in each ``--forms`` entry:
  ``one_run``: ``train.py <variant flags> --trainer.max_epochs D+A`` with the event at epoch D
  (the README's form: the plug-ins on from the start); ``resume``: ``train.py --ckpt_path
  dense-<D>/last.ckpt --trainer.max_epochs D+A <variant flags>`` (plug-ins added to a dense run).

Variants (generator MACs are measured on the final checkpoints, not assumed):
``prune16+kd`` (``--callbacks prune,distill --prune.generator_amount 0.77``: 16.1x fewer MACs on the
default DCGAN), ``prune8+kd`` (0.67: 8.1x), ``prune4`` (``--callbacks prune``, 0.55: 4.6x, no
distillation), ``student8`` (``--callbacks distill --distill.student '{init_args: {width: 10}}'``, a
narrower DCGAN from scratch with default flags: about 9x).

FID, KID, precision, recall and classes covered (``modes``) are the evaluate command's mean and
std over ``--eval_seeds`` latent seeds with ``--num_fake`` generated and ``--num_real`` real samples of
``--real_split``; the per-epoch ``val/fid`` and ``val/modes`` of every run are in the JSON too.
Targets (printed PASS/FAIL, never tuned for): prune+kd at >= 8x and >= 16x fewer generator MACs
ends with FID <= 1.10x the dense run's and as many classes; the student at >= 8x covers as many
classes as its teacher with FID <= 1.25x the teacher's; prune4 without distillation keeps every
class of the dense run. A difference inside the FID std is not a result.

Everything after ``--`` goes to every train.py run, e.g. another dataset:

    python benchmarks/compress_paths.py --seeds 0,1 --out benchmarks/results/compress_paths_digits.json
    python benchmarks/compress_paths.py --dense_epochs 4 --after_epochs 4 --tag fashion \\
        --out benchmarks/results/compress_paths_fashion.json -- \\
        --data datamodules.FashionMNISTDataModule --data.root data --data.train_fraction 0.1333

    # a smoke run (a couple of minutes): tiny epochs, one seed, one variant, one form
    python benchmarks/compress_paths.py --dense_epochs 1 --after_epochs 1 --seeds 0 --variants prune8+kd --forms one_run \\
        --num_fake 200 --eval_seeds 0,1 --work /tmp/paths_smoke --out /tmp/paths_smoke.json -- --trainer.limit_train_batches 5

Runs already finished under ``--work`` are reused (delete the folder to start over), so an
interrupted benchmark continues where it stopped. Runs log to CSV (the logger changes no weight).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

VARIANTS = {
    "prune16+kd": ["--callbacks", "prune,distill", "--prune.generator_amount", "0.77"],
    "prune8+kd": ["--callbacks", "prune,distill", "--prune.generator_amount", "0.67"],
    "prune4": ["--callbacks", "prune", "--prune.generator_amount", "0.55"],
    "student8": ["--callbacks", "distill", "--distill.student", "{init_args: {width: 10}}"],
}
# the same cuts chosen by --prune.criterion group (Torch-Pruning's group magnitude) instead of the default l1
VARIANTS.update({f"{name}:group": [*VARIANTS[name], "--prune.criterion", "group"] for name in ("prune16+kd", "prune8+kd", "prune4")})
FORMS = ("one_run", "resume")


def event_flags(variant: str, epoch: int) -> list[str]:
    """When the variant's event falls: the epoch the dense part ends."""
    return ["--distill.student_epoch" if variant.startswith("student") else "--prune.start_epoch", str(epoch)]


def train(run: Path, args: list[str], log: Path) -> Path:
    """One train.py run into ``run``; returns its last.ckpt (reused when already there)."""
    last = run / "checkpoints" / "last.ckpt"
    if (run / "finished").exists():
        return last
    cmd = [sys.executable, str(REPO / "train.py"), *args, "--trainer.default_root_dir", str(run), "--trainer.logger", "CSVLogger",
           "--trainer.logger.save_dir", str(run), "--trainer.enable_progress_bar", "false", "--checkpoint.dirpath", str(run / "checkpoints")]
    print("$", shlex.join(["python", "train.py", *args]), flush=True)
    start = time.perf_counter()
    with log.open("w") as out:
        proc = subprocess.run(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
    if proc.returncode != 0 or not last.exists():
        sys.exit(f"train.py failed (exit {proc.returncode}); its output is in {log}")
    (run / "finished").write_text(f"{time.perf_counter() - start:.1f}\n")
    return last


def evaluate(ckpt: Path, args, out: Optional[Path] = None) -> dict:
    """The evaluate command on ``ckpt`` with the run's config.yaml; its JSON (default: the run's
    evaluation.json) is reused when it is already there."""
    out = out or ckpt.parent.parent / "evaluation.json"
    if not out.exists():
        config = sorted(ckpt.parent.parent.rglob("config.yaml"))[-1]  # the run's resolved config, beside its logs
        cmd = [sys.executable, "-m", "gan_lightning.commands.evaluate", "--ckpt_path", str(ckpt), "--config", str(config), "--seeds", args.eval_seeds,
               "--num_fake", str(args.num_fake), "--num_real", str(args.num_real), "--real_split", args.real_split, "--out", str(out)]
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(f"evaluate failed on {ckpt}: {proc.stderr[-2000:]}")
    return json.loads(out.read_text())


def trajectory(run: Path) -> list[dict]:
    """val/fid and val/modes after every epoch, from the run's CSV log."""
    per_epoch: dict[int, dict] = {}
    for path in sorted(run.glob("**/metrics.csv")):
        with path.open() as f:
            for row in csv.DictReader(f):
                if row.get("val/fid"):
                    per_epoch[int(float(row["epoch"]))] = {"epoch": int(float(row["epoch"])), "fid": round(float(row["val/fid"]), 2),
                                                          "modes": float(row.get("val/modes") or "nan")}
    return [per_epoch[e] for e in sorted(per_epoch)]


def generator_macs(ckpt: Path) -> int:
    import torch

    from gan_lightning.compress.profiling import network_cost
    from gan_lightning.core.module import GANModule

    module = GANModule.load_from_checkpoint(ckpt, map_location="cpu")
    return network_cost(module.sampling_generator, torch.zeros(2, module.z_dim)).macs


def record(name: str, ckpt: Path, args, dense_macs: Optional[int] = None) -> dict:
    result = evaluate(ckpt, args)
    macs = generator_macs(ckpt)
    m = result["metrics"]
    row = {
        "name": name, "fid": m["fid"]["mean"], "fid_std": m["fid"]["std"], "modes": m["modes"]["mean"], "modes_std": m["modes"]["std"],
        "precision": m["precision"]["mean"], "recall": m["recall"]["mean"], "g_macs": macs,
        "mac_reduction": round(dense_macs / macs, 2) if dense_macs else 1.0, "num_fake": result["num_fake"], "num_real": result["num_real"],
        "split": result["split"], "eval_seeds": result["seeds"], "per_epoch": trajectory(ckpt.parent.parent),
        "seconds": float((ckpt.parent.parent / "finished").read_text()),
    }
    return row


def targets(rows: list[dict], dense: dict, teacher: dict) -> list[dict]:
    """The issue's targets for one seed's rows (each row: one variant in one form)."""
    out = []
    for r in rows:
        if r["variant"].startswith("prune") and "+kd" in r["variant"]:
            ok = r["fid"] <= 1.10 * dense["fid"] and r["modes"] >= dense["modes"]
            goal = f"FID <= 1.10 x dense {dense['fid']:.2f} and modes >= {dense['modes']:g}"
        elif r["variant"].startswith("student"):
            ok = r["fid"] <= 1.25 * teacher["fid"] and r["modes"] >= teacher["modes"]
            goal = f"FID <= 1.25 x teacher {teacher['fid']:.2f} and modes >= {teacher['modes']:g}"
        else:
            ok = r["modes"] >= dense["modes"]
            goal = f"modes >= dense {dense['modes']:g}"
        out.append({"form": r["form"], "variant": r["variant"], "goal": goal, "pass": bool(ok)})
    return out


def print_row(label: str, row: dict, dense: dict) -> None:
    """One finished run, as it lands, beside the dense reference."""
    print(f"  {label} x{row['mac_reduction']:<6} FID {row['fid']:8.2f} ± {row['fid_std']:.2f}  modes {row['modes']:g}"
          f"  (dense {dense['fid']:.2f} ± {dense['fid_std']:.2f}, modes {dense['modes']:g})", flush=True)


def write_json(path: Path, result: dict) -> None:
    """The benchmark's JSON, rewritten after every finished row so an interrupted run keeps them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))


def split_argv(argv: list[str]) -> tuple[list[str], list[str]]:
    """The benchmark's own flags, and those after ``--`` that go to every train.py run."""
    return (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])


def add_evaluation_flags(parser: argparse.ArgumentParser) -> None:
    """The evaluate command's sample counts and seeds, as every path benchmark takes them."""
    parser.add_argument("--eval_seeds", default="0,1,2", help="latent seeds of the evaluate command (FID mean and std)")
    parser.add_argument("--num_fake", type=int, default=5000)
    parser.add_argument("--num_real", type=int, default=2000)
    parser.add_argument("--real_split", default="all", choices=("val", "train", "all"))


def main() -> None:
    argv = sys.argv[1:]
    own, extra = split_argv(argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dense_epochs", type=int, default=10, help="D: epochs before the compression event")
    parser.add_argument("--after_epochs", type=int, default=10, help="A: epochs after it (every run trains D + A in all)")
    parser.add_argument("--seeds", default="0", help="comma-separated training seeds (--seed_everything)")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, of {', '.join(VARIANTS)}")
    parser.add_argument("--forms", default=",".join(FORMS), help="one_run, resume or both")
    add_evaluation_flags(parser)
    parser.add_argument("--tag", default="digits", help="the dataset's name in the table and the work folder")
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "compress_paths")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "compress_paths.json")
    args = parser.parse_args(own)
    variants = [v for v in args.variants.split(",") if v]
    forms = [f for f in args.forms.split(",") if f]
    bad = [v for v in variants if v not in VARIANTS] + [f for f in forms if f not in FORMS]
    if bad:
        parser.error(f"unknown variant/form {', '.join(bad)}; variants: {', '.join(VARIANTS)}; forms: {', '.join(FORMS)}")
    d, total = args.dense_epochs, args.dense_epochs + args.after_epochs
    result = {"command": shlex.join(["python", "benchmarks/compress_paths.py", *argv]), "train_args": extra, "tag": args.tag,
              "dense_epochs": d, "after_epochs": args.after_epochs, "platform": platform.platform(), "seeds": {}}
    wall = time.perf_counter()
    for seed in [int(s) for s in args.seeds.split(",") if s]:
        work = args.work / args.tag / f"seed{seed}"
        work.mkdir(parents=True, exist_ok=True)
        base = [*extra, "--seed_everything", str(seed)]
        dense_d = train(work / f"dense-{d}", [*base, "--trainer.max_epochs", str(d)], work / f"dense-{d}.log")
        dense_ckpt = train(work / "dense", [*base, "--ckpt_path", str(dense_d), "--trainer.max_epochs", str(total)], work / "dense.log")
        dense = record("dense", dense_ckpt, args)
        teacher = record(f"dense-{d}", dense_d, args)
        rows = []
        for form in forms:
            for variant in variants:
                flags = [*VARIANTS[variant], *event_flags(variant, d), "--trainer.max_epochs", str(total)]
                start = ["--ckpt_path", str(dense_d)] if form == "resume" else []
                ckpt = train(work / f"{form}-{variant}", [*base, *start, *flags], work / f"{form}-{variant}.log")
                rows.append({"form": form, "variant": variant, **record(f"{form}-{variant}", ckpt, args, dense["g_macs"])})
                print_row(f"{form:8s} {variant:11s}", rows[-1], dense)
        result["seeds"][str(seed)] = {"dense": dense, "teacher": teacher, "rows": rows, "targets": targets(rows, dense, teacher)}
        write_json(args.out, result)
    result["wall_seconds"] = round(time.perf_counter() - wall, 1)
    write_json(args.out, result)
    print_table(result)
    print(f"wrote {args.out}")


def print_table(result: dict) -> None:
    first = next(iter(result["seeds"].values()), None)
    if first is None:
        return
    d = first["dense"]
    print(f"\n{result['tag']}: {result['dense_epochs']} + {result['after_epochs']} epochs; FID mean ± std over latent seeds"
          f" {d['eval_seeds']}, {d['num_fake']} generated vs {d['num_real']} {d['split']} samples")
    print(f"{'seed':>4} {'form':8s} {'variant':11s} {'MACs':>7} {'FID':>16} {'x dense':>8} {'modes':>6}  target")
    for seed, s in result["seeds"].items():
        for name in ("dense", "teacher"):
            r = s[name]
            print(f"{seed:>4} {'-':8s} {r['name']:11s} {'x1':>7} {r['fid']:8.2f} ± {r['fid_std']:5.2f} {'':>8} {r['modes']:6g}")
        for r, t in zip(s["rows"], s["targets"]):
            print(f"{seed:>4} {r['form']:8s} {r['variant']:11s} {'x' + format(r['mac_reduction'], 'g'):>7} {r['fid']:8.2f} ± {r['fid_std']:5.2f}"
                  f" {r['fid'] / s['dense']['fid']:8.2f} {r['modes']:6g}  {'PASS' if t['pass'] else 'FAIL'}: {t['goal']}")
    if len(result["seeds"]) > 1:
        print("\nmean over training seeds (std across seeds)")
        keys = [(r["form"], r["variant"]) for r in first["rows"]]
        for form, variant in [("-", "dense")] + keys:
            vals = [s["dense"] if variant == "dense" else next(r for r in s["rows"] if (r["form"], r["variant"]) == (form, variant)) for s in result["seeds"].values()]
            fids = [v["fid"] for v in vals]
            print(f"     {form:8s} {variant:11s} FID {statistics.fmean(fids):8.2f} ± {statistics.stdev(fids):5.2f}   modes {[v['modes'] for v in vals]}")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore::DeprecationWarning")
    main()
