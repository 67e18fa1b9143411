"""The ``prune`` callback against Lightning's ModelPruning on the same dense DCGAN.

One dense default DCGAN on the digits (trained here, or loaded with --dense_ckpt) is copied
and fine-tuned for the same epochs, with the same seeds and batches, in each of these ways:

- ``dense``: no pruning (the reference);
- ``prune-structured-<criterion>``: ``Prune(granularity="structured", schedule="oneshot",
  start_epoch=0, criterion=...)``, channels physically removed; one run per --structured_criteria
  (``l1``, the callback's default, and ``taylor``, which scores channels on real samples);
- ``modelpruning``: ``pytorch_lightning.callbacks.ModelPruning("l1_unstructured")`` on the same
  generator layers, removing as many generator weights as the structured run did, once, at the
  start of epoch 0 (see :class:`ModelPruningAtEpochStart` for the two changes fairness needs);
- ``prune-unstructured``: ``Prune(granularity="unstructured")`` at ModelPruning's amount.

For each it reports the sampling generator's per-sample MACs, parameters and non-zero
parameters, CPU latency on one batch of latents (interleaved medians, at all the machine's
cores and at 1 thread), and domain FID. Then it times training batches without a pruning event
with and without the callback (interleaved blocks, as benchmarks/lightning_overhead.py does).
Targets: FID of a structured run within --fid_tolerance of ModelPruning's or better; >= 4x
fewer generator MACs; latency speedup >= 0.7x the MAC reduction; callback overhead < 5%.

    python benchmarks/prune_vs_modelpruning.py [--dense_ckpt runs/gan-lightning/<id>/checkpoints/last.ckpt]
        [--dense_epochs 10] [--finetune_epochs 4] [--amount 0.55] [--structured_criteria l1,taylor] [--seeds 0,1]
        [--out benchmarks/results/prune_vs_modelpruning.json]
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Callable, Optional

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelPruning
from torch import nn
from torch.nn.utils import prune as torch_prune

try:  # run as a script, `benchmarks/` is sys.path[0]; run as a module from the repository root, it is a namespace package
    from lightning_overhead import BatchClock
except ImportError:  # pragma: no cover
    from benchmarks.lightning_overhead import BatchClock

from callbacks.prune import Prune
from datamodules.digits import DigitsDataModule
from gan_lightning.compress.profiling import COUNTED, interleaved_latency_ms, network_cost
from gan_lightning.compress.surgery import WEIGHTED
from gan_lightning.core.module import GANModule
from gan_lightning.networks import DCGANDiscriminator, DCGANGenerator
from gan_lightning.quality.evaluation import evaluate_generator
from gan_lightning.quality.features import domain_cache_dir, domain_classifier


# --------------------------------------------------------------------------- the contenders
class ModelPruningAtEpochStart(ModelPruning):
    """Lightning's ModelPruning, pruning with its own ``apply_pruning`` (torch.nn.utils.prune,
    here ``l1_unstructured`` per layer), changed only where the comparison would otherwise be unfair:

    1. *When*: ModelPruning prunes at the end of a training epoch (or after validation), so with
       ``apply_pruning=lambda e: e == 0`` it would fine-tune one epoch less than the ``prune``
       callback, which prunes at the start of epoch 0. This subclass calls ``apply_pruning``
       once at the start of ``epoch``; its own end-of-epoch hook is disabled (``apply_pruning=False``).
    2. *The EMA copy*: GANModule samples (and so FID measures) ``generator_ema``, which
       ModelPruning does not know about. Pruned only on ``generator``, the EMA would average the
       unmasked ``weight_orig`` tensors and the measured network would not be sparse at all. The
       generator's masks are copied onto the EMA's layers (``custom_from_mask``), so both hold
       the same parametrization and GANModule's EMA update (which zips parameters and buffers)
       stays aligned. ``make_pruning_permanent`` (on_train_end) then finalizes both.
    """

    def __init__(self, module: GANModule, layers: list[str], amount: float, epoch: int = 0) -> None:
        gen = dict(module.generator.named_modules())
        self.ema_pairs = []
        if module.generator_ema is not None:
            ema = dict(module.generator_ema.named_modules())
            self.ema_pairs = [(gen[name], ema[name]) for name in layers]
        self.epoch = epoch
        super().__init__(
            "l1_unstructured",
            parameters_to_prune=[(gen[name], "weight") for name in layers],
            use_global_unstructured=False,
            amount=amount,
            apply_pruning=False,  # ModelPruning's own (end-of-epoch) trigger never fires; see on_train_epoch_start
            make_pruning_permanent=True,
            use_lottery_ticket_hypothesis=False,
        )

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module) -> None:
        if trainer.current_epoch != self.epoch:
            return
        self.apply_pruning(self.amount)
        for g, e in self.ema_pairs:
            torch_prune.custom_from_mask(e, "weight", g.weight_mask.clone())


def prunable_generator_layers(module: GANModule) -> list[str]:
    """The generator's Linear/conv layers except the output layer (the ``prune`` callback's default skip)."""
    names = [n for n, m in module.generator.named_modules() if isinstance(m, WEIGHTED)]
    return names[:-1]


class StopAfterFirstEpoch(pl.Callback):
    def on_train_epoch_end(self, trainer, pl_module):
        trainer.should_stop = True


# --------------------------------------------------------------------------- training
def make_trainer(root: Path, epochs: int, callbacks: list, limit_batches: Optional[int] = None) -> pl.Trainer:
    return pl.Trainer(
        accelerator="cpu", devices=1, max_epochs=epochs, limit_train_batches=limit_batches, limit_val_batches=0,
        num_sanity_val_steps=0, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=root, callbacks=callbacks,
    )


def default_module() -> GANModule:
    """configs/default.yaml's model."""
    return GANModule(
        DCGANGenerator(z_dim=64, image_size=32, channels=1, width=32),
        DCGANDiscriminator(image_size=32, channels=1, width=32, norm="batch"),
        loss="lsgan", lr_g=4e-4, lr_d=1e-4, betas=(0.5, 0.999), ema_decay=0.99,
    )


