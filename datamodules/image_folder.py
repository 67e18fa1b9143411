"""Any folder of images on disk, loaded lazily; first-level subfolders become labels."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import torch
from torch.utils.data import Dataset
from torchvision import transforms
from typing_extensions import override

from datamodules.base import GANDataModule, seeded_split
from datamodules.folder_scan import FolderScan, scan_folder
from datamodules.image_decoding import read_image
from gan_lightning.errors import ConfigError, DataError
from gan_lightning.logs import get_logger

log = get_logger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


def scan_images(root: Path, follow_links: bool = False) -> FolderScan:
    """Image files under ``root``, recursively, each real file once, in a sorted (hence
    reproducible) order (see :func:`datamodules.folder_scan.scan_folder`)."""
    return scan_folder(root, lambda name: name.lower().endswith(IMAGE_EXTENSIONS), follow_links)


def label_images(root: Path, paths: list[Path], folders: Sequence[str]) -> tuple[list[int], list[str]]:
    """Label each image by the index of its first-level subfolder among all of them (sorted names).

    With any image lying directly in ``root`` the folder is treated as unlabelled (all 0).
    ``folders``: the first-level subfolders the scan walked (a second link to one of them is
    not a class of its own).
    """
    tops = [p.relative_to(root).parts[0] if len(p.relative_to(root).parts) > 1 else None for p in paths]
    if None in tops:
        if any(t is not None for t in tops):
            log.warning(
                f"{root} holds images both directly and in subfolders, so the subfolders are not used as labels."
            )
        return [0] * len(paths), []
    # Every first-level subfolder is a class, empty ones included (as torchvision's ImageFolder
    # does): a synthetic dataset with no sample of one class keeps the other labels in place.
    classes = sorted({*tops, *folders})
    index = {name: i for i, name in enumerate(classes)}
    return [index[t] for t in tops], classes


class ImageFileDataset(Dataset):
    """Images read from disk on each access and transformed to ``(channels, size, size)`` in [-1, 1]."""

    def __init__(self, paths: list[Path], labels: list[int], image_size: int, channels: int) -> None:
        self.paths = paths
        self.labels = labels
        self.channels = channels
        self.transform = transforms.Compose(
            [
                transforms.Resize(image_size, interpolation=transforms.InterpolationMode.BILINEAR, antialias=True),
                transforms.CenterCrop(image_size),
                transforms.ToTensor(),
                transforms.Normalize([0.5] * channels, [0.5] * channels),
            ]
        )

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = read_image(self.paths[index], self.channels)
        return self.transform(image), torch.tensor(self.labels[index], dtype=torch.long)


class ImageFolderDataModule(GANDataModule):
    """Any folder of images (png, jpg, jpeg, bmp, webp), searched recursively.

    Images are resized on their shorter side, center-cropped to ``image_size`` and scaled to [-1, 1].
    If every image lies in a first-level subfolder, the label is that subfolder's index in
    sorted name order; otherwise every label is 0. A seeded ``val_fraction`` of the images is
    the validation split.

    Args:
        root: the image folder.
        image_size: side of the square images.
        channels: 1 (greyscale) or 3 (RGB); images are converted to it (16-bit images are
            scaled to 8 bits, transparent pixels are shown on white).
        follow_links: also read links that lead outside ``root`` (links inside it are always
            read, each real file once).
    """

    def __init__(self, root: str, image_size: int = 64, channels: int = 3, follow_links: bool = False, **kwargs) -> None:
        super().__init__(**kwargs)
        if image_size < 1:
            raise ConfigError(f"--data.image_size must be >= 1, got {image_size}")
        if channels not in (1, 3):
            raise ConfigError(f"--data.channels must be 1 (greyscale) or 3 (RGB), got {channels}")
        self.root = root
        self.image_size = image_size
        self.channels = channels
        self.follow_links = follow_links
        self.sample_shape = (channels, image_size, image_size)
        # Scanned here, not in setup, so a wrong --data.root fails before any model is built
        # and num_classes is known to whoever builds a conditional model.
        self.paths, self.labels, self.classes = self._scan()
        self.num_classes: Optional[int] = len(self.classes) if len(self.classes) >= 2 else None

    def _scan(self) -> tuple[list[Path], list[int], list[str]]:
        root = Path(self.root)
        if root.exists() and not root.is_dir():
            raise DataError(f"--data.root {root} is a file; give the folder that holds the images.")
        if not root.is_dir():
            raise DataError(f"The image folder {root} given by --data.root does not exist.")
        scan = scan_images(root, self.follow_links)
        paths = scan.files
        if len(paths) < 2:
            raise DataError(
                f"The image folder {root} given by --data.root holds {len(paths)} images "
                f"({', '.join(IMAGE_EXTENSIONS)}), and at least 2 are needed to split off validation."
            )
        labels, classes = label_images(root, paths, scan.folders)
        return paths, labels, classes

    @override
    def load_splits(self) -> tuple[Dataset, Dataset]:
        dataset = ImageFileDataset(self.paths, self.labels, self.image_size, self.channels)
        return seeded_split(dataset, self.val_fraction, self.seed)
