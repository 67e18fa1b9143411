"""Reading checkpoints safely and telling whether one fits a model."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any, Mapping, Optional

import torch
from pytorch_lightning.plugins import TorchCheckpointIO
from typing_extensions import override

from gan_lightning.errors import CheckpointError


def read_checkpoint(path: str | Path, flag: str = "--ckpt_path") -> dict[str, Any]:
    """Load a Lightning checkpoint on CPU, or refuse it with one sentence naming the flag and file."""
    path = Path(path)
    if path.is_dir():
        found = sorted(path.rglob("*.ckpt"))
        hint = f", e.g. {found[-1]}" if found else ""
        raise CheckpointError(f"{flag} {path} is a folder; pass the .ckpt file itself{hint}")
    if not path.is_file():
        raise CheckpointError(f"{flag} {path} does not exist; pass a .ckpt file written by a previous run")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for truncated or foreign files
        raise CheckpointError(f"{flag} {path} is not a readable checkpoint ({type(exc).__name__}); it may be corrupted or truncated") from exc
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise CheckpointError(f"{flag} {path} is not a Lightning checkpoint (it has no state_dict)")
    return ckpt


def state_dict_mismatches(saved: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor], limit: int = 4) -> list[str]:
    """Human-readable differences in keys and shapes between two state dicts (at most ``limit`` of each kind)."""
    missing = [k for k in expected if k not in saved]
    unexpected = [k for k in saved if k not in expected]
    shapes = [
        f"{k} is {tuple(saved[k].shape)} in the checkpoint but {tuple(expected[k].shape)} in the model"
        for k in expected
        if k in saved and hasattr(saved[k], "shape") and tuple(saved[k].shape) != tuple(expected[k].shape)
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} tensors missing from the checkpoint, e.g. {', '.join(missing[:limit])}")
    if unexpected:
        problems.append(f"{len(unexpected)} tensors the model does not have, e.g. {', '.join(unexpected[:limit])}")
    problems += shapes[:limit]
    return problems




class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint to a temporary file beside it and renames it into place, so a
    kill or a full disk during the write leaves the previous checkpoint of that name intact,
    and a failed write is one sentence ("disk full") instead of an OSError traceback."""

    @override
    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Optional[Any] = None) -> None:
        if "://" in str(path):  # remote storage (s3://...) keeps fsspec's own transaction; Path() would mangle it
            return super().save_checkpoint(checkpoint, path, storage_options)
        path = Path(path)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.partial")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(temporary, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(temporary, path)
        except OSError as exc:
            temporary.unlink(missing_ok=True)
            kept = "the previous checkpoint of that name is intact" if path.exists() else "no earlier checkpoint of that name existed"
            why = "disk full" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else exc.strerror or type(exc).__name__
            raise CheckpointError(f"could not write the checkpoint {path} ({why}); {kept}: free space or choose another --checkpoint.dirpath, then resume") from exc
