"""Reading checkpoints safely and telling whether one fits a model."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Optional

import torch
from pytorch_lightning.plugins import TorchCheckpointIO
from typing_extensions import override

from gan_lightning.errors import CheckpointError
from gan_lightning.files import write_atomically


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
    kill or a full disk during the write leaves the previous checkpoint of that name intact
    and no partial file, and a refused write is one sentence ("disk full", "read-only file
    system") instead of torch's "unexpected pos" traceback."""

    @override
    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Optional[Any] = None) -> None:
        if "://" in str(path):  # remote storage (s3://...) keeps fsspec's own transaction; Path() would mangle it
            return super().save_checkpoint(checkpoint, path, storage_options)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        # through a Python file object, so that torch's RuntimeError keeps the OSError behind it
        write_atomically(
            path, lambda f: torch.save(checkpoint, f), what="the checkpoint", flag="--checkpoint.dirpath", then=", then resume", error=CheckpointError,
        )
