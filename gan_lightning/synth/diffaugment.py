"""DiffAugment (Zhao et al., 2020): the same random, differentiable transforms applied to every
image the discriminator sees, real and fake, in the D step and in the G step.

Augmenting only the real images would teach D that augmented images are real, and G would
learn to make augmented-looking images; augmenting both, differentiably, lets G's gradient
flow back through the transform while D can no longer memorise a small training set. The
paper's three policies are implemented from its description:

- ``color``: per-sample brightness shift in [-0.5, 0.5], saturation factor in [0, 2],
  contrast factor in [0.5, 1.5];
- ``translation``: per-sample integer shifts of up to ``translation_ratio`` of each side, the
  uncovered border filled with zeros;
- ``cutout``: one zeroed square per sample, ``cutout_ratio`` of each side, at a random place.
"""

from __future__ import annotations

from typing import Literal, Optional, Sequence

import torch
import torch.nn.functional as F

Policy = Literal["color", "translation", "cutout"]
POLICIES: tuple[str, ...] = ("color", "translation", "cutout")


def _uniform(n: int, low: float, high: float, like: torch.Tensor, generator: Optional[torch.Generator]) -> torch.Tensor:
    return (torch.rand(n, 1, 1, 1, generator=generator) * (high - low) + low).to(like.device, like.dtype)


def color(x: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    n = len(x)
    x = x + (_uniform(n, 0, 1, x, generator) - 0.5)
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * _uniform(n, 0, 2, x, generator) + mean
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * _uniform(n, 0.5, 1.5, x, generator) + mean


def translation(x: torch.Tensor, ratio: float = 0.125, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    n, _, h, w = x.shape
    sy, sx = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dy = torch.randint(-sy, sy + 1, (n, 1, 1), generator=generator).to(x.device)
    dx = torch.randint(-sx, sx + 1, (n, 1, 1), generator=generator).to(x.device)
    rows = (torch.arange(h, device=x.device).view(1, h, 1) + dy + sy).expand(n, h, w)
    cols = (torch.arange(w, device=x.device).view(1, 1, w) + dx + sx).expand(n, h, w)
    padded = F.pad(x, (sx, sx, sy, sy))  # zeros where the shift uncovers the border
    batch = torch.arange(n, device=x.device).view(n, 1, 1).expand(n, h, w)
    return padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)


def cutout(x: torch.Tensor, ratio: float = 0.5, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    n, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    # the square's centre is anywhere in the image, so near a border only part of it is inside
    top = torch.randint(0, h, (n, 1, 1), generator=generator).to(x.device) - ch // 2
    left = torch.randint(0, w, (n, 1, 1), generator=generator).to(x.device) - cw // 2
    rows = torch.arange(h, device=x.device).view(1, h, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, w)
    keep = ~(((rows >= top) & (rows < top + ch)) & ((cols >= left) & (cols < left + cw)))
    return x * keep.unsqueeze(1).to(x.dtype)


def diff_augment(
    x: torch.Tensor, policies: Sequence[str] = POLICIES, translation_ratio: float = 0.125, cutout_ratio: float = 0.5,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """``x`` ``(N, C, H, W)`` through the named policies in the paper's order (color,
    translation, cutout), each sample with its own random parameters; differentiable in ``x``."""
    if "color" in policies:
        x = color(x, generator)
    if "translation" in policies:
        x = translation(x, translation_ratio, generator)
    if "cutout" in policies:
        x = cutout(x, cutout_ratio, generator)
    return x
