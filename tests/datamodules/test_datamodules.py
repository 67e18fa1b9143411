"""Behaviour of the datamodules on tiny files written here: shapes, value ranges, labels,
splits, and the one-sentence errors. Nothing is downloaded."""

from __future__ import annotations

import logging
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from torch.utils.data import Subset

from datamodules import CIFAR10DataModule, DigitsDataModule, FashionMNISTDataModule, GaussianMixtureDataModule, ImageFolderDataModule, MNISTDataModule
from gan_lightning.errors import ConfigError, DataError


def base_indices(dataset) -> list[int]:
    """Indices into the underlying full dataset, through any chain of Subsets."""
    if not isinstance(dataset, Subset):
        return list(range(len(dataset)))
    inner = base_indices(dataset.dataset)
    return [inner[i] for i in dataset.indices]


def first_batch(dm):
    dm.setup("fit")
    return next(iter(dm.train_dataloader()))


@pytest.fixture
def no_download(monkeypatch):
    """Fail the test if anything tries to fetch a file."""

    def refuse(*args, **kwargs):
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(torchvision.datasets.MNIST, "download", refuse)
    monkeypatch.setattr(torchvision.datasets.CIFAR10, "download", refuse)
    monkeypatch.setattr(torchvision.datasets.utils, "download_url", refuse)


# --- digits -------------------------------------------------------------------------------


def test_digits_shape_range_and_split_sizes():
    dm = DigitsDataModule(image_size=16, batch_size=32, val_fraction=0.1)
    images, labels = first_batch(dm)
    assert images.shape == (32, 1, 16, 16) and images.dtype == torch.float32
    assert labels.dtype == torch.long and set(labels.tolist()) <= set(range(10))
    assert images.min() >= -1.0 and images.max() <= 1.0
    # Blank background and full strokes both occur, so the whole range is used.
    assert images.min() == -1.0 and images.max() > 0.9
    assert len(dm.val_set) == 180 and len(dm.train_set) == 1797 - 180
    assert dm.sample_shape == (1, 16, 16)


def test_digits_val_split_is_fixed_and_disjoint_from_train():
    a, b = DigitsDataModule(seed=3), DigitsDataModule(seed=3)
    a.setup("fit")
    b.setup("fit")
    assert base_indices(a.val_set) == base_indices(b.val_set)
    assert not set(base_indices(a.val_set)) & set(base_indices(a.train_set))
    # The training fraction must not leak validation samples either.
    c = DigitsDataModule(seed=3, train_fraction=0.3)
    c.setup("fit")
    assert base_indices(c.val_set) == base_indices(a.val_set)
    assert not set(base_indices(c.val_set)) & set(base_indices(c.train_set))


def test_digits_train_fractions_are_nested_and_sized():
    sets = {}
    for fraction in (0.25, 0.5, 1.0):
        dm = DigitsDataModule(seed=1, train_fraction=fraction)
        dm.setup("fit")
        sets[fraction] = set(base_indices(dm.train_set))
    full = len(sets[1.0])
    assert len(sets[0.25]) == round(full * 0.25) and len(sets[0.5]) == round(full * 0.5)
    assert sets[0.25] < sets[0.5] < sets[1.0]


@pytest.mark.parametrize(
    "kwargs, flag",
    [
        ({"train_fraction": 1.5}, "--data.train_fraction"),
        ({"train_fraction": 0.0}, "--data.train_fraction"),
        ({"val_fraction": 0.0}, "--data.val_fraction"),
        ({"batch_size": 0}, "--data.batch_size"),
    ],
)
def test_bad_base_values_name_the_flag(kwargs, flag):
    with pytest.raises(ConfigError, match=flag):
        DigitsDataModule(**kwargs)
    with pytest.raises(ConfigError, match=flag):
        GaussianMixtureDataModule(**kwargs)


# --- MNIST and Fashion-MNIST ----------------------------------------------------------------


