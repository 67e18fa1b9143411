"""Lightning overhead of GANModule's training step against a plain PyTorch loop.

Both do the same work on the same networks, data and batches: one discriminator step and
one generator step per batch with Adam, non-saturating BCE, DCGAN 32x32 on the digits.
Blocks of batches are interleaved in one process (Lightning, plain, plain, Lightning, ...)
so that machine noise hits both alike; the median over rounds of the per-round ratio is reported.
A third side, Lightning with train.py's DivergenceGuard, gives the cost of that check and copy.

    python benchmarks/lightning_overhead.py [--rounds 6] [--batches 40] [--out benchmarks/results/lightning_overhead.json]
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from callbacks.divergence import DivergenceGuard
from datamodules.digits import DigitsDataModule
from gan_lightning.core.module import GANModule
from gan_lightning.networks import DCGANDiscriminator, DCGANGenerator


class BatchClock(pl.Callback):
    """Wall time from the start of the first timed batch to the end of the last one."""

    def __init__(self, warmup: int) -> None:
        self.warmup = warmup
        self.start = self.end = 0.0
        self.batches = 0

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if batch_idx == self.warmup:
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if batch_idx >= self.warmup:
            self.end = time.perf_counter()
            self.batches = batch_idx - self.warmup + 1


def lightning_block(generator, discriminator, data, batches: int, warmup: int, extra=()) -> float:
    module = GANModule(copy.deepcopy(generator), copy.deepcopy(discriminator), loss="bce")
    clock = BatchClock(warmup)
    trainer = pl.Trainer(
        accelerator="cpu", devices=1, max_epochs=1, limit_train_batches=warmup + batches, limit_val_batches=0,
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        callbacks=[clock, *extra],
    )
    trainer.fit(module, train_dataloaders=data.train_dataloader())
    return (clock.end - clock.start) / clock.batches


def plain_block(generator, discriminator, data, batches: int, warmup: int) -> float:
    g, d = copy.deepcopy(generator), copy.deepcopy(discriminator)
    opt_g = torch.optim.Adam(g.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(d.parameters(), lr=2e-4, betas=(0.5, 0.999))
    start, done = 0.0, 0
    for i, (real, _) in enumerate(data.train_dataloader()):
        if i == warmup:
            start = time.perf_counter()
        if i == warmup + batches:
            break
        with torch.no_grad():
            fake = g(torch.randn(real.shape[0], g.z_dim))
        d_real, d_fake = d(real), d(fake)
        d_loss = F.binary_cross_entropy_with_logits(d_real, torch.ones_like(d_real)) + F.binary_cross_entropy_with_logits(d_fake, torch.zeros_like(d_fake))
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()
        for p in d.parameters():  # as toggle_optimizer does: no D gradients in the G step
            p.requires_grad_(False)
        logits = d(g(torch.randn(real.shape[0], g.z_dim)))
        g_loss = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()
        for p in d.parameters():
            p.requires_grad_(True)
        # the Lightning side reads both losses for the progress bar and the NaN check
        float(d_loss), float(g_loss)
        done = i - warmup + 1
    return (time.perf_counter() - start) / done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=6, help="interleaved rounds (each runs both sides once)")
    parser.add_argument("--batches", type=int, default=20, help="timed batches per block (at most 25 - warmup: one epoch)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed batches at the start of each block")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/lightning_overhead.json"))
    args = parser.parse_args()

    pl.seed_everything(0, verbose=False)
    data = DigitsDataModule(image_size=32, batch_size=args.batch_size)
    data.setup("fit")
    generator = DCGANGenerator(z_dim=64, image_size=32, channels=1, width=32)
    discriminator = DCGANDiscriminator(image_size=32, channels=1, width=32)

    # "+guard": train.py's default DivergenceGuard (a finiteness check and a copy of the state every batch)
    blocks = {
        "lightning": lightning_block,
        "plain": plain_block,
        "lightning+guard": lambda *a: lightning_block(*a, extra=[DivergenceGuard()]),
    }
    times: dict[str, list[float]] = {side: [] for side in blocks}
    for r in range(args.rounds):
        order = list(blocks) if r % 2 == 0 else list(reversed(blocks))
        for side in order:
            times[side].append(blocks[side](generator, discriminator, data, args.batches, args.warmup))

    med = {k: statistics.median(v) for k, v in times.items()}
    # Each round's two blocks ran back to back, so their ratio cancels slow drifts in machine load.
    ratio = statistics.median(lt / pt for lt, pt in zip(times["lightning"], times["plain"]))
    print(f"{'loop':<16}{'median ms/batch':>18}{'min':>10}{'max':>10}")
    for side, values in times.items():
        print(f"{side:<16}{1e3 * med[side]:>18.2f}{1e3 * min(values):>10.2f}{1e3 * max(values):>10.2f}")
    guard = statistics.median(gt / lt for gt, lt in zip(times["lightning+guard"], times["lightning"]))
    print(f"overhead ratio lightning/plain (median over rounds): {ratio:.3f}  (target <= 1.10)")
    print(f"divergence guard cost, lightning+guard/lightning (median over rounds): {guard:.3f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "rounds": args.rounds, "batches_per_block": args.batches, "batch_size": args.batch_size,
        "torch_threads": torch.get_num_threads(), "seconds_per_batch": times, "median_seconds_per_batch": med,
        "ratio_lightning_over_plain": ratio, "ratio_guard_over_lightning": guard,
    }
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
