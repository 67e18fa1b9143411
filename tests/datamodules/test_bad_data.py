"""Data files a user may really have: CIFAR-10 batches crafted to run code, images in every
Pillow mode and bit depth, truncated or foreign files, and a --data.root that is a file.
Each is refused in one sentence that names the file, or converted as the image looks."""

from __future__ import annotations

import os
import pickle
import struct
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from datamodules import CIFAR10DataModule, ImageFolderDataModule, MNISTDataModule
from datamodules.cifar_pickle import load_cifar_batch
from datamodules.image_decoding import read_image
from datamodules.image_folder import ImageFileDataset
from gan_lightning.commands.console import run, sentence
from gan_lightning.errors import DataError

# --- CIFAR-10: a restricted unpickler ----------------------------------------------------------


class Payload:
    """Pickles as ``func(*args)``: what a crafted batch would run while it loads."""

    def __init__(self, func, *args) -> None:
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def touch_payloads(marker: Path) -> dict[str, Payload]:
    return {
        "os.system": Payload(os.system, f"touch {marker}"),
        "subprocess.call": Payload(subprocess.call, ["touch", str(marker)]),
        "builtins.exec": Payload(exec, f"open({str(marker)!r}, 'w').close()"),
        "builtins.eval": Payload(eval, f"open({str(marker)!r}, 'w').close()"),
    }


def write_batches(folder: Path, per_batch: int = 4, protocol: int = pickle.DEFAULT_PROTOCOL) -> dict[str, np.ndarray]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    written = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)
        batch = {b"batch_label": name.encode(), b"labels": [i % 10 for i in range(per_batch)], b"data": data, b"filenames": [b"x.png"] * per_batch}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=protocol))
        written[name] = data
    return written


@pytest.mark.parametrize("payload", ["os.system", "subprocess.call", "builtins.exec", "builtins.eval"])
@pytest.mark.parametrize("where", ["data", "labels"])
def test_a_cifar_batch_that_would_run_code_is_refused_naming_the_file_and_the_global(tmp_path, payload, where):
    folder = tmp_path / "cifar-10-batches-py"
    write_batches(folder)
    marker = tmp_path / "MARKER"
    crafted = {b"data": np.zeros((1, 3072), np.uint8), b"labels": [0]}
    crafted[where.encode()] = touch_payloads(marker)[payload]
    (folder / "data_batch_1").write_bytes(pickle.dumps(crafted, protocol=2))

    with pytest.raises(DataError) as refused:
        CIFAR10DataModule(root=str(tmp_path)).setup("fit")
    message = str(refused.value)
    assert not marker.exists(), "the crafted batch ran its code"
    assert str(folder / "data_batch_1") in message
    func = touch_payloads(marker)[payload].func
    assert f"{func.__module__}.{func.__name__}" in message and "a CIFAR-10 batch never contains" in message
    assert "\n" not in message


def test_a_global_from_an_allowed_module_is_still_refused(tmp_path):
    # numpy itself is allowed only for its array and dtype builders, not e.g. numpy.load
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({b"data": Payload(np.load, str(tmp_path / "x.npy"))}))
    with pytest.raises(DataError, match=r"asks to load numpy\.load"):
        load_cifar_batch(path)


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_a_genuine_cifar_batch_loads_at_every_pickle_protocol(tmp_path, protocol):
    written = write_batches(tmp_path / "cifar-10-batches-py", protocol=protocol)
    batch = load_cifar_batch(tmp_path / "cifar-10-batches-py" / "test_batch")
    np.testing.assert_array_equal(batch[b"data"], written["test_batch"])
    assert batch[b"labels"] == [0, 1, 2, 3] and batch[b"filenames"] == [b"x.png"] * 4
    dm = CIFAR10DataModule(root=str(tmp_path), batch_size=4)
    dm.setup("fit")
    assert len(dm.train_set) == 20 and len(dm.val_set) == 4


