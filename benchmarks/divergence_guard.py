"""What train.py's always-on DivergenceGuard costs on a large model: time per batch and peak memory.

Three sides train the same networks from the same config values (configs/default.yaml: lsgan,
Adam at its rates and betas, EMA 0.99, the digits at 32x32 in batches of 16), with the generator
and discriminator at ``--width`` (128: the generator has 10.6x the default's parameters):
no guard; the guard as it was before this benchmark (torch's foreach infinity norm for the check,
a fresh clone of the module state and a deep copy of every optimizer state after each batch, on
the training device); and the guard as it is (``callbacks.divergence``: min/max for the check on
the CPU, buffers in CPU memory allocated once and copied into). Timed blocks
are interleaved in one process (none, before, after, after, before, none, ...) so that machine
noise hits all sides alike; the median over rounds of each side's ratio to "none" is reported,
with the guard's own time after each batch (check and keep, median over the timed batches), which
a busy machine blurs less than the ratio of two whole batches.

Peak memory is measured in a separate, untimed block per side (its tracking slows every op): the
most bytes held at once by the tensors of the run, a transient second copy included.

    python benchmarks/divergence_guard.py [--width 128] [--rounds 4] [--batches 6] [--out benchmarks/results/divergence_guard.json]
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import statistics
import sys
import time
import weakref
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run as a script, the project's packages come from the checkout

import pytorch_lightning as pl
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from benchmarks.lightning_overhead import BatchClock
from callbacks.divergence import DivergenceGuard
from datamodules.digits import DigitsDataModule
from gan_lightning.core.module import GANModule
from gan_lightning.networks import DCGANDiscriminator, DCGANGenerator

class BeforeGuard(DivergenceGuard):
    """The guard as it was: the foreach infinity norm on every device, and a new clone of the
    whole state after each batch, kept on the training device."""

    @staticmethod
    def _largest(tensors):
        return torch.stack([t.float() for t in torch._foreach_norm(tensors, float("inf"))])

    def _keep(self, trainer, pl_module) -> None:
        self._before = {
            "step": trainer.global_step,
            "module": {k: v.detach().clone() for k, v in pl_module.state_dict().items()},
            "optimizers": [copy.deepcopy(o.state_dict()) for o in trainer.optimizers],
        }


def timed(guard_class):
    """``guard_class`` that also records the seconds of each check-and-keep after a batch."""

    class Timed(guard_class):
        def __init__(self) -> None:
            super().__init__()
            self.seconds: list[float] = []

        def on_train_batch_end(self, *args) -> None:
            start = time.perf_counter()
            super().on_train_batch_end(*args)
            self.seconds.append(time.perf_counter() - start)

    return Timed


class LiveTensorBytes(TorchDispatchMode):
    """The bytes of tensor storages created under it and still alive, and the most at once.

    Exact and independent of the allocator (the resident set would also count what it kept after
    a free); views share their storage's count, and a storage leaves the count when it dies.
    """

    def __init__(self) -> None:
        super().__init__()
        self.live = self.peak = 0
        self._counted: set[int] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.device.type == "cpu":
                self._count(t.untyped_storage())
        return out

    def _count(self, storage) -> None:
        key = storage.data_ptr()
        if key in self._counted or storage.nbytes() == 0:
            return
        self._counted.add(key)
        self.live += storage.nbytes()
        self.peak = max(self.peak, self.live)
        weakref.finalize(storage, self._forget, key, storage.nbytes())

    def _forget(self, key: int, nbytes: int) -> None:
        self._counted.discard(key)
        self.live -= nbytes


def peak_mib(run) -> float:
    """The most memory held at once by the tensors created while ``run()`` runs: the model, its
    optimizer state, activations and any copy the guard makes."""
    with LiveTensorBytes() as tracker:
        run()
    return tracker.peak / 2**20


def block(width: int, data, batches: int, warmup: int, guard) -> float:
    """Seconds per batch of train.py's GANModule at ``width`` with ``guard`` (or None); a timed
    guard also records its own seconds per batch."""
    pl.seed_everything(0, verbose=False)
    g = DCGANGenerator(z_dim=64, image_size=32, channels=1, width=width)
    d = DCGANDiscriminator(image_size=32, channels=1, width=width, norm="batch")
    module = GANModule(g, d, loss="lsgan", lr_g=4e-4, lr_d=1e-4, betas=(0.5, 0.999), ema_decay=0.99)
    clock = BatchClock(warmup)
    trainer = pl.Trainer(
        accelerator="cpu", devices=1, max_epochs=1, limit_train_batches=warmup + batches, limit_val_batches=0,
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        callbacks=[clock] + ([guard] if guard is not None else []),
    )
    trainer.fit(module, train_dataloaders=data.train_dataloader())
    return (clock.end - clock.start) / clock.batches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--batches", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/divergence_guard.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = DigitsDataModule(image_size=32, batch_size=16)
    data.setup("fit")
    sides = {"none": lambda: None, "before": timed(BeforeGuard), "after": timed(DivergenceGuard)}
    peaks, guards = {}, {name: make() for name, make in sides.items()}
    for name, guard in guards.items():
        peaks[name] = peak_mib(lambda: block(args.width, data, 2, 1, guard))
    copy_mib = guards.pop("after")._kept.nbytes / 2**20  # one copy of the state, as the guard holds it
    del guards
    times: dict[str, list[float]] = {name: [] for name in sides}
    guard_ms: dict[str, list[float]] = {"before": [], "after": []}
    for r in range(args.rounds):
        order = list(sides) if r % 2 == 0 else list(reversed(sides))
        for name in order:
            gc.collect()
            guard = sides[name]()
            times[name].append(block(args.width, data, args.batches, args.warmup, guard))
            if guard is not None:  # the first batch's keep allocates (Adam's moments appear): not a steady batch
                guard_ms[name] += [1000 * s for s in guard.seconds[args.warmup:]]
    ratios = {name: statistics.median(t / n for t, n in zip(times[name], times["none"])) for name in sides}
    result = {
        "width": args.width,
        "generator_params_vs_default": sum(p.numel() for p in DCGANGenerator(width=args.width).parameters()) / sum(p.numel() for p in DCGANGenerator().parameters()),
        "state_copy_mib": copy_mib,
        "rounds": args.rounds, "batches": args.batches, "threads": torch.get_num_threads(),
        "seconds_per_batch": {name: statistics.median(t) for name, t in times.items()},
        "time_ratio_to_none": ratios,
        "guard_ms_per_batch_median": {name: statistics.median(ms) for name, ms in guard_ms.items()},
        "time_ratio_spread": {name: [min(t / n for t, n in zip(times[name], times["none"])), max(t / n for t, n in zip(times[name], times["none"]))] for name in sides},
        "peak_mib": peaks,
    }
    print(f"width {args.width} (generator {result['generator_params_vs_default']:.1f}x the default), one copy of the state {copy_mib:.0f} MiB,"
          f" {args.rounds} rounds of {args.batches} batches, CPU, {torch.get_num_threads()} thread")
    print(f"{'guard':8} {'s/batch':>8} {'x none':>7} {'range':>13} {'guard ms':>9} {'peak MiB':>9} {'+ vs none':>9}")
    for name in sides:
        lo, hi = result["time_ratio_spread"][name]
        print(f"{name:8} {result['seconds_per_batch'][name]:8.3f} {ratios[name]:7.3f} {lo:6.3f}-{hi:6.3f} {result['guard_ms_per_batch_median'].get(name, 0.0):9.1f} {peaks[name]:9.0f} {peaks[name] - peaks['none']:+9.0f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
