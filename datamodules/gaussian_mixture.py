"""The 2-D Gaussian mixture toy of Unrolled GAN and VEEGAN: a ring of 8 modes or a 5x5
grid, where mode collapse is visible by eye and countable (modes covered)."""

from __future__ import annotations

import math
from typing import Literal, Optional

import torch
from torch.utils.data import Dataset, TensorDataset
from typing_extensions import override

from datamodules.base import GANDataModule, seeded_split
from gan_lightning.errors import ConfigError

DEFAULT_STD = {"ring": 0.02, "grid": 0.05}


def mixture_centers(layout: str, num_modes: int, radius: float) -> torch.Tensor:
    """Mode centers ``(k, 2)``: ``num_modes`` evenly on a circle, or the grid {-4, -2, 0, 2, 4}^2."""
    if layout == "ring":
        angles = torch.arange(num_modes, dtype=torch.float64) * (2 * math.pi / num_modes)
        return (radius * torch.stack([angles.cos(), angles.sin()], dim=1)).float()
    axis = torch.arange(-4.0, 5.0, 2.0)
    return torch.cartesian_prod(axis, axis)


class GaussianMixtureDataModule(GANDataModule):
    """Points from an equal-weight mixture of isotropic 2-D Gaussians, generated from ``seed``.

    Samples have shape (2,) and the label is the mode index. ``centers`` (k, 2) and ``std``
    are attributes, for counting the modes a generator covers.

    Args:
        layout: "ring" (num_modes modes on a circle of the given radius, the Unrolled GAN
            setting) or "grid" (25 modes at {-4, -2, 0, 2, 4}^2, the VEEGAN setting).
        num_samples: points generated in all, before the validation split.
        std: standard deviation of every mode; default 0.02 for the ring, 0.05 for the grid.
        radius: radius of the ring (ring only).
        num_modes: number of modes on the ring (ring only; the grid always has 25).
    """

    sample_shape = (2,)

    def __init__(
        self,
        layout: Literal["ring", "grid"] = "ring",
        num_samples: int = 20000,
        std: Optional[float] = None,
        radius: float = 2.0,
        num_modes: int = 8,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if layout not in DEFAULT_STD:
            raise ConfigError(f'--data.layout must be "ring" or "grid", got {layout!r}')
        if num_samples < 2:
            raise ConfigError(f"--data.num_samples must be >= 2, got {num_samples}")
        if std is not None and std <= 0:
            raise ConfigError(f"--data.std must be > 0, got {std}")
        if radius <= 0:
            raise ConfigError(f"--data.radius must be > 0, got {radius}")
        if num_modes < 1:
            raise ConfigError(f"--data.num_modes must be >= 1, got {num_modes}")
        self.layout = layout
        self.num_samples = num_samples
        self.std = DEFAULT_STD[layout] if std is None else std
        self.centers = mixture_centers(layout, num_modes, radius)
        self.num_classes = len(self.centers)

    @override
    def load_splits(self) -> tuple[Dataset, Dataset]:
        generator = torch.Generator().manual_seed(self.seed)
        labels = torch.randint(len(self.centers), (self.num_samples,), generator=generator)
        noise = torch.randn(self.num_samples, 2, generator=generator)
        points = self.centers[labels] + self.std * noise
        return seeded_split(TensorDataset(points, labels), self.val_fraction, self.seed)