def test_a_batch_written_by_numpy_1_loads(tmp_path):
    # The official files were pickled by numpy 1, whose module is numpy.core.multiarray; in a
    # protocol-2 pickle the global is a text line, so the numpy 2 name can be swapped back.
    data = np.arange(2 * 3072, dtype=np.int64).astype(np.uint8).reshape(2, 3072)
    raw = pickle.dumps({b"data": data, b"labels": [7, 3]}, protocol=2)
    old = raw.replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")
    assert b"numpy.core.multiarray\n" in old and b"numpy._core" not in old
    (tmp_path / "data_batch_1").write_bytes(old)
    batch = load_cifar_batch(tmp_path / "data_batch_1")
    np.testing.assert_array_equal(batch[b"data"], data)


# --- image files: modes and bit depths -----------------------------------------------------------


def png_16bit(path: Path, pixels: np.ndarray) -> None:
    """A 16-bit greyscale (h, w) or RGB (h, w, 3) PNG written byte by byte: Pillow cannot write
    16-bit RGB, and this way the test does not depend on how Pillow encodes either."""
    height, width = pixels.shape[:2]
    colour = 2 if pixels.ndim == 3 else 0
    rows = pixels.astype(">u2").reshape(height, -1)
    raw = b"".join(b"\x00" + row.tobytes() for row in rows)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 16, colour, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def test_16bit_greyscale_is_scaled_to_8_bits_not_clipped(tmp_path):
    levels = np.array([[0, 257, 128 * 257, 65535]], dtype=np.uint16)
    png_16bit(tmp_path / "grey16.png", levels)
    for channels, mode in ((1, "L"), (3, "RGB")):
        image = read_image(tmp_path / "grey16.png", channels)
        assert image.mode == mode
        first = np.asarray(image)[..., 0] if channels == 3 else np.asarray(image)
        assert first.tolist() == [[0, 1, 128, 255]]


def test_16bit_rgb_keeps_its_colours(tmp_path):
    pixels = np.array([[[65535, 0, 128 * 257], [0, 65535, 0]]], dtype=np.uint16)
    png_16bit(tmp_path / "rgb16.png", pixels)
    assert np.asarray(read_image(tmp_path / "rgb16.png", 3)).tolist() == [[[255, 0, 128], [0, 255, 0]]]


def test_32bit_integer_pixels_outside_16_bits_are_refused(tmp_path):
    Image.fromarray(np.array([[-5, 70000]], dtype=np.int32)).save(tmp_path / "wide.tif")
    with pytest.raises(DataError, match=r"wide\.tif .*-5 to 70000.*16-bit"):
        read_image(tmp_path / "wide.tif", 1)


