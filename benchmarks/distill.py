"""Knowledge distillation (the ``distill`` callback) for compressed DCGAN generators.

One dense default DCGAN on the digits (configs/default.yaml's model, trained here for
--dense_epochs, or loaded with --dense_ckpt) is the teacher. Copies of it are fine-tuned for
the same --finetune_epochs with the same --seeds in each of these ways, at each level of
generator compression (--levels: about 4x, 8x and 16x fewer generator MACs than dense):

- ``dense``: no compression (the reference);
- ``prune-<level>``: ``Prune(granularity="structured", schedule="oneshot", start_epoch=0)``,
  then plain fine-tuning, no distillation;
- ``prune-<level>+kd``: the same plus ``Distill()``, whose teacher is the generator just
  before the cut (handed over by the ``on_architecture_changed`` GAN hook);
- ``lowrank-<level>+kd``: ``LowRankFactorization(epoch=0, rank_mode="ratio")`` plus ``Distill()``;
- ``student-<level>+kd``: ``Distill(student={"init_args": {"width": ...}}, student_epoch=0)``:
  a fresh, narrower ``DCGANGenerator`` replaces the dense one and learns from it, against the
  dense discriminator's copy; ``student-<level>+kd-noadv`` the same with ``gan_weight=0`` (from
  the teacher alone, as Aguinaldo et al. 2019: the remedy for a discriminator that overpowers a
  student trained from scratch);
- ``unstructured80`` and ``unstructured80+kd``: ``Prune(granularity="unstructured",
  generator_amount=0.8)`` without and with distillation (dense MACs: no real saving; the
  table also gives the MACs of the non-zero weights).

Each level's setting (prune amount, rank ratio, student width) is picked before any training
by measuring the MACs of a compressed copy (or of the narrower generator): the smallest
amount, the largest ratio and the widest student with at least the level's MAC reduction.
That depends only on shapes, never on quality. --prune_amounts, --rank_ratios and
--student_widths override them (one value per --levels entry).

For each variant it reports the sampling generator's MACs/sample (gan_lightning.compress.
profiling.network_cost), parameters, MAC reduction, CPU latency at batch 64 (interleaved
medians in one process; speedup vs the fine-tuned dense), and domain FID (mean and std over
the seeds; every model is measured on latent seed 0), precision, recall and classes covered.
For the dense teacher it also reports the FID over latent seeds 0, 1, 2 at the same sample
counts: the measurement noise, against which differences between variants can be judged.

Targets (PASS/FAIL, never tuned for): (a) at >= 8x fewer generator MACs, the best KD
variant's FID <= 1.10x the dense teacher's FID; (b) unstructured80+kd FID <= 1.0x the dense
teacher's; (c) at every level, prune-<level>+kd beats prune-<level> by more than the larger of
their FID stds; (d) the dense teacher's FID std over --noise_seeds is under 3% of its mean.
The teacher's FID is its latent-seed-0 value: the latents every variant is measured on.

    OMP_NUM_THREADS=1 python benchmarks/distill.py [--dense_ckpt runs/gan-lightning/<id>/checkpoints/last.ckpt]
        [--dense_epochs 10] [--finetune_epochs 4] [--seeds 0,1,2] [--levels 4x,8x,16x]
        [--num_fake 10000] [--num_real 2000] [--real_split all] [--noise_seeds 0,1,2,3,4]
        [--out benchmarks/results/distill.json] [--plot benchmarks/results/distill_pareto.png]

    # a smoke run (a minute or two): tiny epochs, one seed, one level
    OMP_NUM_THREADS=1 python benchmarks/distill.py --dense_epochs 1 --finetune_epochs 1 --seeds 0 --levels 8x \\
        --num_fake 200 --num_real 200 --limit_batches 5

The Pareto plot (FID against generator MACs) needs matplotlib, which is not a dependency of
gan-lightning: ``pip install matplotlib`` for it; without it the plot is skipped with a note.
"""

from __future__ import annotations

import argparse
import copy
import inspect
import json
import logging
import math
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import pytorch_lightning as pl
import torch
from torch import nn

try:  # run as a script, `benchmarks/` is sys.path[0]; run as a module from the repository root, it is a namespace package
    from prune_vs_modelpruning import default_module, git_state, make_trainer, mean_std, paired_latency
except ImportError:  # pragma: no cover
    from benchmarks.prune_vs_modelpruning import default_module, git_state, make_trainer, mean_std, paired_latency

from callbacks.distill import Distill, weights_hash
from callbacks.lowrank import LowRankFactorization
from callbacks.prune import Prune
from datamodules.digits import DigitsDataModule
from gan_lightning.compress.lowrank import factorize_module, plan_ranks
from gan_lightning.compress.profiling import network_cost, output_layer
from gan_lightning.compress.pruning import cut_units, example_input, prunable_groups
from gan_lightning.core.module import GANModule
from gan_lightning.quality.evaluation import evaluate_generator
from gan_lightning.quality.features import domain_cache_dir, domain_classifier

