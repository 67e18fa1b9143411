"""Weight clipping math: which parameters a clip applies to, the clamp, and how saturated it is.

Used by the ``clip`` callback (callbacks/clip.py), which decides when to clamp.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

Parameters = Literal["weights", "all"]

# Layers whose parameters are "weights" in the sense of --clip.parameters weights. _ConvNd
# covers Conv1d/2d/3d, their transposed and lazy variants in one name.
WEIGHT_LAYERS = (nn.Linear, nn.modules.conv._ConvNd)
# A value this close to the bound counts as saturated. After clamp_ it is the bound as the
# parameter's dtype stores it, e.g. 0.0698 for c = 0.07 in bf16; the comparison below runs in
# that dtype (a Python scalar takes the tensor's), so such values still count.
SATURATION_RTOL = 1e-6


def clipped_parameters(network: nn.Module, parameters: Parameters) -> list[nn.Parameter]:
    """The parameters of ``network`` that ``--clip.parameters`` selects, each once.

    ``weights``: weights and biases of Linear and convolution layers (and anything registered
    under them, such as a spectral-norm or pruning parametrization's original weight);
    ``all``: every parameter, so the affine scale and shift of BatchNorm, GroupNorm and
    LayerNorm too.
    """
    if parameters == "all":
        params = list(network.parameters())
    else:
        params = [p for m in network.modules() if isinstance(m, WEIGHT_LAYERS) for p in m.parameters()]
    unique: dict[int, nn.Parameter] = {}
    for p in params:  # tied weights are clamped and counted once
        unique.setdefault(id(p), p)
    return list(unique.values())


@torch.no_grad()
def clamp_(params: list[nn.Parameter], clip_value: float) -> None:
    """Clamp ``params`` in place to [-clip_value, clip_value]."""
    for p in params:
        p.clamp_(-clip_value, clip_value)


@torch.no_grad()
def saturation(params: list[nn.Parameter], clip_value: float) -> float:
    """The fraction of the values in ``params`` with ``|w| >= clip_value * (1 - 1e-6)``; 0 when empty."""
    at_bound, total = 0, 0
    for p in params:
        at_bound += int((p.detach().abs() >= clip_value * (1 - SATURATION_RTOL)).sum())
        total += p.numel()
    return at_bound / total if total else 0.0