def test_transparency_is_shown_on_white(tmp_path):
    rgba = np.array([[[255, 0, 0, 255], [0, 0, 0, 0], [0, 0, 255, 128]]], dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    assert np.asarray(read_image(tmp_path / "rgba.png", 3)).tolist() == [[[255, 0, 0], [255, 255, 255], [127, 127, 255]]]
    Image.fromarray(rgba, "RGBA").convert("LA").save(tmp_path / "la.png")
    assert np.asarray(read_image(tmp_path / "la.png", 1))[0, 1] == 255
    # a palette image with a transparent index (GIF-style sprites saved as PNG)
    palette = Image.fromarray(rgba[..., :3]).convert("P")
    palette.info["transparency"] = int(np.asarray(palette)[0, 1])
    palette.save(tmp_path / "p.png", transparency=palette.info["transparency"])
    assert np.asarray(read_image(tmp_path / "p.png", 3))[0, 1].tolist() == [255, 255, 255]


@pytest.mark.parametrize("mode", ["P", "CMYK", "1", "L", "RGB"])
def test_other_modes_convert_as_they_look(tmp_path, mode):
    rgb = Image.fromarray(np.array([[[250, 10, 10], [10, 10, 250]], [[250, 250, 250], [0, 0, 0]]], dtype=np.uint8))
    source = rgb.convert(mode)
    path = tmp_path / ("x.jpg" if mode == "CMYK" else "x.png")
    source.save(path, quality=100) if path.suffix == ".jpg" else source.save(path)
    expected = np.asarray(source.convert("RGB"), dtype=int)
    assert np.abs(np.asarray(read_image(path, 3), dtype=int) - expected).max() <= 12
    assert read_image(path, 1).mode == "L"


def truncated(path: Path) -> None:
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(path)
    path.write_bytes(path.read_bytes()[:300])


def corrupted(path: Path) -> None:
    # bytes flipped inside the compressed pixels: the header reads, the pixels do not
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(path)
    data = bytearray(path.read_bytes())
    data[200:260] = bytes(60)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "damage",
    [truncated, corrupted, lambda p: p.write_bytes(b""), lambda p: p.write_text("<html>404 Not Found</html>"), lambda p: p.symlink_to(p.parent / "gone.png")],
    ids=["truncated", "corrupted", "empty", "html", "broken-symlink"],
)
def test_an_unreadable_image_is_one_sentence_naming_it(tmp_path, damage):
    path = tmp_path / "bad.png"
    damage(path)
    with pytest.raises(DataError) as refused:
        read_image(path, 3)
    message = str(refused.value)
    assert message.startswith(f"The image file {path} (under --data.root) is unreadable (") and "\n" not in message


def image_folder(root: Path, n: int = 5) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.new("RGB", (12, 12), (40 * i, 0, 0)).save(root / f"ok{i}.png")


def test_an_image_folder_of_mixed_modes_trains_on_8bit_tensors(tmp_path):
    image_folder(tmp_path)
    png_16bit(tmp_path / "grey16.png", np.full((12, 12), 65535, np.uint16))
    Image.new("RGBA", (12, 12), (0, 0, 0, 0)).save(tmp_path / "clear.png")
    Image.new("CMYK", (12, 12), (0, 0, 0, 0)).save(tmp_path / "cmyk.jpg")
    dataset = ImageFileDataset(sorted(tmp_path.iterdir()), [0] * 8, image_size=8, channels=3)
    images = torch.stack([dataset[i][0] for i in range(len(dataset))])
    assert images.shape == (8, 3, 8, 8) and images.min() >= -1 and images.max() <= 1
    names = [p.name for p in dataset.paths]
    for white in ("grey16.png", "clear.png", "cmyk.jpg"):  # full 16-bit white, transparent, no ink
        assert torch.allclose(images[names.index(white)], torch.ones(3, 8, 8), atol=0.02)


def test_an_unreadable_image_from_a_dataloader_worker_is_still_one_sentence(tmp_path, capsys):
    # A worker re-raises the dataset's error with its whole traceback as the message.
    image_folder(tmp_path)
    truncated(tmp_path / "ok2.png")
    dataset = ImageFileDataset(sorted(tmp_path.glob("*.png")), [0] * 5, image_size=8, channels=3)

    def load() -> None:
        for _ in DataLoader(dataset, batch_size=5, num_workers=1):
            pass

    assert run(load) == 2
    err = capsys.readouterr().err
    assert err == f"error: The image file {tmp_path / 'ok2.png'} (under --data.root) is unreadable (image file is truncated); remove or replace it.\n"


def test_sentence_leaves_an_ordinary_message_alone():
    assert sentence(DataError("Caught nothing; a plain sentence")) == "Caught nothing; a plain sentence"


# --- --data.root that is a file ----------------------------------------------------------------


@pytest.mark.parametrize("cls", [ImageFolderDataModule, CIFAR10DataModule, MNISTDataModule])
def test_a_data_root_that_is_a_file_is_refused(tmp_path, cls):
    (tmp_path / "images.zip").write_bytes(b"PK")
    with pytest.raises(DataError, match=r"^--data\.root .*images\.zip is a file; give the folder that holds"):
        cls(root=str(tmp_path / "images.zip"))
