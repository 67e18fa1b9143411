"""A dataset's samples as tensors: a leaf helper that imports nothing of this project, so that
datamodules, metrics and callbacks can all use it without an import cycle."""

from __future__ import annotations

from typing import Optional

import torch
from torch.utils.data import DataLoader, Dataset


def stack_samples(dataset: Dataset, limit: Optional[int] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``limit`` (default: all) samples and labels of ``dataset`` as two tensors."""
    xs, ys, kept = [], [], 0
    for x, y in DataLoader(dataset, batch_size=512):
        if limit is not None:
            x, y = x[: limit - kept], y[: limit - kept]
        xs.append(x)
        ys.append(y)
        kept += len(x)
        if limit is not None and kept >= limit:
            break
    return torch.cat(xs), torch.cat(ys)
