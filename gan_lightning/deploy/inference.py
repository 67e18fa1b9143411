"""Inference-only rewrites of a generator into an equivalent network that runs faster.

- :func:`fold_batchnorm`: an eval-mode BatchNorm after a Linear or (transposed) convolution is
  a per-channel affine map, folded into that layer's weight and bias. One op and one pass over
  the activations fewer per block.
- :func:`subpixel_transposed_convs`: ``ConvTranspose2d(kernel 4, stride 2, padding 1)`` becomes
  ``Conv2d(kernel 3, padding 1)`` with 4x the output channels followed by ``PixelShuffle(2)``
  (sub-pixel convolution, Shi et al. 2016). Each of the 4 output phases of a stride-2 transposed
  convolution reads a 2x2 input window; the 3x3 kernel holds the 4 phases' taps with zeros
  elsewhere, so it executes 2.25x the useful MACs. It pays where oneDNN's transposed
  convolution is slow, on layers with few output channels (the image layer, 1 or 3 channels):
  ``max_out_channels`` chooses which layers are rewritten.

Both are exact up to float reordering; the exporters verify the rewritten network against the
original one, so a wrong rewrite cannot reach a file.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from gan_lightning.compress.fake_quant import is_stride2_upsampler  # one rule for the rewrite and the int8 grid

PRODUCERS = (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)
# output phase -> {3x3 tap index: 4-tap transposed-kernel index} along one axis (stride 2, padding 1)
PHASE_TAPS = {0: {0: 3, 1: 1}, 1: {1: 2, 2: 0}}


def _producer(module: nn.Module):
    """The layer whose output channels ``module`` ends in: itself, or the last layer of a
    Sequential (a low-rank factorization ends in its up-projection)."""
    if isinstance(module, PRODUCERS):
        return module
    if isinstance(module, nn.Sequential) and len(module) and isinstance(module[-1], PRODUCERS):
        return module[-1]
    return None


@torch.no_grad()
def _fold(layer: nn.Module, bn: nn.modules.batchnorm._BatchNorm) -> None:
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps) if bn.affine else 1 / torch.sqrt(bn.running_var + bn.eps)
    shift = (bn.bias if bn.affine else 0) - bn.running_mean * scale
    axis = 1 if isinstance(layer, nn.ConvTranspose2d) else 0  # ConvTranspose2d stores (in, out, kh, kw)
    shape = [1] * layer.weight.dim()
    shape[axis] = -1
    layer.weight.mul_(scale.view(shape))
    bias = layer.bias if layer.bias is not None else torch.zeros_like(scale)
    layer.bias = nn.Parameter(bias * scale + shift)


def fold_batchnorm(network: nn.Module) -> int:
    """Fold every eval-mode BatchNorm that directly follows its producer in a Sequential; returns
    how many were folded. The network must be in eval mode (training BatchNorm is not affine)."""
    folded = 0
    for parent in [m for m in network.modules() if isinstance(m, nn.Sequential)]:
        for i in range(len(parent) - 1):
            layer, bn = _producer(parent[i]), parent[i + 1]
            if layer is None or not isinstance(bn, (nn.BatchNorm1d, nn.BatchNorm2d)) or bn.running_var is None:
                continue
            if layer.weight.shape[1 if isinstance(layer, nn.ConvTranspose2d) else 0] != bn.num_features:
                continue
            _fold(layer, bn)
            parent[i + 1] = nn.Identity()
            folded += 1
    return folded


@torch.no_grad()
def subpixel(layer: nn.ConvTranspose2d) -> nn.Sequential:
    """The sub-pixel form of a stride-2, kernel-4, padding-1 transposed convolution."""
    weight = layer.weight  # (in, out, 4, 4)
    cin, cout = weight.shape[:2]
    kernel = weight.new_zeros(cout, 2, 2, cin, 3, 3)  # (out, phase_y, phase_x, in, 3, 3); PixelShuffle's channel order
    for py, rows in PHASE_TAPS.items():
        for px, cols in PHASE_TAPS.items():
            for ty, ky in rows.items():
                for tx, kx in cols.items():
                    kernel[:, py, px, :, ty, tx] = weight[:, :, ky, kx].t()
    conv = nn.Conv2d(cin, 4 * cout, 3, padding=1, bias=layer.bias is not None).to(weight.device, weight.dtype)
    conv.weight.copy_(kernel.reshape(4 * cout, cin, 3, 3))
    if layer.bias is not None:
        conv.bias.copy_(layer.bias.repeat_interleave(4))
    return nn.Sequential(conv, nn.PixelShuffle(2))


def subpixel_transposed_convs(network: nn.Module, max_out_channels: int) -> int:
    """Rewrite the stride-2 upsamplers with at most ``max_out_channels`` outputs; returns how many."""
    targets = [(name, m) for name, m in network.named_modules() if is_stride2_upsampler(m) and m.out_channels <= max_out_channels]
    for name, layer in targets:
        parent_name, _, child = name.rpartition(".")
        setattr(network.get_submodule(parent_name) if parent_name else network, child, subpixel(layer))
    return len(targets)


def for_inference(generator: nn.Module, fold: bool = True, subpixel_max_out_channels: int = 4) -> nn.Module:
    """An eval-mode copy of ``generator`` with the rewrites applied (the original is untouched);
    ``z_dim`` and other attributes are kept, since the copy is the same class."""
    fast = copy.deepcopy(generator).eval()
    if fold:
        fold_batchnorm(fast)
    if subpixel_max_out_channels > 0:
        subpixel_transposed_convs(fast, subpixel_max_out_channels)
    return fast.requires_grad_(False)
