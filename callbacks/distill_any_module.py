"""distill on a LightningModule that is not a GANModule (see ``callbacks/target.py``).

The student is the network named by ``network``, the teacher its copy from just before a
compression callback first changed it, and the one term is the output term: the student's
outputs in each training step (its logits, for a classifier) against the teacher's on the same
inputs, added to the loss the module's ``training_step`` returns and logged as
``train/distill_output``. The feature, alignment and perceptual terms and the adversarial weight
belong to a GAN (adapters in ``GANModule.auxiliary``, the discriminator) and are not engaged
there.
"""

from __future__ import annotations

from typing import Optional

import torch
from pytorch_lightning import Trainer
from torch import nn

from callbacks.target import target_of
from gan_lightning.distill.losses import output_loss
from gan_lightning.distill.taps import TrainingCalls
from gan_lightning.errors import ConfigError


def check_any_module(distill, trainer: Trainer, module) -> None:
    """Refuse, before training, the options of ``distill`` (the Distill callback) that need a GAN."""
    w = distill.weights
    target_of(module).refuse_gan_only({
        "--distill.teacher_ckpt": distill.teacher_ckpt is not None, "--distill.alignment_weight": w["alignment_weight"] > 0,
        "--distill.perceptual_weight": w["perceptual_weight"] > 0, "--distill.gan_weight": w["gan_weight"] != 1.0,
        "--distill.feature_layers": distill.feature_layers is not None, "--distill.perceptual_layers": distill.perceptual_layers is not None,
        "--distill.student": distill.replacement is not None, "--distill.student_epoch": distill.student_epoch is not None,
    }, f" (there the output term of {distill.network!r} against its copy from before compression is the only one)")
    if w["output_weight"] == 0:
        raise ConfigError(f"--distill.output_weight is 0, and on {type(module).__name__} the output term is the only one: set it > 0")
    if not any(distill.network in (getattr(cb, "scoped", None) or ()) for cb in trainer.callbacks):
        raise ConfigError(
            f"--callbacks distill needs a teacher: switch on a compression callback that changes {distill.network!r}"
            f" (e.g. Prune(networks={{{distill.network!r}: 0.5}}) or LowRankFactorization(networks=[{distill.network!r}]))"
        )


def output_terms(calls: Optional[TrainingCalls], teacher: Optional[nn.Module], loss: str, weight: float) -> dict[str, torch.Tensor]:
    """The output term of this training step: the student's outputs against the teacher's on
    the same inputs (averaged over calls, if the student ran twice)."""
    taken = calls.take() if calls is not None else []
    if teacher is None or not taken:
        return {}
    with torch.no_grad():
        targets = [teacher(*inputs) for inputs, _ in taken]
    mean = torch.stack([output_loss(out, target, loss) for (_, out), target in zip(taken, targets)]).mean()
    return {"distill_output": weight * mean}