LEVELS = {"4x": 4.0, "8x": 8.0, "16x": 16.0}
UNSTRUCTURED_AMOUNT = 0.8
# configs/default.yaml's networks as class paths: what a train.py checkpoint holds in its hparams,
# and what Distill(student=...) completes a student's spec from.
DEFAULT_SPECS = {
    "generator": {"class_path": "gan_lightning.networks.DCGANGenerator", "init_args": {"z_dim": 64, "image_size": 32, "channels": 1, "width": 32}},
    "discriminator": {"class_path": "gan_lightning.networks.DCGANDiscriminator", "init_args": {"image_size": 32, "channels": 1, "width": 32, "norm": "batch"}},
}


# --------------------------------------------------------------------------- the real reference split
def fid_split_kwargs(requested: str) -> tuple[dict, str]:
    """THE ONE PLACE where the real reference split reaches ``evaluate_generator``.

    ``evaluate_generator(..., real_split=...)`` ("val" | "train" | "all") was added alongside
    this script; with an evaluate_generator that does not take it, FID is measured against the
    validation split (its old, fixed behaviour) and the run says so. Returns the keyword
    arguments to pass and the split actually used."""
    if "real_split" in inspect.signature(evaluate_generator).parameters:
        return {"real_split": requested}, requested
    if requested != "val":
        print(f"WARNING: this evaluate_generator has no real_split parameter; --real_split {requested} is ignored and"
              " FID is measured against the validation split", flush=True)
    return {}, "val"


# --------------------------------------------------------------------------- training
class BatchTimer(pl.Callback):
    """Wall time spent inside training batches (compression events happen outside them, at an
    epoch's start): what each variant's training costs per batch, distillation included."""

    def __init__(self) -> None:
        self.seconds, self.batches, self._start = 0.0, 0, 0.0

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.seconds += time.perf_counter() - self._start
        self.batches += 1

    @property
    def ms_per_batch(self) -> float:
        return 1e3 * self.seconds / max(1, self.batches)


# --------------------------------------------------------------------------- the teacher
def dense_module(args, data, root: Path) -> tuple[GANModule, dict]:
    """The dense teacher and its record."""
    if args.dense_ckpt is not None:
        module = GANModule.load_from_checkpoint(args.dense_ckpt, map_location="cpu")
        if module.edits.compressed("generator") or module.edits.compressed("discriminator") or any(n.endswith("_orig") for n, _ in module.named_parameters()):
            sys.exit(f"--dense_ckpt {args.dense_ckpt} holds an already compressed model; pass a dense run's checkpoint")
        module.check_sample_shape(tuple(data.sample_shape))
        if not isinstance(module.hparams.get("generator"), dict):
            sys.exit(f"--dense_ckpt {args.dense_ckpt} holds no generator class path; pass a checkpoint written by train.py")
        return module, {"source": str(args.dense_ckpt), "hparams": {k: str(v) for k, v in module.hparams.items()}}
    pl.seed_everything(0, verbose=False)
    module = default_module()
    start = time.perf_counter()
    timer = BatchTimer()
    trainer = make_trainer(root / "dense", args.dense_epochs, [timer], limit_batches=args.limit_batches)
    trainer.fit(module, datamodule=data)
    seconds = time.perf_counter() - start
    # GANModule built in Python keeps no class paths in its hparams: give it what a train.py
    # checkpoint holds, which Distill(student=...) completes the students' specs from
    for key, spec in DEFAULT_SPECS.items():
        module.hparams[key] = copy.deepcopy(spec)
    return module, {"source": f"trained here, {args.dense_epochs} epochs, seed 0", "seconds": seconds, "ms_per_batch": timer.ms_per_batch}


# --------------------------------------------------------------------------- picking each level's setting
def generator_macs(net: nn.Module, z_dim: int) -> int:
    return network_cost(net, torch.zeros(2, z_dim)).macs


def output_skip(module: GANModule) -> set[str]:
    """The layer the compression callbacks leave alone by default: the generator's output layer."""
    return {output_layer(module.generator, example_input(module, "generator"))}


def pruned_macs(dense: GANModule, amount: float) -> int:
    """MACs of the generator after a layerwise structured cut at ``amount``: each hidden group
    keeps ``max(1, round((1 - amount) * units))`` units (as ``units_to_keep``), which ones does
    not change the count."""
    module = copy.deepcopy(dense)
    skip = {f"generator.{n}" for n in output_skip(module)}
    keep = {g.producer: torch.arange(max(1, round((1 - amount) * g.units))) for g in prunable_groups(module, "generator", skip)}
    module.edits.append("generator", cut_units(module, "generator", keep))
    return generator_macs(module.sampling_generator, module.z_dim)


