"""Callbacks that tests attach through the CLI (``--trainer.callbacks+=tests.probes.X``), so
they also run inside DDP worker processes that re-execute train.py."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from pytorch_lightning import Callback


class RankDump(Callback):
    """Saves, per rank, the parameters after training and a hash of the first real batch seen."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir = Path(out_dir)
        self.first_batch: str | None = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.first_batch is None:
            self.first_batch = hashlib.sha1(batch[0].cpu().numpy().tobytes()).hexdigest()

    def on_train_end(self, trainer, pl_module) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        torch.save(
            {
                "params": {k: v.detach().cpu().clone() for k, v in pl_module.named_parameters()},
                "first_batch": self.first_batch,
                "world_size": trainer.world_size,
                "global_step": trainer.global_step,
                "val_fid": float(trainer.callback_metrics["val/fid"]),
                # the vae plug-in's VAE, when it is on: every rank must hold the same one
                "vae": {k: v.cpu() for cb in trainer.callbacks if getattr(cb, "vae", None) is not None for k, v in cb.vae.state_dict().items()},
                # the balance control's state: every rank must take the same decisions
                "balance": next((cb.state_dict() for cb in trainer.callbacks if type(cb).__name__ == "DiscriminatorBalance"), None),
            },
            self.out_dir / f"rank{trainer.global_rank}.pt",
        )


class TrainStartState(Callback):
    """Keeps a copy of the module's state_dict as training starts (after any checkpoint restore)."""

    def __init__(self) -> None:
        self.state: dict[str, torch.Tensor] = {}
        self.best_model_score = None

    def on_train_start(self, trainer, pl_module) -> None:
        self.state = {k: v.detach().cpu().clone() for k, v in pl_module.state_dict().items()}
        self.best_model_score = trainer.checkpoint_callback.best_model_score


class ClipDump(Callback):
    """Saves, per rank, the parameters after training, the largest |w| of the discriminator
    after each batch and the logged ``compress/clip_saturation``.

    Callbacks given with ``--trainer.callbacks`` run before the ``--callbacks`` plug-ins, so
    this looks after the whole batch (every D step clipped) rather than inside the D-step hook.
    """

    def __init__(self, out_dir: str) -> None:
        self.out_dir = Path(out_dir)
        self.d_max_abs: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.d_max_abs.append(max(float(p.detach().abs().max()) for p in pl_module.discriminator.parameters()))

    def on_train_end(self, trainer, pl_module) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        torch.save(
            {
                "params": {k: v.detach().cpu().clone() for k, v in pl_module.named_parameters()},
                "d_max_abs": self.d_max_abs,
                "world_size": trainer.world_size,
                "saturation": float(trainer.callback_metrics["compress/clip_saturation"]),
                "clip_callbacks": [type(cb).__name__ for cb in trainer.callbacks if type(cb).__name__ == "WeightClipping"],
            },
            self.out_dir / f"rank{trainer.global_rank}.pt",
        )


class EpochScore(Callback):
    """Logs ``probe/epoch`` (the epoch number) after validation: monitored with mode min, the
    best checkpoint stays at epoch 0 while training goes on."""

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        pl_module.log("probe/epoch", float(trainer.current_epoch))


class DistillDump(Callback):
    """Saves, per rank, the module's parameters (generator, discriminator, adapters) and the
    distillation teacher's weights after training."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir = Path(out_dir)

    def on_train_end(self, trainer, pl_module) -> None:
        distill = next(cb for cb in trainer.callbacks if type(cb).__name__ == "Distill")
        self.out_dir.mkdir(parents=True, exist_ok=True)
        torch.save(
            {
                "params": {k: v.detach().cpu().clone() for k, v in pl_module.named_parameters()},
                "teacher": {k: v.detach().cpu().clone() for k, v in distill.teacher_net.state_dict().items()},
                "world_size": trainer.world_size,
            },
            self.out_dir / f"rank{trainer.global_rank}.pt",
        )


class AuxiliaryAtStart(Callback):
    """Saves the module's auxiliary modules' state and the distillation teacher's hash as training starts."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir = Path(out_dir)

    def on_train_start(self, trainer, pl_module) -> None:
        from callbacks.distill import weights_hash

        distill = next(cb for cb in trainer.callbacks if type(cb).__name__ == "Distill")
        self.out_dir.mkdir(parents=True, exist_ok=True)
        torch.save(
            {"auxiliary": {k: v.detach().cpu().clone() for k, v in pl_module.auxiliary.state_dict().items()},
             "teacher_sha256": weights_hash(distill.teacher_net) if distill.teacher_net is not None else None},
            self.out_dir / "start.pt",
        )


class GeneratorAtFirstBatch(Callback):
    """Saves the generator's weights as the first training batch of the run starts (after any
    checkpoint restore and any change at the start of that epoch)."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir = Path(out_dir)
        self.saved = False

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if not self.saved:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            torch.save({k: v.detach().cpu().clone() for k, v in pl_module.generator.state_dict().items()}, self.out_dir / "generator.pt")
            self.saved = True
