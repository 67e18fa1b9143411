"""Builders shared by the tests: tiny networks on 8x8 digits so that every fit takes seconds on CPU."""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.loggers import CSVLogger

from datamodules.digits import DigitsDataModule
from gan_lightning.core.module import GANModule
from gan_lightning.networks import DCGANDiscriminator, DCGANGenerator

REPO = Path(__file__).resolve().parent.parent
TINY = str(REPO / "tests" / "tiny.yaml")  # the default preset shrunk for tests


def tiny_run_args(run: Path, *extra: str, logger: str = "CSVLogger") -> list[str]:
    """train.py flags of a tiny run whose logs, config.yaml and checkpoints go under ``run``."""
    return ["--config", TINY, "--trainer.default_root_dir", str(run), "--trainer.logger", logger, "--trainer.logger.save_dir", str(run), *extra]


def tiny_module(**kwargs) -> GANModule:
    """An 8x8 DCGAN with a few hundred weights; kwargs go to GANModule."""
    norm = "none" if kwargs.get("gp_weight", 0) or kwargs.get("r1_weight", 0) else "batch"
    return GANModule(
        generator=DCGANGenerator(z_dim=8, image_size=8, channels=1, width=4),
        discriminator=DCGANDiscriminator(image_size=8, channels=1, width=4, norm=norm),
        **kwargs,
    )


def tiny_digits(**kwargs) -> DigitsDataModule:
    kwargs.setdefault("batch_size", 32)
    return DigitsDataModule(image_size=8, **kwargs)


def make_trainer(tmp_path: Path, **kwargs) -> pl.Trainer:
    defaults = dict(
        accelerator="cpu",
        devices=1,
        max_epochs=1,
        logger=CSVLogger(tmp_path, name="csv"),
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=tmp_path,
    )
    defaults.update(kwargs)
    return pl.Trainer(**defaults)


def read_wandb_records(path: Path, timeout: float = 30.0) -> list:
    """Records of a finished offline W&B run file (``run-*.wandb``).

    wandb writes the file from a separate service process, which may still be flushing when
    ``wandb.finish()`` returns, so this waits for the run's final ``exit`` record.
    """
    import time

    deadline = time.time() + timeout
    while True:
        records = _parse_wandb_file(path)
        if any(r.WhichOneof("record_type") == "exit" for r in records) or time.time() > deadline:
            return records
        time.sleep(0.2)


def _parse_wandb_file(path: Path) -> list:
    """The file is a ':W&B' header then LevelDB-style log blocks of 32 KiB whose chunks carry
    serialized ``Record`` protobufs; this wandb release ships no Python reader for it."""
    import struct

    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    pos, block, records, pending = 7, 32768, [], b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # block trailer too short for a chunk header
            pos += block - pos % block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if pos + 7 + length > len(data):  # a record still being written
            break
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind == 0 and length == 0:
            break
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):  # FULL or LAST
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
    return records


def train_py_ddp(tmp_path: Path, *args: str) -> tuple[dict, dict]:
    """Run ``train.py`` as 2 DDP processes on CPU, as a user would (the launcher re-executes
    the script), and return what each rank's probe saved as ``<tmp_path>/ranks/rank{0,1}.pt``;
    ``args`` must attach such a probe with ``--trainer.callbacks.out_dir <tmp_path>/ranks``."""
    import os
    import subprocess
    import sys

    import torch

    cmd = [sys.executable, str(REPO / "train.py"), "--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.strategy", "ddp", *args]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    env.pop("MASTER_PORT", None)
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = (torch.load(tmp_path / "ranks" / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    return r0, r1


class UserGenerator(DCGANGenerator):
    """A generator class of the user's own, outside the project's networks (allow-list tests)."""