def lowrank_macs(dense: GANModule, ratio: float) -> int:
    """MACs of the generator factorized as ``LowRankFactorization(rank_mode="ratio", rank_value=ratio)`` would."""
    module = copy.deepcopy(dense)
    plans = plan_ranks(module.generator, example_input(module, "generator"), "ratio", ratio, output_skip(module))
    for network, edit in factorize_module(module, {f"generator.{p.layer}": p.rank for p in plans if p.factorize}).items():
        module.edits.append(network, edit)
    return generator_macs(module.sampling_generator, module.z_dim)


def generator_init_args(dense: GANModule) -> dict:
    """The dense generator's settings: configs/default.yaml's, unless --dense_ckpt's hparams say otherwise."""
    spec = dense.hparams.get("generator") if isinstance(dense.hparams.get("generator"), dict) else DEFAULT_SPECS["generator"]
    return {**DEFAULT_SPECS["generator"]["init_args"], **dict(spec.get("init_args") or {})}


def student_generator(dense: GANModule, width: int) -> nn.Module:
    """The student ``Distill(student={"init_args": {"width": width}})`` would build."""
    distill = Distill(student={"init_args": {"width": width}})
    return distill.replacement.build(distill.replacement.spec(dense), dense)


def first_reaching(candidates: list, reaches: Callable[[object], bool]):
    """The first candidate that ``reaches``, by bisection: candidates are ordered from least to
    most compression, so ``reaches`` is False up to some point and True from it on. The last
    candidate when none does."""
    lo, hi = 0, len(candidates) - 1
    while lo < hi:
        mid = (lo + hi) // 2
        if reaches(candidates[mid]):
            hi = mid
        else:
            lo = mid + 1
    return candidates[lo]


def pick_settings(dense: GANModule, levels: list[str], args) -> dict[str, dict]:
    """Per level: the prune amount, rank ratio and student width, with their measured MACs."""
    dense_macs = generator_macs(dense.sampling_generator, dense.z_dim)
    overrides = {}
    for flag, kind, cast in (("prune_amounts", "prune", float), ("rank_ratios", "lowrank", float), ("student_widths", "student", int)):
        value = getattr(args, flag)
        if value:
            values = [cast(v) for v in value.split(",") if v.strip()]
            if len(values) != len(levels):
                sys.exit(f"--{flag} gives {len(values)} value(s) for {len(levels)} level(s) ({','.join(levels)})")
            overrides[kind] = dict(zip(levels, values))
    amounts = [round(0.30 + 0.0025 * i, 4) for i in range(261)]  # 0.30 .. 0.95, ascending
    ratios = [k / 256 for k in range(256, 0, -1)]  # descending
    widths = list(range(int(generator_init_args(dense)["width"]), 0, -1))  # descending
    plan: dict[str, dict] = {}
    for level in levels:
        factor = LEVELS[level]
        chosen = {}
        for kind, candidates, macs_of in (
            ("prune", amounts, lambda a: pruned_macs(dense, a)),
            ("lowrank", ratios, lambda r: lowrank_macs(dense, r)),
            ("student", widths, lambda w: generator_macs(student_generator(dense, w), dense.z_dim)),
        ):
            if kind in overrides:
                value = overrides[kind][level]
            else:  # the least compression that reaches the level: shapes only, no quality involved
                value = first_reaching(candidates, lambda c, f=macs_of, x=factor: dense_macs / f(c) >= x)
            macs = macs_of(value)
            chosen[kind] = {"value": value, "macs": macs, "mac_reduction": dense_macs / macs, "overridden": kind in overrides}
        plan[level] = chosen
    return plan


# --------------------------------------------------------------------------- the variants
@dataclass
class Variant:
    name: str
    method: str  # dense | prune | lowrank | student | student-noadv | unstructured
    kd: bool
    level: Optional[str]  # None: dense and unstructured
    setting: Optional[float]  # amount, ratio or width
    callbacks: Callable[[], list]
    build: Callable[[GANModule, int], GANModule]  # (dense, seed) -> the module to train, called after seeding
    runs: dict = field(default_factory=lambda: {"fid": [], "metrics": [], "seconds": [], "teacher": []})


def copy_of(dense: GANModule, seed: int) -> GANModule:
    return copy.deepcopy(dense)


