"""diffaug: DiffAugment (Zhao et al., 2020), switched on with ``--callbacks diffaug``.

The standard remedy for training a GAN on little data, and the baseline the VAE callback is
measured against (benchmarks/low_data.py). Through the ``augment_discriminator_input`` GAN
hook, every batch the discriminator judges (real and fake, in the D step and in the G step)
goes through the same kind of random, differentiable transform (``gan_lightning.synth.diffaugment``).
"""

from __future__ import annotations

from pytorch_lightning import Trainer
from typing_extensions import override

from callbacks.registry import register
from gan_lightning.core.hooks import GANCallback
from gan_lightning.errors import ConfigError
from gan_lightning.synth.diffaugment import POLICIES, diff_augment


@register("diffaug")
class DiffAugment(GANCallback):
    """Differentiable augmentation of everything the discriminator sees.

    Args:
        policy: comma-separated transforms, in any of ``color``, ``translation``, ``cutout``
            (the paper's choice for small datasets is all three).
        translation_ratio: largest shift, as a share of each image side, in [0, 0.5].
        cutout_ratio: side of the zeroed square, as a share of each image side, in (0, 1).
    """

    def __init__(self, policy: str = "color,translation,cutout", translation_ratio: float = 0.125, cutout_ratio: float = 0.5) -> None:
        self.policies = [p.strip() for p in policy.split(",") if p.strip()]
        unknown = [p for p in self.policies if p not in POLICIES]
        if unknown or not self.policies:
            raise ConfigError(f"--diffaug.policy must name one or more of {', '.join(POLICIES)} (comma-separated), got {policy!r}")
        if not 0.0 <= translation_ratio <= 0.5:
            raise ConfigError(f"--diffaug.translation_ratio must be in [0, 0.5], got {translation_ratio}")
        if not 0.0 < cutout_ratio < 1.0:
            raise ConfigError(f"--diffaug.cutout_ratio must be in (0, 1), got {cutout_ratio}")
        self.policy = policy
        self.translation_ratio = translation_ratio
        self.cutout_ratio = cutout_ratio

    @override
    def setup(self, trainer: Trainer, pl_module, stage: str) -> None:
        shape = getattr(trainer.datamodule, "sample_shape", None)
        if shape is not None and len(shape) != 3:
            raise ConfigError(f"--callbacks diffaug transforms images (channels, height, width), and the data's samples have shape {tuple(shape)}")

    @override
    def augment_discriminator_input(self, trainer: Trainer, module, samples):
        return diff_augment(samples, self.policies, self.translation_ratio, self.cutout_ratio)
