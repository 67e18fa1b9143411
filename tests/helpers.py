"""Builders shared by the tests: tiny networks on 8x8 digits so that every fit takes seconds on CPU."""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.loggers import CSVLogger

from datamodules.digits import DigitsDataModule
from gan_lightning.module import GANModule
from gan_lightning.networks import DCGANDiscriminator, DCGANGenerator

REPO = Path(__file__).resolve().parent.parent


def tiny_module(**kwargs) -> GANModule:
    """An 8x8 DCGAN with a few hundred weights; kwargs go to GANModule."""
    norm = "none" if kwargs.get("gp_weight", 0) or kwargs.get("r1_weight", 0) else "batch"
    return GANModule(
        generator=DCGANGenerator(z_dim=8, image_size=8, channels=1, width=4),
        discriminator=DCGANDiscriminator(image_size=8, channels=1, width=4, norm=norm),
        **kwargs,
    )


def tiny_digits(**kwargs) -> DigitsDataModule:
    kwargs.setdefault("batch_size", 32)
    return DigitsDataModule(image_size=8, **kwargs)


def make_trainer(tmp_path: Path, **kwargs) -> pl.Trainer:
    defaults = dict(
        accelerator="cpu",
        devices=1,
        max_epochs=1,
        logger=CSVLogger(tmp_path, name="csv"),
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=tmp_path,
    )
    defaults.update(kwargs)
    return pl.Trainer(**defaults)
