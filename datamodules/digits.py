"""scikit-learn's bundled 8x8 handwritten digits: the default data, no download needed."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, TensorDataset
from typing_extensions import override

from datamodules.base import GANDataModule, seeded_split
from gan_lightning.errors import ConfigError


def load_digits_tensors(image_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """All 1797 digits as ``(n, 1, image_size, image_size)`` in [-1, 1], and their labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.as_tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    if image_size != 8:
        images = F.interpolate(images, size=(image_size, image_size), mode="bilinear", align_corners=False)
    images = images.clamp(0, 1) * 2 - 1
    return images, torch.as_tensor(digits.target, dtype=torch.long)


class DigitsDataModule(GANDataModule):
    """The 1797 8x8 digits of scikit-learn, resized (bilinear) to ``image_size`` and scaled to [-1, 1].

    Args:
        image_size: side of the square images, >= 8 (32 for the DCGAN preset, 28 for the MLP GAN).
    """

    num_classes = 10

    def __init__(self, image_size: int = 32, **kwargs) -> None:
        super().__init__(**kwargs)
        if image_size < 8:
            raise ConfigError(f"--data.image_size must be >= 8 for the digits, got {image_size}")
        self.image_size = image_size
        self.sample_shape = (1, image_size, image_size)

    @override
    def load_splits(self) -> tuple[Dataset, Dataset]:
        images, labels = load_digits_tensors(self.image_size)
        return seeded_split(TensorDataset(images, labels), self.val_fraction, self.seed)
