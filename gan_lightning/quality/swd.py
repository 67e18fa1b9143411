"""Sample-quality measures that need nothing but the data.

``sliced_wasserstein`` is the cheap validation signal the best checkpoint is chosen by
until a feature-space metric (FID/KID) is configured: it works for images and for 2-D
points alike, needs no network weights and is deterministic for a fixed seed.
"""

from __future__ import annotations

import torch


def sliced_wasserstein(real: torch.Tensor, fake: torch.Tensor, num_projections: int = 256, seed: int = 0) -> torch.Tensor:
    """Mean 1-D Wasserstein-1 distance between ``real`` and ``fake`` over random unit directions.

    Both sets are flattened to ``(n, d)`` and must have the same ``n``; the directions come
    from ``seed`` so the same two sets always give the same number.
    """
    real, fake = real.flatten(1).float(), fake.flatten(1).float()
    if real.shape != fake.shape:
        raise ValueError(f"sliced_wasserstein needs sets of equal shape, got {tuple(real.shape)} and {tuple(fake.shape)}")
    g = torch.Generator().manual_seed(seed)
    directions = torch.randn(real.shape[1], num_projections, generator=g).to(real.device)
    directions /= directions.norm(dim=0, keepdim=True)
    real_proj, _ = (real @ directions).sort(dim=0)
    fake_proj, _ = (fake @ directions).sort(dim=0)
    return (real_proj - fake_proj).abs().mean()