def make_variants(levels: list[str], plan: dict[str, dict]) -> list[Variant]:
    def prune(amount: float, granularity: str = "structured") -> Prune:
        return Prune(generator_amount=amount, granularity=granularity, schedule="oneshot", start_epoch=0, metric="none")

    def student(width: int, gan_weight: float) -> Distill:
        # the dense generator is replaced as fine-tuning starts, so it is the teacher
        return Distill(student={"init_args": {"width": width}}, student_epoch=0, gan_weight=gan_weight)

    variants = [Variant("dense", "dense", False, None, None, list, copy_of)]
    for level in levels:
        a, r, w = (plan[level][k]["value"] for k in ("prune", "lowrank", "student"))
        variants += [
            Variant(f"prune-{level}", "prune", False, level, a, lambda a=a: [prune(a)], copy_of),
            Variant(f"prune-{level}+kd", "prune", True, level, a, lambda a=a: [prune(a), Distill()], copy_of),
            Variant(f"lowrank-{level}+kd", "lowrank", True, level, r, lambda r=r: [
                LowRankFactorization(network="generator", rank_mode="ratio", rank_value=r, epoch=0, metric="none"), Distill()], copy_of),
            Variant(f"student-{level}+kd", "student", True, level, w, lambda w=w: [student(w, 1.0)], copy_of),
            Variant(f"student-{level}+kd-noadv", "student-noadv", True, level, w, lambda w=w: [student(w, 0.0)], copy_of),
        ]
    u = UNSTRUCTURED_AMOUNT
    variants += [
        Variant("unstructured80", "unstructured", False, None, u, lambda: [prune(u, "unstructured")], copy_of),
        Variant("unstructured80+kd", "unstructured", True, None, u, lambda: [prune(u, "unstructured"), Distill()], copy_of),
    ]
    return variants


def finetune(variant: Variant, dense: GANModule, data, root: Path, epochs: int, seed: int, limit_batches: Optional[int]) -> tuple[GANModule, dict, Optional[dict]]:
    pl.seed_everything(seed, verbose=False)
    module = variant.build(dense, seed)
    callbacks = variant.callbacks()
    timer = BatchTimer()
    start = time.perf_counter()
    trainer = make_trainer(root, epochs, [*callbacks, timer], limit_batches=limit_batches)
    trainer.fit(module, datamodule=data)
    seconds = {"fit": time.perf_counter() - start, "batches": timer.batches, "ms_per_batch": timer.ms_per_batch}
    # the D/G balance at the end: D's mean outputs on real and generated samples (LSGAN targets 1 and 0)
    seconds["d_real"], seconds["d_fake"] = (float(trainer.callback_metrics.get(k, float("nan"))) for k in ("train/d_real", "train/d_fake"))
    distill = next((cb for cb in callbacks if isinstance(cb, Distill)), None)
    teacher = None
    if distill is not None:
        record = distill.teacher or {}
        teacher = {"adopted": distill.teacher_net is not None, "source": record.get("source"), "sha256": record.get("sha256")}
    return module, seconds, teacher


# --------------------------------------------------------------------------- W&B
def log_to_wandb(args, result: dict, rows: dict[str, dict]) -> str:
    """One run per variant, all in one group (the dashboard compares them by the stable names
    below), and a summary run with the whole table and the Pareto plot. Returns the group."""
    import wandb

    from gan_lightning.commands.wandb_mode import wandb_credentials_available

    mode = "online" if args.wandb == "auto" and wandb_credentials_available() else "offline"
    group = f"distill-benchmark-{result['git']['commit'][:7]}-{time.strftime('%Y%m%d-%H%M%S')}"
    save_dir = Path("runs")
    save_dir.mkdir(exist_ok=True)
    common = {"project": "gan-lightning", "group": group, "mode": mode, "dir": str(save_dir), "job_type": "benchmark"}
    scalars = ("macs", "mac_reduction", "params", "nonzero", "fid_mean", "fid_std", "precision_mean", "recall_mean", "classes_mean", "latency_ms", "speedup")
    for name, r in rows.items():
        run = wandb.init(name=name, config={k: r[k] for k in ("method", "kd", "level", "setting")} | {"args": result["args"]}, **common)
        run.summary.update({f"benchmark/{k}": r[k] for k in scalars})
        run.summary.update({"benchmark/d_real": statistics.fmean(r["d_real"]), "benchmark/d_fake": statistics.fmean(r["d_fake"])})
        run.finish()
    run = wandb.init(name="summary", config={"args": result["args"]}, **common)
    table = wandb.Table(columns=["variant", *scalars], data=[[n, *[r[k] for k in scalars]] for n, r in rows.items()])
    run.log({"benchmark/variants": table, **({"benchmark/pareto": wandb.Image(result["plot"])} if result.get("plot") else {})})
    run.summary.update({"benchmark/teacher_fid": result["teacher"]["fid"], "benchmark/teacher_fid_noise_std": result["teacher"]["noise_std"]})
    run.finish()
    return f"{len(rows) + 1} runs in group {group} ({mode}{', under runs/wandb: wandb sync them' if mode == 'offline' else ''})"


