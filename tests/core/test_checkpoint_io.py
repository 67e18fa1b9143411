"""Checkpoints are written to a temporary file and renamed into place: a failed write (a full
disk, a kill) leaves the previous checkpoint intact and says so in one sentence."""

from __future__ import annotations

import errno

import pytest
import torch

from gan_lightning.commands.train import GANLightningCLI
from gan_lightning.core import checkpoint as checkpoint_module
from gan_lightning.core.checkpoint import AtomicCheckpointIO
from gan_lightning.errors import CheckpointError
from tests.helpers import tiny_run_args


def test_a_write_that_fails_midway_leaves_the_previous_checkpoint_and_no_partial_file(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"step": 1, "w": torch.ones(3)}, path)
    before = path.read_bytes()

    def full_disk(obj, f):
        f.write(b"half a checkpoint")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint_module.torch, "save", full_disk)
    with pytest.raises(CheckpointError, match=r"could not write the checkpoint .*last\.ckpt \(disk full\); the earlier last\.ckpt is intact"):
        io.save_checkpoint({"step": 2, "w": torch.zeros(3)}, path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]
    monkeypatch.undo()
    io.save_checkpoint({"step": 3}, path)
    assert io.load_checkpoint(path)["step"] == 3


def test_train_py_writes_its_checkpoints_atomically(tmp_path):
    cli = GANLightningCLI(args=tiny_run_args(tmp_path), run=False)
    assert isinstance(cli.trainer.strategy.checkpoint_io, AtomicCheckpointIO)
