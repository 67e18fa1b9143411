"""Data sources, one per file; every datamodule yields ``(samples, labels)`` batches."""

from datamodules.base import GANDataModule
from datamodules.digits import DigitsDataModule
from datamodules.gaussian_mixture import GaussianMixtureDataModule
from datamodules.image_folder import ImageFolderDataModule
from datamodules.torchvision_sets import CIFAR10DataModule, FashionMNISTDataModule, MNISTDataModule

__all__ = [
    "GANDataModule",
    "DigitsDataModule",
    "MNISTDataModule",
    "FashionMNISTDataModule",
    "CIFAR10DataModule",
    "ImageFolderDataModule",
    "GaussianMixtureDataModule",
]
