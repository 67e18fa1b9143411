"""The power-iteration vectors of a spectral-normalized layer, set from its weight.

``torch.nn.utils.parametrizations.spectral_norm`` keeps estimates ``u``, ``v`` of the weight's
top singular vectors and refines them by one power iteration per training forward. After the
weight is replaced by a differently shaped or differently scaled one (a structured cut, a
low-rank factor), the old estimates are wrong or the wrong size, and a few power iterations
converge slowly where the top singular values are close (a full-rank factor was off by up to
2% after 15). So they are set to the exact top singular pair, and sigma = u^T W v is exact.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.parametrizations import _SpectralNorm
from torch.nn.utils.parametrize import is_parametrized


@torch.no_grad()
def exact_spectral_vectors(layer: nn.Module) -> None:
    """Set every spectral norm of ``layer``'s weight to its weight's top singular pair; a layer
    without one, or an all-zero weight (a shapes-only rebuild, whose vectors a state_dict
    brings), is left alone."""
    if not is_parametrized(layer, "weight"):
        return
    weight = layer.parametrizations.weight.original
    for norm in layer.parametrizations.weight:
        if not isinstance(norm, _SpectralNorm):
            continue
        matrix = norm._reshape_weight_to_matrix(weight).detach().double().cpu()
        if not matrix.abs().max() > 0:
            continue
        u, _, vh = torch.linalg.svd(matrix, full_matrices=False)
        norm._u = u[:, 0].to(weight)  # assigned, not copied: a cut changes the vectors' sizes
        norm._v = vh[0].to(weight)