def dense_module(args, data, root: Path) -> tuple[GANModule, dict]:
    if args.dense_ckpt is not None:
        module = GANModule.load_from_checkpoint(args.dense_ckpt, map_location="cpu")
        if module.edits.compressed("generator") or module.edits.compressed("discriminator") or any(n.endswith("_orig") for n, _ in module.named_parameters()):
            sys.exit(f"--dense_ckpt {args.dense_ckpt} holds an already pruned model; pass a dense run's checkpoint")
        module.check_sample_shape(tuple(data.sample_shape))
        return module, {"source": str(args.dense_ckpt), "hparams": {k: str(v) for k, v in module.hparams.items()}}
    pl.seed_everything(0, verbose=False)
    module = default_module()
    start = time.perf_counter()
    make_trainer(root / "dense", args.dense_epochs, []).fit(module, datamodule=data)
    return module, {"source": f"trained here, {args.dense_epochs} epochs, seed 0", "seconds": time.perf_counter() - start}


def finetune(dense: GANModule, data, root: Path, epochs: int, seed: int, callbacks: Callable[[GANModule], list]) -> tuple[GANModule, float]:
    module = copy.deepcopy(dense)
    pl.seed_everything(seed, verbose=False)
    start = time.perf_counter()
    make_trainer(root, epochs, callbacks(module)).fit(module, datamodule=data)
    return module, time.perf_counter() - start


# --------------------------------------------------------------------------- measuring
def weight_counts(net: nn.Module) -> dict[str, tuple[int, int]]:
    """(elements, non-zero) of every >= 2-D weight, the tensors ``compress/sparsity`` counts."""
    return {n: (p.numel(), int(p.count_nonzero())) for n, p in net.named_parameters() if n.endswith("weight") and p.dim() > 1}


