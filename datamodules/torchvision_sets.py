"""MNIST, Fashion-MNIST and CIFAR-10 from files on disk, held in memory, with their
official test split as the fixed validation split. Downloads only when asked to."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from torch.utils.data import Dataset
from typing_extensions import override

from datamodules.base import GANDataModule
from datamodules.cifar_pickle import load_cifar_batch
from gan_lightning.errors import ConfigError, DataError

# Images are resized in chunks so that upsampling a whole training split never needs a
# second full-size float copy of it.
_RESIZE_CHUNK = 4096


def resize_uint8(images: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear (antialiased) resize of ``(n, c, h, w)`` uint8 images to ``(n, c, size, size)`` uint8."""
    if tuple(images.shape[-2:]) == (size, size):
        return images
    out = torch.empty((images.shape[0], images.shape[1], size, size), dtype=torch.uint8)
    for start in range(0, images.shape[0], _RESIZE_CHUNK):
        chunk = images[start : start + _RESIZE_CHUNK].float()
        resized = F.interpolate(chunk, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        out[start : start + _RESIZE_CHUNK] = resized.round().clamp(0, 255).to(torch.uint8)
    return out


class UInt8ImageDataset(Dataset):
    """In-memory uint8 images served as float in [-1, 1].

    Kept as uint8 rather than a float TensorDataset: a quarter of the memory, which counts
    for CIFAR-10 at 64x64 (2.4 GB as float) held once per DDP process.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.images = images
        self.labels = labels.long()

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[index].float() / 127.5 - 1.0, self.labels[index]


class TorchvisionImageDataModule(GANDataModule):
    """Shared base: subclasses name their files and read one split as uint8 ``(n, c, h, w)``.

    Args:
        root: folder that holds the dataset's own folder (e.g. ``<root>/MNIST/raw``).
        download: download the files into ``root`` when they are missing (needs a network).
        image_size: side of the square images; resized (bilinear) when it differs from the native size.
    """

    dataset_name: str
    folder_name: str
    channels: int
    torchvision_class: type
    num_classes = 10

    def __init__(self, root: str = "data", download: bool = False, image_size: int = 32, **kwargs) -> None:
        super().__init__(**kwargs)
        if image_size < 1:
            raise ConfigError(f"--data.image_size must be >= 1, got {image_size}")
        if Path(root).exists() and not Path(root).is_dir():
            raise DataError(f"--data.root {root} is a file; give the folder that holds {self.folder_name}/.")
        self.root = root
        self.download = download
        self.image_size = image_size
        self.sample_shape = (self.channels, image_size, image_size)

    @property
    def folder(self) -> Path:
        return Path(self.root) / self.folder_name

    def required_files(self) -> list[str]:
        """File names inside :attr:`folder` that must exist."""
        raise NotImplementedError

    def read_split(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """One split as uint8 images ``(n, c, h, w)`` and integer labels ``(n,)``."""
        raise NotImplementedError

    def missing_files(self) -> list[str]:
        return [name for name in self.required_files() if not (self.folder / name).is_file()]

    @override
    def prepare_data(self) -> None:
        # Lightning calls this on one process per node, so DDP ranks never download twice.
        if not self.download or not self.missing_files():
            return
        try:
            self.torchvision_class(self.root, train=True, download=True)
        except Exception as err:
            raise DataError(
                f"Downloading {self.dataset_name} into {self.root} (--data.root) failed ({err}); "
                f"check the network, or copy the files into {self.folder} and pass --data.download false."
            ) from err

    @override
    def load_splits(self) -> tuple[Dataset, Dataset]:
        missing = self.missing_files()
        if missing:
            raise DataError(
                f"{self.dataset_name} files are missing: looked for {', '.join(missing)} in {self.folder}, "
                f"under the folder that --data.root points to ({self.root}); pass --data.download true "
                f"on a machine with a network, or copy the files there."
            )
        return tuple(self._dataset(train) for train in (True, False))

    def _dataset(self, train: bool) -> UInt8ImageDataset:
        try:
            images, labels = self.read_split(train)
        except DataError:  # already names the file and what is wrong with it
            raise
        except Exception as err:  # a truncated or foreign file fails deep inside a parser
            split = "training" if train else "test"
            detail = f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
            raise DataError(
                f"The {self.dataset_name} {split} files in {self.folder} (--data.root {self.root}) "
                f"are unreadable ({detail}); delete them and download or copy them again."
            ) from err
        return UInt8ImageDataset(resize_uint8(images, self.image_size), labels)


class MNISTDataModule(TorchvisionImageDataModule):
    """MNIST handwritten digits (60000 train, 10000 test, 28x28 greyscale), scaled to [-1, 1].

    Reads the four unzipped IDX files in ``<root>/MNIST/raw/``; the 10000 test images are the
    validation split.

    Args:
        root: folder that holds ``MNIST/raw/`` (train-images-idx3-ubyte, train-labels-idx1-ubyte,
            t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte).
        download: download the files into ``root`` when they are missing (needs a network).
        image_size: side of the square images; resized (bilinear) when it is not 28.
    """

    dataset_name = "MNIST"
    channels = 1
    torchvision_class = torchvision.datasets.MNIST

    @property
    def folder_name(self) -> str:
        # torchvision names the folder after the class (MNIST, FashionMNIST).
        return f"{self.torchvision_class.__name__}/raw"

    @override
    def required_files(self) -> list[str]:
        return [f"{split}-{kind}" for split in ("train", "t10k") for kind in ("images-idx3-ubyte", "labels-idx1-ubyte")]

    @override
    def read_split(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        # torchvision checks only that the raw files exist (no checksum), so small or
        # re-packed IDX files load as they are.
        split = self.torchvision_class(self.root, train=train, download=False)
        return split.data.unsqueeze(1), split.targets


class FashionMNISTDataModule(MNISTDataModule):
    """Fashion-MNIST clothing images (60000 train, 10000 test, 28x28 greyscale), scaled to [-1, 1].

    Reads the four unzipped IDX files in ``<root>/FashionMNIST/raw/``; the 10000 test images
    are the validation split.

    Args:
        root: folder that holds ``FashionMNIST/raw/`` (train-images-idx3-ubyte, train-labels-idx1-ubyte,
            t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte).
        download: download the files into ``root`` when they are missing (needs a network).
        image_size: side of the square images; resized (bilinear) when it is not 28.
    """

    dataset_name = "Fashion-MNIST"
    torchvision_class = torchvision.datasets.FashionMNIST


class CIFAR10DataModule(TorchvisionImageDataModule):
    """CIFAR-10 (50000 train, 10000 test, 32x32 RGB), scaled to [-1, 1].

    Reads the python batches in ``<root>/cifar-10-batches-py/``; ``test_batch`` is the
    validation split.

    Args:
        root: folder that holds ``cifar-10-batches-py/`` (data_batch_1 to data_batch_5 and test_batch).
        download: download the files into ``root`` when they are missing (needs a network).
        image_size: side of the square images; resized (bilinear) when it is not 32.
    """

    dataset_name = "CIFAR-10"
    folder_name = "cifar-10-batches-py"
    channels = 3
    torchvision_class = torchvision.datasets.CIFAR10
    train_batches = [f"data_batch_{i}" for i in range(1, 6)]
    test_batches = ["test_batch"]

    @override
    def required_files(self) -> list[str]:
        return self.train_batches + self.test_batches

    @override
    def read_split(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        # Read the batches ourselves: torchvision.datasets.CIFAR10 refuses any file whose
        # md5 differs from the official one, and also wants batches.meta.
        images, labels = [], []
        for name in self.train_batches if train else self.test_batches:
            batch = load_cifar_batch(self.folder / name)  # refuses a pickle that would run code
            images.append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            labels.append(np.asarray(batch[b"labels"], dtype=np.int64))
        return torch.from_numpy(np.concatenate(images)), torch.from_numpy(np.concatenate(labels))
