"""What every GAN datamodule shares: a fixed validation split, training on a fraction of
the data, and the sample shape the GANModule checks its generator against."""

from __future__ import annotations

from typing import Optional

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, Subset
from typing_extensions import override

from gan_lightning.errors import ConfigError


def seeded_split(dataset: Dataset, val_fraction: float, seed: int) -> tuple[Subset, Subset]:
    """Split into (train, val) by a permutation that depends only on ``seed`` and the size."""
    n = len(dataset)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    n_val = min(max(1, round(n * val_fraction)), n - 1)  # both splits keep at least one sample
    return Subset(dataset, perm[n_val:]), Subset(dataset, perm[:n_val])


class GANDataModule(pl.LightningDataModule):
    """Base class. Subclasses implement :meth:`load_splits` and set ``sample_shape``.

    Batches are ``(samples, labels)``; unlabelled data uses label 0.

    Args:
        batch_size: samples per batch on each device.
        num_workers: DataLoader worker processes (0 loads in the main process).
        train_fraction: share of the training split used, in (0, 1]; smaller fractions are
            subsets of larger ones (same seed), for low-data experiments.
        val_fraction: share held out for validation where the source has no official split, in (0, 1).
        seed: seed of the validation split and of the training fraction.
    """

    sample_shape: tuple[int, ...]
    num_classes: Optional[int] = None

    def __init__(
        self,
        batch_size: int = 64,
        num_workers: int = 0,
        train_fraction: float = 1.0,
        val_fraction: float = 0.1,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise ConfigError(f"--data.batch_size must be >= 1, got {batch_size}")
        if num_workers < 0:  # the DataLoader would refuse it only when training starts, in a traceback
            raise ConfigError(f"--data.num_workers must be an integer >= 0 (0 loads in the main process), got {num_workers}")
        if not 0.0 < train_fraction <= 1.0:
            raise ConfigError(f"--data.train_fraction must be in (0, 1], got {train_fraction}")
        if not 0.0 < val_fraction < 1.0:
            raise ConfigError(f"--data.val_fraction must be in (0, 1), got {val_fraction}")
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.train_fraction = train_fraction
        self.val_fraction = val_fraction
        self.seed = seed
        self.train_set: Optional[Dataset] = None
        self.val_set: Optional[Dataset] = None

    def load_splits(self) -> tuple[Dataset, Dataset]:
        """Return the full (train, val) datasets; use :func:`seeded_split` when there is no official split."""
        raise NotImplementedError

    @override
    def setup(self, stage: Optional[str] = None) -> None:
        if self.train_set is not None:
            return
        train, val = self.load_splits()
        if self.train_fraction < 1.0:
            n = max(1, round(len(train) * self.train_fraction))
            perm = torch.randperm(len(train), generator=torch.Generator().manual_seed(self.seed + 1)).tolist()
            train = Subset(train, perm[:n])
        self.train_set, self.val_set = train, val

    def _loader(self, dataset: Dataset, train: bool) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=train,
            # A last batch of one sample breaks BatchNorm in training and biases the GAN losses.
            drop_last=train and len(dataset) > self.batch_size,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    @override
    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, train=True)

    @override
    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, train=False)
