"""Sample grids from fixed latents, as PNG on disk and as images in every logger."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from pytorch_lightning import Callback, LightningModule, Trainer
from pytorch_lightning.utilities import rank_zero_only
from torchvision.utils import make_grid
from typing_extensions import override

from gan_lightning.core.loggers import log_image, run_dir, write_run_file
from gan_lightning.dataset_tensors import stack_samples
from gan_lightning.errors import ConfigError


def images_to_grid(samples: torch.Tensor, nrow: int) -> np.ndarray:
    """``(n, C, H, W)`` samples in [-1, 1] to a uint8 ``(H, W, 3)`` grid."""
    grid = make_grid(samples.detach().float().cpu().clamp(-1, 1), nrow=nrow, normalize=True, value_range=(-1, 1), pad_value=1)
    return (grid.permute(1, 2, 0).mul(255).round().to(torch.uint8)).numpy()


def points_to_image(fake: torch.Tensor, real: torch.Tensor | None, extent: float, size: int = 256) -> np.ndarray:
    """2-D points drawn on a ``size`` x ``size`` canvas over [-extent, extent]^2: real in blue, generated in orange."""
    canvas = np.zeros((size, size, 3), dtype=np.uint8)
    for points, colour in ((real, (60, 110, 255)), (fake, (255, 160, 0))):
        if points is None:
            continue
        xy = points.detach().float().cpu().view(-1, 2).numpy()
        pix = np.floor((xy + extent) / (2 * extent) * size).astype(int)
        inside = ((pix >= 0) & (pix < size)).all(axis=1)
        # Row 0 is the top of the image, so y is flipped to keep the usual orientation.
        canvas[size - 1 - pix[inside, 1], pix[inside, 0]] = colour
    return canvas


class SampleGrid(Callback):
    """Every ``every_n_epochs`` epochs, renders samples of the same latents (``seed``) so progress
    is visible: a grid for images, a scatter over the real points for 2-D data. Written to
    ``<run>/samples/epoch_XXXX.png`` and logged as ``samples`` to W&B and TensorBoard.

    Args:
        every_n_epochs: interval in epochs; 0 turns sample grids off.
        num_samples: images in the grid (points for 2-D data are 20x this).
        nrow: images per grid row.
        seed: seed of the fixed latents.
        extent: half-width of the square drawn for 2-D data.
    """

    def __init__(self, every_n_epochs: int = 1, num_samples: int = 64, nrow: int = 8, seed: int = 0, extent: float = 5.0) -> None:
        if every_n_epochs < 0 or num_samples < 1 or nrow < 1:
            raise ConfigError("--samples.every_n_epochs must be >= 0 and --samples.num_samples/--samples.nrow >= 1")
        if not extent > 0:  # the canvas spans [-extent, extent]: 0 divides by zero, a negative one mirrors it
            raise ConfigError(f"--samples.extent must be a number > 0 (the half-width drawn for 2-D data), got {extent}")
        self.every_n_epochs = every_n_epochs
        self.num_samples = num_samples
        self.nrow = nrow
        self.seed = seed
        self.extent = extent
        self.last_path: Path | None = None

    def render(self, trainer: Trainer, module: LightningModule) -> np.ndarray:
        shape = getattr(trainer.datamodule, "sample_shape", None)
        if shape is not None and len(shape) == 1 and shape[0] == 2:
            fake = module.generate(20 * self.num_samples, seed=self.seed)
            real, _ = stack_samples(trainer.datamodule.val_set, 20 * self.num_samples)
            return points_to_image(fake, real, self.extent)
        return images_to_grid(module.generate(self.num_samples, seed=self.seed), self.nrow)

    @override
    @rank_zero_only
    def on_train_epoch_end(self, trainer: Trainer, module: LightningModule) -> None:
        if self.every_n_epochs == 0 or (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        image = self.render(trainer, module)
        path = run_dir(trainer) / "samples" / f"epoch_{trainer.current_epoch:04d}.png"
        write_run_file(path, lambda f: Image.fromarray(image).save(f, format="PNG"), "the sample grid")
        self.last_path = path
        log_image(trainer, "samples", image)