def sparsity_against(net: nn.Module, dense_counts: dict[str, tuple[int, int]]) -> float:
    """Share of the dense network's weights that are gone (cut out or zero), as compress/sparsity."""
    now = weight_counts(net)
    total = sum(n for n, _ in dense_counts.values())
    return 1.0 - sum(now.get(k, (0, 0))[1] for k in dense_counts) / total


@torch.no_grad()
def layer_ms(net: nn.Module, z: torch.Tensor, repeats: int = 20) -> dict[str, float]:
    """Median in-place wall time of every Linear/conv layer of one forward pass (eval mode)."""
    names = {m: n for n, m in net.named_modules()}
    starts: dict[str, float] = {}
    times: dict[str, list[float]] = {}

    def pre(m, inp):
        starts[names[m]] = time.perf_counter()

    def post(m, inp, out):
        times.setdefault(names[m], []).append(time.perf_counter() - starts[names[m]])

    hooks = [h for m in net.modules() if isinstance(m, COUNTED) for h in (m.register_forward_pre_hook(pre), m.register_forward_hook(post))]
    was = net.training
    net.eval()
    try:
        for _ in range(3):
            net(z)
        times.clear()
        total = []
        for _ in range(repeats):
            s = time.perf_counter()
            net(z)
            total.append(time.perf_counter() - s)
    finally:
        net.train(was)
        for h in hooks:
            h.remove()
    out = {k: 1e3 * statistics.median(v) for k, v in times.items()}
    out["total"] = 1e3 * statistics.median(total)
    return out


def paired_latency(nets: dict[str, nn.Module], z: torch.Tensor, rounds: int, repeats: int) -> dict:
    """``interleaved_latency_ms`` one round at a time: the median latency of each network over
    rounds (what ``interleaved_latency_ms(nets, z, rounds)`` returns) and the median over rounds
    of each round's dense/network ratio, which cancels load that changes between rounds."""
    per_round = [interleaved_latency_ms(nets, z, rounds=1, repeats=repeats) for _ in range(rounds)]
    return {
        "ms": {k: statistics.median(r[k] for r in per_round) for k in nets},
        "speedup": {k: statistics.median(r["dense"] / r[k] for r in per_round) for k in nets},
        "per_round": per_round,
    }


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def overhead_blocks(dense: GANModule, data, root: Path, rounds: int, batches: int, warmup: int) -> dict:
    """Seconds per training batch with the prune callback attached but before its event, and
    without it; plus the direct cost of the callback's per-batch hooks, timed in a loop."""
    hook_us: list[float] = []

    def block(with_prune: bool) -> float:
        module = copy.deepcopy(dense)
        clock = BatchClock(warmup)
        callbacks: list = [clock, StopAfterFirstEpoch()]
        prune = None
        if with_prune:  # the event is due at epoch 1, which StopAfterFirstEpoch never lets start
            prune = Prune(generator_amount=0.55, granularity="structured", schedule="oneshot", start_epoch=1, metric="none")
            callbacks.insert(0, prune)
        trainer = make_trainer(root / "overhead", 2, callbacks, limit_batches=warmup + batches)
        trainer.fit(module, datamodule=data)
        assert not module.edits.compressed("generator"), "the prune event must not have run in the overhead blocks"
        if prune is not None:
            hook_us.append(hook_cost_us(prune, trainer, module, data))
        return (clock.end - clock.start) / clock.batches

    times: dict[str, list[float]] = {"with_prune": [], "without": []}
    for r in range(rounds):
        order = ("with_prune", "without") if r % 2 == 0 else ("without", "with_prune")
        for side in order:
            times[side].append(block(side == "with_prune"))
    ratios = [a / b for a, b in zip(times["with_prune"], times["without"])]
    return {"seconds_per_batch": times, "ratios": ratios, "ratio": statistics.median(ratios), "hook_us_per_batch": statistics.median(hook_us)}


