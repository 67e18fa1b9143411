"""``python -m gan_lightning.commands.generate``: the same seed gives the same images whatever the
batch size, and from a checkpoint as from its compact, TorchScript and ONNX exports; an int8
ONNX export gives images a level or two of 255 away."""

from __future__ import annotations

import errno
import importlib.util
import os

import numpy as np
import pytest
from PIL import Image

from gan_lightning.commands import export as export_command
from gan_lightning.commands import generate as generate_command
from tests.helpers import tiny_run_args
from train import main


@pytest.fixture(scope="module")
def pruned(tmp_path_factory):
    """A checkpoint with a structurally pruned generator (latent cut included) and its three exports."""
    run = tmp_path_factory.mktemp("pruned")
    assert main(tiny_run_args(
        run, "--metrics.every_n_epochs", "0", "--checkpoint.monitor", "null", "--callbacks", "prune", "--prune.start_epoch", "0",
        "--prune.generator_amount", "0.5", "--prune.latent_amount", "0.25", "--prune.metric", "none", "--model.ema_decay", "0.9",
    )) == 0
    ckpt = run / "version_0" / "checkpoints" / "last.ckpt"
    files = {"checkpoint": ckpt}
    for fmt, name in (("compact", "g.pt"), ("torchscript", "g.ts"), ("onnx", "g.onnx")):
        if fmt == "onnx" and importlib.util.find_spec("onnxruntime") is None:  # the export extra is optional
            continue
        assert export_command.main(["--ckpt_path", str(ckpt), "--out", str(run / name), "--format", fmt]) == 0
        files[fmt] = run / name
    return files


def pixels(folder, n) -> np.ndarray:
    return np.stack([np.asarray(Image.open(folder / f"{i:06d}.png"), dtype=np.int16) for i in range(n)])


def test_the_same_seed_gives_the_same_images_from_the_checkpoint_and_every_export(tmp_path, pruned, capsys):
    n = 11
    for name, source in pruned.items():
        assert generate_command.main(["--source", str(source), "--out", str(tmp_path / name), "--num_samples", str(n), "--batch_size", "4", "--device", "cpu"]) == 0
    assert f"wrote {n} PNG files to {tmp_path / 'checkpoint'}" in capsys.readouterr().out
    reference = pixels(tmp_path / "checkpoint", n)
    assert reference.shape == (n, 8, 8) and len(np.unique(reference)) > 10  # grey images with content, not a constant
    for name in pruned:
        if name != "checkpoint":  # ONNX Runtime may round a pixel to the neighbouring level
            assert np.abs(pixels(tmp_path / name, n) - reference).max() <= (1 if name == "onnx" else 0), name
    assert generate_command.main(["--source", str(pruned["checkpoint"]), "--out", str(tmp_path / "b7"), "--num_samples", str(n), "--batch_size", "7"]) == 0
    assert np.array_equal(pixels(tmp_path / "b7", n), reference)  # the batch size does not change the latents
    assert generate_command.main(["--source", str(pruned["checkpoint"]), "--out", str(tmp_path / "seed1"), "--num_samples", str(n), "--seed", "1"]) == 0
    assert not np.array_equal(pixels(tmp_path / "seed1", n), reference)


def test_grid_and_refusals(tmp_path, pruned, capsys):
    grid = tmp_path / "grid.png"
    assert generate_command.main(["--source", str(pruned["compact"]), "--out", str(grid), "--grid", "--num_samples", "9"]) == 0
    assert Image.open(grid).size == (3 * 8 + 4 * 2, 3 * 8 + 4 * 2)  # 3x3 tiles of 8 pixels, 2-pixel padding
    before = grid.read_bytes()
    cases = [
        (["--source", str(pruned["compact"]), "--out", str(grid), "--grid"], f"error: --out would replace the existing file {grid}; choose another --out or pass --overwrite"),
        (["--source", str(tmp_path / "nope.pt"), "--out", str(tmp_path / "x")], f"error: --source {tmp_path / 'nope.pt'} does not exist; give a train.py checkpoint (.ckpt) or a file written by the export command"),
        (["--source", str(pruned["compact"]), "--out", str(tmp_path / "x"), "--num_samples", "0"], "error: --num_samples and --batch_size must be >= 1, got 0 and 64"),
        (["--source", str(pruned["compact"]), "--out", str(tmp_path / "y"), "--device", "tpu"], "error: --device must be cpu, cuda or auto, got 'tpu'"),
    ]
    for argv, message in cases:
        assert generate_command.main(argv) == 2
        assert capsys.readouterr().err.strip().splitlines()[-1] == message
    assert grid.read_bytes() == before


def test_a_grid_the_disk_could_not_hold_keeps_the_earlier_grid(tmp_path, pruned, capsys, monkeypatch):
    grid = tmp_path / "grid.png"
    assert generate_command.main(["--source", str(pruned["compact"]), "--out", str(grid), "--grid", "--num_samples", "4"]) == 0
    before = grid.read_bytes()
    real_open = open

    def full_disk(file, mode="r", *args, **kwargs):  # room for a name, none for the bytes
        f = real_open(file, mode, *args, **kwargs)
        if "w" in mode and str(file).endswith(".partial"):
            f.write = lambda data: (_ for _ in ()).throw(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
        return f

    monkeypatch.setattr("builtins.open", full_disk)
    assert generate_command.main(["--source", str(pruned["compact"]), "--out", str(grid), "--grid", "--num_samples", "4", "--seed", "1", "--overwrite"]) == 2
    monkeypatch.undo()
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"error: could not write --out {grid} (disk full); the earlier grid.png is intact: free space or choose another --out"
    )
    assert grid.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["grid.png"]


def test_generate_runs_an_int8_onnx_export(tmp_path, pruned, capsys):
    pytest.importorskip("onnxruntime", reason="the export extra is not installed: pip install -e '.[export]'")
    int8 = tmp_path / "g_int8.onnx"
    assert export_command.main(["--ckpt_path", str(pruned["checkpoint"]), "--out", str(int8), "--quantize", "int8", "--calibration_batches", "4"]) == 0
    n = 16
    for name, source in (("int8", int8), ("checkpoint", pruned["checkpoint"])):
        assert generate_command.main(["--source", str(source), "--out", str(tmp_path / name), "--num_samples", str(n), "--batch_size", "5", "--device", "cpu"]) == 0
    assert f"wrote {n} PNG files to {tmp_path / 'int8'}" in capsys.readouterr().out
    got, reference = pixels(tmp_path / "int8", n), pixels(tmp_path / "checkpoint", n)
    assert got.shape == reference.shape == (n, 8, 8)
    difference = np.abs(got - reference)
    # int8 rounding moves pixels by a level or two of 255 (measured: mean 0.4, max 2; PSNR > 30 dB
    # is RMS < 4 levels); a wrong latent size, scale or layer moves them by tens
    assert 0 < difference.mean() < 2 and np.sqrt((difference.astype(float) ** 2).mean()) < 4