# --------------------------------------------------------------------------- the plot
def pareto_plot(path: Path, variants: list[Variant], rows: dict[str, dict], teacher: dict) -> Optional[str]:
    """FID (mean, std error bars) against generator MACs (log x); returns why it was skipped, or None."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install matplotlib)"
    fig, ax = plt.subplots(figsize=(7.5, 5))
    series = [
        ("prune", False, "prune (structured), no KD", "tab:gray", "o", "--"),
        ("prune", True, "prune (structured) + KD", "tab:blue", "o", "-"),
        ("lowrank", True, "lowrank + KD", "tab:orange", "s", "-"),
        ("student", True, "narrow student + KD", "tab:green", "^", "-"),
        ("student-noadv", True, "narrow student + KD, no adversarial term", "tab:olive", "v", "-"),
    ]
    for method, kd, label, color, marker, style in series:
        pts = sorted((rows[v.name]["macs"], rows[v.name]["fid_mean"], rows[v.name]["fid_std"], v.level) for v in variants if v.method == method and v.kd == kd)
        if pts:
            x, y, e, lv = zip(*pts)
            ax.errorbar(x, y, yerr=e, label=label, color=color, marker=marker, linestyle=style, capsize=3)
            for xi, yi, li in zip(x, y, lv):
                ax.annotate(li, (xi, yi), xytext=(4, 4), textcoords="offset points", fontsize=7, color=color)
    d = rows["dense"]
    ax.errorbar([d["macs"]], [d["fid_mean"]], yerr=[d["fid_std"]], label="dense, fine-tuned", color="black", marker="D", capsize=3, linestyle="none")
    ax.errorbar([d["macs"]], [teacher["fid"]], yerr=[teacher["noise_std"]], label="dense teacher (± latent-seed noise)", color="black", marker="*", markersize=11, capsize=3, linestyle="none")
    for name, marker in (("unstructured80", "x"), ("unstructured80+kd", "P")):
        if name in rows:
            r = rows[name]
            ax.errorbar([r["sparse_macs"]], [r["fid_mean"]], yerr=[r["fid_std"]], label=f"{name} (at its non-zero MACs; runs dense)", color="tab:red", marker=marker, capsize=3, linestyle="none")
    ax.axhline(1.10 * teacher["fid"], color="black", linestyle=":", linewidth=1, label="1.10 x teacher FID")
    ax.set_xscale("log")
    ax.set_yscale("log")  # a failed variant (FID ~1000) would flatten the others
    ax.set_xlabel("generator MACs per sample")
    ax.set_ylabel("domain FID (mean ± std over seeds)")
    ax.set_title("DCGAN on digits: distillation after compression")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return None


# --------------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dense_ckpt", type=Path, default=None, help="a dense train.py run's checkpoint (the teacher); default: train one here")
    parser.add_argument("--dense_epochs", type=int, default=10, help="epochs of the dense training when no --dense_ckpt is given")
    parser.add_argument("--finetune_epochs", type=int, default=4, help="epochs every variant trains (compression happens at the start of epoch 0)")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated fine-tuning seeds; FID is their mean and std")
    parser.add_argument("--levels", default="4x,8x,16x", help=f"comma-separated compression levels, of {', '.join(LEVELS)}")
    parser.add_argument("--prune_amounts", default=None, help="override: structured generator_amount per level (default: picked by measured MACs)")
    parser.add_argument("--rank_ratios", default=None, help="override: lowrank rank_value (ratio) per level (default: picked by measured MACs)")
    parser.add_argument("--student_widths", default=None, help="override: student DCGANGenerator width per level (default: picked by measured MACs)")
    parser.add_argument("--num_fake", type=int, default=10000, help="generated samples per FID (10000: its std over latent seeds under 3%% of the mean)")
    parser.add_argument("--num_real", type=int, default=2000, help="at most the size of the real split (the digits: 1797 in all)")
    parser.add_argument("--real_split", default="all", choices=("val", "train", "all"), help="the real samples FID compares against")
    parser.add_argument("--noise_seeds", default="0,1,2,3,4", help="latent seeds of the dense teacher's measurement-noise FIDs")
    parser.add_argument("--domain_cache_dir", type=Path, default=domain_cache_dir())
    parser.add_argument("--latency_batch", type=int, default=64)
    parser.add_argument("--latency_threads", type=int, default=1, help="torch threads of the latency measurement (1: steadiest on a shared machine)")
    parser.add_argument("--latency_rounds", type=int, default=15, help="interleaved rounds of the latency measurement")
    parser.add_argument("--latency_repeats", type=int, default=10, help="timed passes per network and round")
    parser.add_argument("--train_threads", type=int, default=1, help="torch threads of training")
    parser.add_argument("--limit_batches", type=int, default=None, help="training batches per epoch (smoke runs only; default: all 101)")
    parser.add_argument("--fid_ratio_8x", type=float, default=1.10, help="target (a): best KD FID at >= 8x fewer MACs <= this x teacher FID")
    parser.add_argument("--wandb", choices=["auto", "offline", "off"], default="auto",
                        help="one W&B run per variant in one group, plus a summary run with the table and the plot; auto: online with"
                        " credentials, else offline under runs/wandb")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/distill.json"))
    parser.add_argument("--plot", type=Path, default=Path("benchmarks/results/distill_pareto.png"))
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    noise_seeds = [int(s) for s in args.noise_seeds.split(",") if s.strip()]
    levels = [lv.strip() for lv in args.levels.split(",") if lv.strip()]
    unknown = [lv for lv in levels if lv not in LEVELS]
    if unknown or not levels or not seeds:
        parser.error(f"--levels takes some of {', '.join(LEVELS)} (got {args.levels!r}) and --seeds at least one seed")

    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*isinstance\\(treespec, LeafSpec\\).*")
    logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)
    logging.getLogger("lightning_fabric").setLevel(logging.WARNING)
    torch.set_num_threads(args.train_threads)
    wall = time.perf_counter()
    source = git_state()  # at the start: the code imported above
    load_before = os.getloadavg()
    root = Path(tempfile.mkdtemp(prefix="distill_bench_"))  # Prune/LowRank write their compress/* tables under default_root_dir

    data = DigitsDataModule(image_size=32, batch_size=16)
    data.setup("fit")
    domain_path, domain_record = domain_classifier(data, args.domain_cache_dir, epochs=5)
    split_kwargs, real_split = fid_split_kwargs(args.real_split)

    def evaluate(module: GANModule, seed: int = 0) -> dict[str, float]:
        return evaluate_generator(module, data, "domain", args.num_fake, args.num_real, seed, str(domain_path), **split_kwargs)

    # --- the teacher, and how much its FID moves with the latents alone (the measurement noise)
    print(f"dense teacher: {'loading ' + str(args.dense_ckpt) if args.dense_ckpt else f'training {args.dense_epochs} epochs'} ...", flush=True)
    dense, dense_info = dense_module(args, data, root)
    dense.cpu()
    teacher_sha = weights_hash(dense.sampling_generator)
    noise = {s: evaluate(dense, s) for s in noise_seeds}
    noise_fids = [m["fid"] for m in noise.values()]
    teacher = {
        "fid": noise[0]["fid"] if 0 in noise else evaluate(dense, 0)["fid"],  # latent seed 0: the latents every variant is measured on
        "noise_seeds": noise_seeds, "fid_per_latent_seed": noise_fids,
        "noise_mean": mean_std(noise_fids)[0], "noise_std": mean_std(noise_fids)[1],
        "metrics_per_latent_seed": {str(s): {k: (x if math.isfinite(x) else None) for k, x in m.items()} for s, m in noise.items()},
        "sha256": teacher_sha, "checkpoint": str(args.dense_ckpt) if args.dense_ckpt else None,
    }
    dense_macs = generator_macs(dense.sampling_generator, dense.z_dim)

    # --- each level's setting, from measured MACs only
    plan = pick_settings(dense, levels, args)
    for level in levels:
        p = plan[level]
        print(f"level {level}: prune amount {p['prune']['value']:.4g} ({p['prune']['mac_reduction']:.2f}x fewer MACs), lowrank ratio"
              f" {p['lowrank']['value']:.4g} ({p['lowrank']['mac_reduction']:.2f}x), student width {p['student']['value']}"
              f" ({p['student']['mac_reduction']:.2f}x)", flush=True)

    # --- fine-tuning: every variant with every seed
    variants = make_variants(levels, plan)
    models: dict[str, GANModule] = {}
    for v in variants:
        for seed in seeds:
            print(f"fine-tuning {v.name}, seed {seed}, {args.finetune_epochs} epochs ...", flush=True)
            module, seconds, kd = finetune(v, dense, data, root / v.name / str(seed), args.finetune_epochs, seed, args.limit_batches)
            if kd is not None:
                kd["is_dense_teacher"] = kd["sha256"] == teacher_sha
                if not kd["adopted"] or not kd["is_dense_teacher"]:
                    print(f"WARNING: {v.name}, seed {seed}: the Distill callback {'never got a teacher: no distillation happened' if not kd['adopted'] else 'distilled from a teacher other than the dense model'}", flush=True)
            start = time.perf_counter()
            metrics = evaluate(module, 0)
            seconds["evaluate"] = time.perf_counter() - start
            v.runs["fid"].append(metrics["fid"])
            v.runs["metrics"].append(metrics)
            v.runs["seconds"].append(seconds)
            v.runs["teacher"].append(kd)
            models.setdefault(v.name, module.cpu())  # the first seed's networks are measured for cost and latency

    # --- cost and latency of the networks that sample (and that FID measured)
    z = torch.randn(args.latency_batch, dense.z_dim, generator=torch.Generator().manual_seed(0))
    nets = {v.name: models[v.name].sampling_generator for v in variants}
    rows: dict[str, dict] = {}
    for v in variants:
        net = nets[v.name]
        cost = network_cost(net, z[:2])
        fid_mean, fid_std = mean_std(v.runs["fid"])
        def per(key: str, v: Variant = v) -> list[float]:
            return [m.get(key, float("nan")) for m in v.runs["metrics"]]

        rows[v.name] = {
            "method": v.method, "kd": v.kd, "level": v.level, "setting": v.setting,
            "macs": cost.macs, "sparse_macs": cost.sparse_macs(net), "params": cost.params, "nonzero": cost.nonzero,
            "mac_reduction": dense_macs / cost.macs, "sparse_mac_reduction": dense_macs / cost.sparse_macs(net),
            "fid_mean": fid_mean, "fid_std": fid_std, "fid": v.runs["fid"],
            "precision_mean": mean_std(per("precision"))[0], "recall_mean": mean_std(per("recall"))[0],
            "classes_mean": mean_std(per("modes"))[0], "classes": per("modes"),
            "seconds": [t["fit"] for t in v.runs["seconds"]], "train_ms_per_batch": [t["ms_per_batch"] for t in v.runs["seconds"]],
            "train_batches": [t["batches"] for t in v.runs["seconds"]], "evaluate_seconds": [t["evaluate"] for t in v.runs["seconds"]],
            "d_real": [t["d_real"] for t in v.runs["seconds"]], "d_fake": [t["d_fake"] for t in v.runs["seconds"]],
            "teacher": v.runs["teacher"],
            "shapes": {n: list(p.shape) for n, p in net.named_parameters() if p.dim() > 1},
            "metrics_per_seed": [{k: (x if math.isfinite(x) else None) for k, x in m.items()} for m in v.runs["metrics"]],
        }
    latency_load = os.getloadavg()
    torch.set_num_threads(args.latency_threads)
    threads = torch.get_num_threads()
    print(f"timing {len(nets)} generators at batch {args.latency_batch}, {args.latency_rounds} interleaved rounds, {threads} thread(s) ...", flush=True)
    lat = paired_latency(nets, z, args.latency_rounds, args.latency_repeats)
    torch.set_num_threads(args.train_threads)
    for name, r in rows.items():
        r.update(latency_ms=lat["ms"][name], speedup=lat["speedup"][name])

    # --- targets
    tfid = teacher["fid"]
    checks: dict[str, Optional[bool]] = {}
    details: dict[str, str] = {}
    kd_high = [n for n, r in rows.items() if r["kd"] and r["mac_reduction"] >= 8.0]
    name = f"(a) at >= 8x fewer generator MACs, the best KD variant's FID <= {args.fid_ratio_8x:.2f} x the dense teacher's"
    if kd_high:
        best = min(kd_high, key=lambda n: rows[n]["fid_mean"])
        checks[name] = rows[best]["fid_mean"] <= args.fid_ratio_8x * tfid
        details[name] = (f"best {best} ({rows[best]['mac_reduction']:.2f}x) FID {rows[best]['fid_mean']:.2f} ± {rows[best]['fid_std']:.2f}"
                         f" vs {args.fid_ratio_8x:.2f} x {tfid:.2f} = {args.fid_ratio_8x * tfid:.2f}")
    else:
        checks[name] = None
        details[name] = "no KD variant with >= 8x fewer MACs in this run (--levels)"
    name = "(b) unstructured80+kd FID <= 1.0 x the dense teacher's"
    u = rows["unstructured80+kd"]
    checks[name] = u["fid_mean"] <= tfid
    details[name] = f"{u['fid_mean']:.2f} ± {u['fid_std']:.2f} vs {tfid:.2f} (without KD: {rows['unstructured80']['fid_mean']:.2f} ± {rows['unstructured80']['fid_std']:.2f})"
    name = "(d) the FID's std over latent seeds under 3% of its mean (the measurement can resolve a 10% difference)"
    checks[name] = teacher["noise_std"] < 0.03 * teacher["noise_mean"] if len(noise_seeds) > 1 else None
    details[name] = (f"dense teacher {teacher['noise_mean']:.2f} ± {teacher['noise_std']:.2f} over latent seeds {noise_seeds}"
                     f" ({100 * teacher['noise_std'] / teacher['noise_mean']:.1f}%), {args.num_fake} generated samples")
    for level in levels:
        kd, plain = rows[f"prune-{level}+kd"], rows[f"prune-{level}"]
        margin = max(kd["fid_std"], plain["fid_std"])
        name = f"(c) {level}: prune-{level}+kd beats prune-{level} by more than the larger FID std"
        checks[name] = (plain["fid_mean"] - kd["fid_mean"]) > margin if len(seeds) > 1 else None
        best = min((n for n, r in rows.items() if r["kd"] and r["level"] == level), key=lambda n: rows[n]["fid_mean"])
        details[name] = (f"{kd['fid_mean']:.2f} vs {plain['fid_mean']:.2f}: gain {plain['fid_mean'] - kd['fid_mean']:.2f}, needed > {margin:.2f}"
                         f"{'' if len(seeds) > 1 else ' (one seed: no std, not judged)'}; best KD at {level}: {best} {rows[best]['fid_mean']:.2f}")

    # --- report
    print()
    print(f"dense DCGAN teacher ({dense_info['source']}); fine-tuning {args.finetune_epochs} epochs x seeds {seeds}"
          f"{'' if args.limit_batches is None else f', {args.limit_batches} batches per epoch (SMOKE RUN: numbers mean nothing)'}")
    n_real = int(noise[noise_seeds[0]]["num_real"]) if noise_seeds else args.num_real
    print(f"FID: domain features, {args.num_fake} generated vs {n_real} real samples (split {real_split!r}), latent seed 0, mean/std over"
          f" fine-tuning seeds. Dense teacher: {tfid:.2f} at latent seed 0; over latent seeds {noise_seeds}:"
          f" {teacher['noise_mean']:.2f} ± {teacher['noise_std']:.2f} (measurement noise)")
    print(f"latency: batch {args.latency_batch}, median over {args.latency_rounds} interleaved rounds, {threads} torch thread(s),"
          f" speedup vs the fine-tuned dense (median of per-round ratios); load average {latency_load[0]:.2f} on {os.cpu_count()} cores")
    width = max(len(n) for n in rows) + 2
    print(f"{'variant':<{width}}{'setting':>8}{'MMACs':>7}{'MAC red':>9}{'nzMMACs':>8}{'params':>8}{'nonzero':>8}{'ms':>7}{'speedup':>8}"
          f"{'FID mean':>10}{'std':>7}{'prec':>6}{'recall':>7}{'classes':>8}{'D(real)':>8}{'D(fake)':>8}{'s/run':>7}{'ms/batch':>9}")
    for n, r in rows.items():
        setting = "" if r["setting"] is None else (f"w={r['setting']}" if r["method"].startswith("student") else f"{r['setting']:.4g}")
        print(f"{n:<{width}}{setting:>8}{r['macs'] / 1e6:>7.3f}{r['mac_reduction']:>8.2f}x{r['sparse_macs'] / 1e6:>8.3f}{r['params']:>8}{r['nonzero']:>8}"
              f"{r['latency_ms']:>7.2f}{r['speedup']:>7.2f}x{r['fid_mean']:>10.2f}{r['fid_std']:>7.2f}{r['precision_mean']:>6.3f}"
              f"{r['recall_mean']:>7.3f}{r['classes_mean']:>8.1f}{statistics.fmean(r['d_real']):>8.3f}{statistics.fmean(r['d_fake']):>8.3f}"
              f"{statistics.fmean(r['seconds']):>7.0f}{statistics.fmean(r['train_ms_per_batch']):>9.1f}")
    print("(setting: prune/unstructured generator_amount, lowrank rank ratio, student width; nzMMACs: MACs of the non-zero weights;"
          f" ms: sampling latency; D(real), D(fake): the discriminator's mean outputs at the end of fine-tuning, the D/G balance;"
          f" s/run: one fine-tuning fit; ms/batch: its training batches, {args.train_threads} thread(s))")
    for n, ok in checks.items():
        print(f"{'SKIP' if ok is None else 'PASS' if ok else 'FAIL'}  {n}: {details[n]}")

    result = {
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "versions": {"python": platform.python_version(), "torch": torch.__version__, "pytorch_lightning": pl.__version__}, "git": source,
        "cpu_count": os.cpu_count(), "train_threads": args.train_threads, "latency_threads": threads,
        "load_average_start": load_before, "load_average_at_latency": latency_load,
        "real_split_used": real_split, "real_split_requested": args.real_split,
        "dense": {**dense_info, "macs": dense_macs}, "teacher": teacher,
        "domain_classifier": {"path": str(domain_path), **domain_record},
        "levels": {lv: {"target_reduction": LEVELS[lv], **plan[lv]} for lv in levels},
        "variants": rows,
        "latency_per_round": lat["per_round"],
        "checks": checks, "check_details": details,
    }
    skipped = pareto_plot(args.plot, variants, rows, teacher)
    result["plot"] = None if skipped else str(args.plot)
    result["seconds"] = time.perf_counter() - wall
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    shutil.rmtree(root, ignore_errors=True)
    print(f"plot: {'skipped, ' + skipped if skipped else 'wrote ' + str(args.plot)}")
    if args.wandb != "off":
        print(f"W&B: {log_to_wandb(args, result, rows)}")
    print(f"wrote {args.out} ({result['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