def hook_cost_us(prune: Prune, trainer: pl.Trainer, module: GANModule, data, repeats: int = 2000) -> float:
    """Microseconds per batch spent in the callback's own hooks on a batch without an event
    (the Lightning batch hooks and the GAN hooks GANModule calls), timed directly: a number the
    machine's load cannot hide in, unlike the end-to-end ratio. ``batches_seen`` is restored."""
    real = next(iter(data.train_dataloader()))
    z = torch.zeros(real[0].shape[0], module.z_dim)
    seen = prune.batches_seen
    start = time.perf_counter()
    for i in range(repeats):
        prune.on_train_batch_start(trainer, module, real, i)
        prune.transform_real_batch(trainer, module, real[0])
        prune.on_discriminator_step_end(trainer, module)
        prune.generator_loss_terms(trainer, module, z, real[0])
        prune.on_generator_step_end(trainer, module)
        prune.on_train_batch_end(trainer, module, None, real, i)
    prune.batches_seen = seen
    return 1e6 * (time.perf_counter() - start) / repeats


def git_state() -> dict:
    """The commit measured, and the files under callbacks/ and gan_lightning/ changed against it."""
    def git(*cmd: str) -> str:
        try:
            return subprocess.run(["git", *cmd], capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    return {"commit": git("rev-parse", "HEAD"), "changed": git("status", "--porcelain", "--", "callbacks", "gan_lightning").splitlines()}


# --------------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dense_ckpt", type=Path, default=None, help="a dense run's checkpoint (e.g. from `python train.py`); default: train one here")
    parser.add_argument("--dense_epochs", type=int, default=10, help="epochs of the dense training when no --dense_ckpt is given")
    parser.add_argument("--finetune_epochs", type=int, default=4, help="epochs each variant trains after (and including) the pruning at epoch 0")
    parser.add_argument("--amount", type=float, default=0.55, help="structured: fraction of each hidden layer's channels removed (0.55 gives >= 4x fewer MACs)")
    parser.add_argument("--structured_criteria", default="l1,taylor", help="one structured run per --prune.criterion; l1 is the callback's default")
    parser.add_argument("--seeds", default="0,1", help="comma-separated fine-tuning seeds; FID is their mean and std")
    parser.add_argument("--fid_tolerance", type=float, default=0.05, help="'match': structured FID <= ModelPruning FID * (1 + this)")
    parser.add_argument("--num_fake", type=int, default=1000)
    parser.add_argument("--num_real", type=int, default=1000)
    parser.add_argument("--domain_cache_dir", type=Path, default=domain_cache_dir())
    parser.add_argument("--latency_batch", type=int, default=64)
    parser.add_argument("--large_batch", type=int, default=256, help="a second latency batch for dense vs structured: per-call overheads weigh less")
    parser.add_argument("--latency_threads", type=int, default=os.cpu_count(), help="torch threads of the latency measurement (default: all cores)")
    parser.add_argument("--latency_rounds", type=int, default=15, help="interleaved rounds of the latency measurement")
    parser.add_argument("--latency_repeats", type=int, default=10, help="timed passes per network and round")
    parser.add_argument("--train_threads", type=int, default=1, help="torch threads of training and of the overhead timing")
    parser.add_argument("--overhead_rounds", type=int, default=12)
    parser.add_argument("--overhead_batches", type=int, default=50, help="timed batches per block (at most 101 - warmup: one epoch)")
    parser.add_argument("--overhead_warmup", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/prune_vs_modelpruning.json"))
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    criteria = [c.strip() for c in args.structured_criteria.split(",") if c.strip()]

    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*isinstance\\(treespec, LeafSpec\\).*")
    logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)
    torch.set_num_threads(args.train_threads)
    wall = time.perf_counter()
    source = git_state()  # at the start: the code imported above
    load_before = os.getloadavg()
    root = Path(tempfile.mkdtemp(prefix="prune_vs_mp_"))  # Prune writes its compress/* tables under default_root_dir

    data = DigitsDataModule(image_size=32, batch_size=16)
    data.setup("fit")
    domain_path, domain_record = domain_classifier(data, args.domain_cache_dir, epochs=5)
    fid = lambda m: evaluate_generator(m, data, "domain", args.num_fake, args.num_real, 0, str(domain_path))  # noqa: E731

    print(f"dense model: {'loading ' + str(args.dense_ckpt) if args.dense_ckpt else f'training {args.dense_epochs} epochs'} ...", flush=True)
    dense, dense_info = dense_module(args, data, root)
    dense.cpu()
    dense_info["fid_before_finetuning"] = fid(dense)["fid"]
    dense_counts = weight_counts(dense.generator)
    layers = prunable_generator_layers(dense)

    # --- fine-tuning: the structured runs first, since ModelPruning's amount is the sparsity they reach
    structured_variants = [f"prune-structured-{c}" for c in criteria]
    variants = ["dense", *structured_variants, "modelpruning", "prune-unstructured"]
    runs: dict[str, dict] = {v: {"fid": [], "metrics": [], "seconds": []} for v in variants}
    models: dict[str, GANModule] = {}
    sparsity = layer_amount = None
    for variant in [*structured_variants, "dense", "modelpruning", "prune-unstructured"]:
        if variant in structured_variants:
            criterion = variant.rsplit("-", 1)[1]
            make = lambda m, c=criterion: [Prune(generator_amount=args.amount, granularity="structured", schedule="oneshot", start_epoch=0, criterion=c, metric="none")]  # noqa: E731
        elif variant == "dense":
            make = lambda m: []  # noqa: E731
        elif variant == "modelpruning":
            make = lambda m: [ModelPruningAtEpochStart(m, layers, layer_amount, epoch=0)]  # noqa: E731
        else:
            make = lambda m: [Prune(generator_amount=layer_amount, granularity="unstructured", schedule="oneshot", start_epoch=0, metric="none")]  # noqa: E731
        for seed in seeds:
            print(f"fine-tuning {variant}, seed {seed}, {args.finetune_epochs} epochs ...", flush=True)
            module, seconds = finetune(dense, data, root / variant / str(seed), args.finetune_epochs, seed, make)
            metrics = fid(module)
            runs[variant]["fid"].append(metrics["fid"])
            runs[variant]["metrics"].append(metrics)
            runs[variant]["seconds"].append(seconds)
            models.setdefault(variant, module)  # the first seed's networks are measured for cost and latency
        if sparsity is None:
            # the same number of generator weights gone, taken from the layers ModelPruning prunes
            sparsity = sparsity_against(models[variant].sampling_generator, dense_counts)
            removed = sparsity * sum(n for n, _ in dense_counts.values())
            layer_amount = removed / sum(dense_counts[f"{name}.weight"][0] for name in layers)

    # --- cost: MACs, parameters, sparsity of the network that samples (and that FID measured)
    z = torch.randn(args.latency_batch, dense.z_dim, generator=torch.Generator().manual_seed(0))
    nets = {v: models[v].sampling_generator for v in variants}
    for v, net in nets.items():
        cost = network_cost(net, z[:2])
        runs[v].update(
            macs=cost.macs, sparse_macs=cost.sparse_macs(net), params=cost.params, nonzero=cost.nonzero,
            sparsity=sparsity_against(net, dense_counts), shapes={n: list(p.shape) for n, p in net.named_parameters() if p.dim() > 1},
        )
        # the EMA and the trained generator must agree (both pruned the same way)
        runs[v]["train_generator_sparsity"] = sparsity_against(models[v].generator, dense_counts)

    # --- latency: interleaved on one z batch, at all cores and at one thread
    latency_load = os.getloadavg()
    first = structured_variants[0]
    torch.set_num_threads(args.latency_threads)
    threads = torch.get_num_threads()
    lat = paired_latency(nets, z, args.latency_rounds, args.latency_repeats)
    breakdown = {f"{threads}_threads": {v: layer_ms(nets[v], z) for v in ("dense", first)}}
    torch.set_num_threads(1)
    lat1 = paired_latency(nets, z, args.latency_rounds, args.latency_repeats)
    breakdown["1_thread"] = {v: layer_ms(nets[v], z) for v in ("dense", first)}
    z_large = torch.randn(args.large_batch, dense.z_dim, generator=torch.Generator().manual_seed(1))
    pair = {"dense": nets["dense"], first: nets[first]}
    large = {}
    for n_threads in (threads, 1):
        torch.set_num_threads(n_threads)
        large[n_threads] = paired_latency(pair, z_large, args.latency_rounds, args.latency_repeats)["speedup"][first]
    torch.set_num_threads(args.train_threads)
    for v in variants:
        runs[v].update(
            latency_ms=lat["ms"][v], speedup=lat["speedup"][v], latency_ms_1thread=lat1["ms"][v], speedup_1thread=lat1["speedup"][v],
            mac_reduction=runs["dense"]["macs"] / runs[v]["macs"],
        )
        runs[v]["speedup_per_mac_reduction"] = runs[v]["speedup"] / runs[v]["mac_reduction"]
        runs[v]["speedup_per_mac_reduction_1thread"] = runs[v]["speedup_1thread"] / runs[v]["mac_reduction"]

    # --- callback overhead on batches without a pruning event
    print(f"timing training batches with/without the prune callback ({args.overhead_rounds} rounds) ...", flush=True)
    overhead = overhead_blocks(dense, data, root, args.overhead_rounds, args.overhead_batches, args.overhead_warmup)

    # --- report
    mp = runs["modelpruning"]
    mp_fid = mean_std(mp["fid"])[0]
    checks: dict[str, bool] = {}
    for key, label in (("", f"{threads} threads"), ("_1thread", "1 thread")):
        checks[f"modelpruning gives no latency speedup (< 1.1x, {label})"] = mp[f"speedup{key}"] < 1.1
    for v in structured_variants:
        s = runs[v]
        checks[f"{v}: FID <= ModelPruning FID x {1 + args.fid_tolerance:g}"] = mean_std(s["fid"])[0] <= mp_fid * (1 + args.fid_tolerance)
        checks[f"{v}: >= 4x fewer generator MACs"] = s["mac_reduction"] >= 4.0
        for key, label in (("", f"{threads} threads"), ("_1thread", "1 thread")):
            checks[f"{v}: real latency speedup (> 1.1x, {label})"] = s[f"speedup{key}"] > 1.1
            checks[f"{v}: speedup >= 0.7 x MAC reduction ({label}, batch {args.latency_batch})"] = s[f"speedup_per_mac_reduction{key}"] >= 0.7
    for n_threads, speedup in large.items():
        checks[f"{first}: speedup >= 0.7 x MAC reduction ({n_threads} thread(s), batch {args.large_batch})"] = speedup / runs[first]["mac_reduction"] >= 0.7
    checks["callback overhead without a pruning event < 5%"] = overhead["ratio"] < 1.05
    print()
    print(f"dense DCGAN ({dense_info['source']}); fine-tuning {args.finetune_epochs} epochs x seeds {seeds}; structured amount {args.amount};"
          f" ModelPruning/unstructured amount per layer {layer_amount:.4f} (generator sparsity {sparsity:.4f})")
    print(f"FID: domain features, {args.num_fake} generated vs {args.num_real} val samples, latent seed 0, mean/std over fine-tuning seeds;"
          f" dense before fine-tuning {dense_info['fid_before_finetuning']:.2f}")
    print(f"latency: batch {args.latency_batch}, median over {args.latency_rounds} interleaved rounds (speedup: median of per-round ratios),"
          f" {threads} torch threads (= all cores) and 1 thread; load average {latency_load[0]:.2f} on {os.cpu_count()} cores")
    if threads > 1 and latency_load[0] > os.cpu_count() - 0.5:  # this process counts about 1
        print(f"WARNING: other processes were using the cores (load {latency_load[0]:.2f}): {threads}-thread latencies then wait on"
              " busy cores and may be unreliable; the 1-thread ones are the steadier comparison")
    width = max(len(v) for v in variants) + 2
    print(f"{'variant':<{width}}{'MMACs':>7}{'MAC red':>9}{'params':>8}{'nonzero':>9}{'sparsity':>9}{f'ms@{threads}t':>8}{'speedup':>8}"
          f"{'ms@1t':>7}{'speedup':>8}{'FID mean':>10}{'std':>7}")
    for v in variants:
        r = runs[v]
        m, sd = mean_std(r["fid"])
        print(f"{v:<{width}}{r['macs'] / 1e6:>7.2f}{r['mac_reduction']:>8.2f}x{r['params']:>8}{r['nonzero']:>9}{r['sparsity']:>9.3f}"
              f"{r['latency_ms']:>8.2f}{r['speedup']:>7.2f}x{r['latency_ms_1thread']:>7.2f}{r['speedup_1thread']:>7.2f}x{m:>10.2f}{sd:>7.2f}")
    s = runs[first]
    print(f"structured: latency speedup / MAC reduction = {s['speedup_per_mac_reduction']:.2f} at {threads} threads,"
          f" {s['speedup_per_mac_reduction_1thread']:.2f} at 1 thread (target >= 0.7)")
    print(f"structured at batch {args.large_batch}: speedup " + ", ".join(
        f"{sp:.2f}x ({sp / s['mac_reduction']:.2f} of the MAC reduction) at {n} thread(s)" for n, sp in large.items()))
    b = breakdown["1_thread"]
    print("where the time goes (ms per pass, 1 thread, dense -> structured): " + ", ".join(
        f"{k} {b['dense'][k]:.2f} -> {b[first][k]:.2f}" for k in b["dense"]))
    med = {k: statistics.median(v) for k, v in overhead["seconds_per_batch"].items()}
    print(f"callback overhead: {1e3 * med['with_prune']:.2f} vs {1e3 * med['without']:.2f} ms/batch; ratio with/without (median over"
          f" {args.overhead_rounds} rounds) {overhead['ratio']:.3f} [min {min(overhead['ratios']):.3f}, max {max(overhead['ratios']):.3f}] (target < 1.05);"
          f" the callback's own hooks: {overhead['hook_us_per_batch']:.1f} us/batch ({overhead['hook_us_per_batch'] / (1e4 * med['without']):.3f}% of a batch)")
    for name, ok in checks.items():
        print(f"{'PASS' if ok else 'FAIL'}  {name}")

    result = {
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "versions": {"torch": torch.__version__, "pytorch_lightning": pl.__version__}, "git": source,
        "cpu_count": os.cpu_count(), "latency_threads": threads, "load_average_start": load_before,
        "load_average_at_latency": latency_load,
        "dense": dense_info, "domain_classifier": {"path": str(domain_path), **domain_record},
        "structured_amount": args.amount, "generator_sparsity": sparsity, "modelpruning_layer_amount": layer_amount,
        "pruned_layers": layers,
        "variants": {v: {**{k: x for k, x in r.items() if k != "metrics"}, "fid_mean": mean_std(r["fid"])[0], "fid_std": mean_std(r["fid"])[1],
                         "metrics_per_seed": [{k: (x if math.isfinite(x) else None) for k, x in m.items()} for m in r["metrics"]]}
                     for v, r in runs.items()},
        "latency_per_round": {"all_threads": lat["per_round"], "1_thread": lat1["per_round"]},
        "layer_ms": breakdown,
        "large_batch_speedup": {f"{n}_threads": sp for n, sp in large.items()},
        "overhead": overhead,
        "checks": checks,
        "seconds": time.perf_counter() - wall,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    shutil.rmtree(root, ignore_errors=True)
    print(f"wrote {args.out} ({result['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