def write_idx(path: Path, array: np.ndarray) -> None:
    """An IDX file: zero bytes, type 0x08 (ubyte), number of dims, big-endian dims, data."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def write_mnist(root: Path, folder: str, n_train: int = 20, n_test: int = 10) -> dict:
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        images[:, 0, 0] = 255  # a known white and a known black pixel in every image
        images[:, 0, 1] = 0
        labels = np.arange(n, dtype=np.uint8) % 10
        write_idx(root / folder / "raw" / f"{split}-images-idx3-ubyte", images)
        write_idx(root / folder / "raw" / f"{split}-labels-idx1-ubyte", labels)
        arrays[split] = (images, labels)
    return arrays


@pytest.mark.parametrize("cls, folder", [(MNISTDataModule, "MNIST"), (FashionMNISTDataModule, "FashionMNIST")])
@pytest.mark.slow
def test_mnist_reads_idx_files_exactly(tmp_path, no_download, cls, folder):
    arrays = write_mnist(tmp_path, folder)
    dm = cls(root=str(tmp_path), image_size=28, batch_size=4)
    images, labels = first_batch(dm)
    assert images.shape == (4, 1, 28, 28) and labels.dtype == torch.long
    assert len(dm.train_set) == 20 and len(dm.val_set) == 10

    # The validation split is the test file, in order, pixel for pixel.
    val_images = torch.stack([dm.val_set[i][0] for i in range(10)])
    val_labels = torch.stack([dm.val_set[i][1] for i in range(10)])
    expected = torch.from_numpy(arrays["t10k"][0]).float().unsqueeze(1) / 127.5 - 1
    torch.testing.assert_close(val_images, expected)
    assert (val_images[:, 0, 0, 0] == 1.0).all() and (val_images[:, 0, 0, 1] == -1.0).all()
    assert val_labels.tolist() == arrays["t10k"][1].tolist()
    assert [int(dm.train_set[i][1]) for i in range(20)] == arrays["train"][1].tolist()


def test_mnist_resizes_to_image_size(tmp_path, no_download):
    write_mnist(tmp_path, "MNIST")
    dm = MNISTDataModule(root=str(tmp_path), image_size=32, batch_size=4)
    images, _ = first_batch(dm)
    assert images.shape == (4, 1, 32, 32) and dm.sample_shape == (1, 32, 32)
    assert images.min() >= -1.0 and images.max() <= 1.0


@pytest.mark.parametrize(
    "cls, folder", [(MNISTDataModule, "MNIST"), (FashionMNISTDataModule, "FashionMNIST"), (CIFAR10DataModule, "cifar-10-batches-py")]
)
def test_missing_files_name_the_flag_and_path_without_downloading(tmp_path, no_download, cls, folder):
    root = tmp_path / "nowhere"
    dm = cls(root=str(root))
    dm.prepare_data()  # download=False: must not fetch anything
    with pytest.raises(DataError) as info:
        dm.setup("fit")
    message = str(info.value)
    assert "--data.root" in message and str(root / folder) in message and "--data.download true" in message
    assert not root.exists()


def test_mnist_partial_folder_names_the_missing_file(tmp_path, no_download):
    write_mnist(tmp_path, "MNIST")
    (tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte"):
        MNISTDataModule(root=str(tmp_path)).setup("fit")


def test_corrupt_idx_file_is_a_data_error(tmp_path, no_download):
    write_mnist(tmp_path, "MNIST")
    (tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte").write_bytes(b"not an idx file")
    with pytest.raises(DataError, match="unreadable"):
        MNISTDataModule(root=str(tmp_path)).setup("fit")


def test_download_true_fetches_only_when_files_are_missing(tmp_path, monkeypatch):
    calls = []

    def fake_download(self):
        calls.append(self.root)
        write_mnist(Path(self.root), "MNIST")

    monkeypatch.setattr(torchvision.datasets.MNIST, "download", fake_download)
    dm = MNISTDataModule(root=str(tmp_path), download=True, image_size=28)
    dm.prepare_data()
    dm.prepare_data()  # files are there now: no second download
    dm.setup("fit")
    assert len(calls) == 1 and len(dm.train_set) == 20


def test_failed_download_is_a_data_error(tmp_path, monkeypatch):
    def offline(self):
        raise RuntimeError("no network")

    monkeypatch.setattr(torchvision.datasets.CIFAR10, "download", offline)
    with pytest.raises(DataError, match="--data.root.*no network"):
        CIFAR10DataModule(root=str(tmp_path), download=True).prepare_data()


# --- CIFAR-10 --------------------------------------------------------------------------------


def write_cifar(root: Path, per_batch: int = 4) -> dict:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)
        data[:, 0] = 255  # red channel, top-left pixel
        data[:, 1024] = 0  # green channel, top-left pixel
        labels = rng.integers(0, 10, size=per_batch).tolist()
        with open(folder / name, "wb") as f:
            pickle.dump({b"data": data, b"labels": labels, b"batch_label": name.encode()}, f)
        batches[name] = (data, labels)
    return batches


def test_cifar_reads_pickle_batches(tmp_path, no_download):
    batches = write_cifar(tmp_path)
    dm = CIFAR10DataModule(root=str(tmp_path), batch_size=5)
    images, labels = first_batch(dm)
    assert images.shape == (5, 3, 32, 32) and labels.dtype == torch.long
    assert len(dm.train_set) == 20 and len(dm.val_set) == 4

    data, expected_labels = batches["test_batch"]
    val_images = torch.stack([dm.val_set[i][0] for i in range(4)])
    expected = torch.from_numpy(data).float().view(4, 3, 32, 32) / 127.5 - 1
    torch.testing.assert_close(val_images, expected)
    assert (val_images[:, 0, 0, 0] == 1.0).all() and (val_images[:, 1, 0, 0] == -1.0).all()
    assert [int(dm.val_set[i][1]) for i in range(4)] == expected_labels
    train_labels = [label for i in range(1, 6) for label in batches[f"data_batch_{i}"][1]]
    assert [int(dm.train_set[i][1]) for i in range(20)] == train_labels


def test_cifar_downsizes(tmp_path, no_download):
    write_cifar(tmp_path)
    dm = CIFAR10DataModule(root=str(tmp_path), image_size=16, batch_size=5)
    images, _ = first_batch(dm)
    assert images.shape == (5, 3, 16, 16) and images.min() >= -1.0 and images.max() <= 1.0


# --- image folder ----------------------------------------------------------------------------


def write_image(path: Path, size: tuple[int, int], color: tuple[int, int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)


def test_image_folder_labels_from_subfolders(tmp_path):
    write_image(tmp_path / "cats" / "a.png", (40, 30), (255, 0, 0))
    write_image(tmp_path / "cats" / "deeper" / "b.JPG", (30, 40), (255, 0, 0))
    write_image(tmp_path / "dogs" / "c.bmp", (20, 20), (0, 0, 255))
    write_image(tmp_path / "dogs" / "d.webp", (20, 20), (0, 0, 255))
    (tmp_path / "dogs" / "notes.txt").write_text("not an image")
    (tmp_path / "dogs" / "._e.png").write_bytes(b"macOS resource fork, not an image")

    dm = ImageFolderDataModule(root=str(tmp_path), image_size=16, val_fraction=0.25, batch_size=2)
    assert dm.num_classes == 2 and dm.sample_shape == (3, 16, 16)
    dm.setup("fit")
    assert len(dm.train_set) == 3 and len(dm.val_set) == 1
    samples = [dm.train_set[i] for i in range(3)] + [dm.val_set[0]]
    for image, label in samples:
        assert image.shape == (3, 16, 16)
        # cats (index 0) are pure red, dogs (index 1) pure blue: 255 -> 1, 0 -> -1
        # (up to the rounding of the lossy jpg and webp encoders).
        red, blue = (1.0, -1.0) if label == 0 else (-1.0, 1.0)
        torch.testing.assert_close(image[0], torch.full((16, 16), red), atol=0.02, rtol=0)
        torch.testing.assert_close(image[2], torch.full((16, 16), blue), atol=0.02, rtol=0)
    assert sorted(int(label) for _, label in samples) == [0, 0, 1, 1]
    images, labels = next(iter(dm.train_dataloader()))
    assert images.shape == (2, 3, 16, 16) and labels.dtype == torch.long


def test_image_folder_flat_greyscale(tmp_path):
    for i in range(5):
        write_image(tmp_path / f"{i}.jpeg", (50, 25), (255, 255, 255))
    dm = ImageFolderDataModule(root=str(tmp_path), image_size=8, channels=1, batch_size=2)
    images, labels = first_batch(dm)
    assert images.shape == (2, 1, 8, 8) and labels.tolist() == [0, 0]
    assert dm.num_classes is None and len(dm.train_set) + len(dm.val_set) == 5
    assert torch.allclose(images, torch.ones_like(images), atol=0.02)  # jpeg is lossy


def test_image_folder_mixed_layout_is_unlabelled(tmp_path, caplog):
    write_image(tmp_path / "stray.png", (8, 8), (0, 0, 0))
    write_image(tmp_path / "a" / "x.png", (8, 8), (0, 0, 0))
    write_image(tmp_path / "b" / "y.png", (8, 8), (0, 0, 0))
    dm = ImageFolderDataModule(root=str(tmp_path), image_size=8)
    assert [r.name for r in caplog.records if r.levelno >= logging.WARNING and "not used as labels" in r.getMessage()] == ["datamodules.image_folder"]
    assert dm.num_classes is None and dm.labels == [0, 0, 0]


def test_unreadable_image_names_the_file(tmp_path):
    write_image(tmp_path / "good.png", (8, 8), (0, 0, 0))
    (tmp_path / "bad.png").write_bytes(b"truncated")
    dm = ImageFolderDataModule(root=str(tmp_path), image_size=8)
    dm.setup("fit")
    dataset = dm.train_set.dataset
    with pytest.raises(DataError, match="bad.png"):
        dataset[dataset.paths.index(tmp_path / "bad.png")]


def test_image_folder_split_is_reproducible(tmp_path):
    for i in range(10):
        write_image(tmp_path / f"{i}.png", (8, 8), (i * 20, 0, 0))
    splits = []
    for _ in range(2):
        dm = ImageFolderDataModule(root=str(tmp_path), image_size=8, val_fraction=0.3)
        dm.setup("fit")
        splits.append([dm.val_set.dataset.paths[i] for i in dm.val_set.indices])
    assert splits[0] == splits[1] and len(splits[0]) == 3


@pytest.mark.parametrize("make", ["missing", "empty", "one_image"])
def test_image_folder_errors_name_the_flag_and_path(tmp_path, make):
    root = tmp_path / "images"
    if make != "missing":
        root.mkdir()
        (root / "readme.txt").write_text("no images here")
    if make == "one_image":
        write_image(root / "only.png", (8, 8), (0, 0, 0))
    with pytest.raises(DataError) as info:
        ImageFolderDataModule(root=str(root))
    assert "--data.root" in str(info.value) and str(root) in str(info.value)


def test_image_folder_bad_channels(tmp_path):
    with pytest.raises(ConfigError, match="--data.channels"):
        ImageFolderDataModule(root=str(tmp_path), channels=4)


# --- Gaussian mixture ------------------------------------------------------------------------


@pytest.mark.parametrize("layout, modes, std", [("ring", 8, 0.02), ("grid", 25, 0.05)])
def test_gaussian_mixture_points_sit_on_their_modes(layout, modes, std):
    dm = GaussianMixtureDataModule(layout=layout, num_samples=2000, batch_size=100)
    assert dm.num_classes == modes and dm.centers.shape == (modes, 2) and dm.std == std
    points, labels = first_batch(dm)
    assert points.shape == (100, 2) and labels.dtype == torch.long
    assert len(dm.train_set) == 1800 and len(dm.val_set) == 200

    all_points = torch.stack([dm.train_set[i][0] for i in range(len(dm.train_set))])
    all_labels = torch.stack([dm.train_set[i][1] for i in range(len(dm.train_set))])
    assert ((all_points - dm.centers[all_labels]).abs() < 5 * std).all()
    assert set(all_labels.tolist()) == set(range(modes))  # every mode is populated


def test_gaussian_mixture_geometry():
    ring = GaussianMixtureDataModule(layout="ring", num_modes=6, radius=3.0)
    torch.testing.assert_close(ring.centers.norm(dim=1), torch.full((6,), 3.0))
    grid = GaussianMixtureDataModule(layout="grid", std=0.1)
    assert grid.std == 0.1
    assert sorted(set(grid.centers[:, 0].tolist())) == [-4.0, -2.0, 0.0, 2.0, 4.0]
    assert len({tuple(c) for c in grid.centers.tolist()}) == 25


def test_gaussian_mixture_is_deterministic_per_seed():
    def data(seed):
        dm = GaussianMixtureDataModule(num_samples=500, seed=seed)
        dm.setup("fit")
        return torch.stack([dm.train_set[i][0] for i in range(len(dm.train_set))])

    assert torch.equal(data(0), data(0))
    assert not torch.equal(data(0), data(1))


@pytest.mark.parametrize(
    "kwargs, flag",
    [({"std": 0.0}, "--data.std"), ({"num_samples": 1}, "--data.num_samples"), ({"layout": "spiral"}, "--data.layout")],
)
def test_gaussian_mixture_bad_values(kwargs, flag):
    with pytest.raises(ConfigError, match=flag):
        GaussianMixtureDataModule(**kwargs)
