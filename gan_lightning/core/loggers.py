"""Logger plumbing: where a run's files go, W&B run defaults, and images and tables to any logger.

Whether W&B can log online is the train command's to decide (``gan_lightning/commands/wandb_mode.py``)."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any, BinaryIO, Callable

import numpy as np
from pytorch_lightning import Trainer
from pytorch_lightning.loggers import TensorBoardLogger, WandbLogger

from gan_lightning.core.lightning_private import logging_step
from gan_lightning.files import refused_writes, write_atomically

RESUME = ", then resume from the newest checkpoint with --ckpt_path"


def run_dir(trainer: Trainer) -> Path:
    """The folder of this run, the parent of its ``checkpoints/`` folder for every logger.

    Mirrors how ModelCheckpoint places its default ``dirpath`` (save_dir/name/version), so
    samples, the saved config and checkpoints of one run sit together.
    """
    if not trainer.loggers:
        return Path(trainer.default_root_dir)
    logger = trainer.loggers[0]
    save_dir = logger.save_dir or trainer.default_root_dir
    version = logger.version if isinstance(logger.version, str) else f"version_{logger.version}"
    return Path(save_dir) / str(logger.name) / version


def log_image(trainer: Trainer, key: str, image: np.ndarray) -> None:
    """Send a uint8 ``(H, W, 3)`` image to every logger that takes images.

    W&B is given uint8 because it maps float arrays as if they were in [0, 255] (a [0, 1]
    grid comes out black); CSV has no image support and relies on the PNG written beside it.
    """
    assert image.dtype == np.uint8 and image.ndim == 3, "log_image expects a uint8 HxWx3 array"
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            logger.log_image(key=key, images=[image], step=logging_step(trainer))
        elif isinstance(logger, TensorBoardLogger):
            logger.experiment.add_image(key, image, logging_step(trainer), dataformats="HWC")


def log_table(trainer: Trainer, key: str, columns: list[str], rows: list[list[Any]]) -> Path:
    """Send a table to every logger that takes tables (a W&B table, TensorBoard markdown
    text) and always write it as ``<run>/tables/<key>.csv``, the CSV logger's only record."""
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            logger.log_table(key=key, columns=columns, data=rows, step=logging_step(trainer))
        elif isinstance(logger, TensorBoardLogger):
            lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
            lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in rows]
            logger.experiment.add_text(key, "\n".join(lines), logging_step(trainer))
    path = run_dir(trainer) / "tables" / (key.replace("/", "_") + ".csv")
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow(columns)
    writer.writerows(rows)
    write_run_file(path, lambda f: f.write(text.getvalue().encode()), "the table")
    return path


def write_run_file(path: Path, write: Callable[[BinaryIO], None], what: str) -> None:
    """A file of the run's own (a sample grid, a table) written whole or not at all: on a full or
    read-only disk the earlier file stays and training stops with one sentence (the checkpoint
    of the last epoch is intact; it would be the next write to fail)."""
    flag = "--trainer.default_root_dir"
    with refused_writes(path.parent, f"the folder of {what}", flag, then=RESUME):
        path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, write, what=what, flag=flag, then=RESUME, fsync=False)


def describe_run(generator: str, data: str, loss: str, callbacks: list[str]) -> dict[str, Any]:
    """W&B name, group and tags: dense runs and their compressed variants share a group."""
    group = f"{generator}-{data}"
    name = group + "".join(f"+{c}" for c in callbacks)
    return {"name": name, "group": group, "tags": [generator, data, loss, *callbacks]}
