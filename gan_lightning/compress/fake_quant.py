"""Fake quantization (int8) of a network's Linear and convolution layers, for quantization-aware
fine-tuning that matches ``export --format onnx --quantize int8`` (:mod:`gan_lightning.deploy.quantize`).

What the export does, and therefore what is simulated here (the int8 QDQ graph of the bundled
DCGAN quantizes exactly these tensors; ONNX Runtime's ``quant_utils`` gives the arithmetic):

- weights: int8 symmetric per output channel, scale ``max|w| / 127``, zero point 0. Per-channel
  scaling commutes with the BatchNorm folding the export does first (``q(k w) = k q(w)`` for a
  per-channel ``k``), so the weights fine-tuned here are the folded ones' grid too. A stride-2
  transposed convolution is exported in sub-pixel form (:func:`gan_lightning.deploy.inference.subpixel`),
  one Conv channel per (output channel, output phase): its taps are grouped by phase the same way
  here, so the grid is the export's exactly, not a coarser one.
- activations: int8 per tensor, affine (asymmetric), the range always holding 0: scale
  ``(hi - lo) / 255``, zero point ``round(-128 - lo / scale)``. The export quantizes the input of
  every Gemm/Conv (the latents, each post-ReLU activation) and the output of the last one (the
  pre-tanh image); ``quantize`` observes those tensors' ranges (an exponential moving average of
  per-batch min/max, as PyTorch's MovingAverageMinMaxObserver) where the export calibrates MinMax.
- not simulated: the int32 bias (its error is input scale x weight scale / 2, negligible) and the
  QDQ of residual additions, upsampling and concatenation in non-chain networks.

Gradients pass straight through the rounding (STE); an activation outside its range gets none,
as in PyTorch's FakeQuantize. This is a few lines of pure torch rather than torch.ao.quantization's
``FakeQuantize``: torch.ao.quantization is deprecated in favour of torchao (whose PT2E flow makes
torch.compile graphs, and whose observers do not know the sub-pixel export grid), and its eager
QAT swaps modules, which renames ``state_dict`` keys and breaks structured pruning's in-place
surgery. Here a layer's ``forward`` is shadowed by an instance attribute that reads the stored
weight at every call (:class:`FakeQuantizer`), so the weights, their names, the optimizer's
parameters and any parametrization (spectral norm) are untouched, and removing it restores the layer.
"""

from __future__ import annotations

from typing import Iterable, Optional

import torch
import torch.nn.functional as F
from torch import nn

QMIN, QMAX = -128, 127  # int8 activations
WEIGHT_QMAX = 127  # symmetric int8 weights: [-127, 127], as ONNX Runtime's symmetric int8
LAYERS = (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)
EPS = 1e-12


def is_stride2_upsampler(layer: nn.Module) -> bool:
    """A transposed convolution the int8 export rewrites in sub-pixel form (kernel 4, stride 2, padding 1)."""
    return (
        isinstance(layer, nn.ConvTranspose2d) and layer.kernel_size == (4, 4) and layer.stride == (2, 2)
        and layer.padding == (1, 1) and layer.output_padding == (0, 0) and layer.dilation == (1, 1) and layer.groups == 1
    )


def weight_scale(layer: nn.Module, weight: torch.Tensor) -> torch.Tensor:
    """Per-channel scale of ``weight``, broadcastable to it: output channels (axis 1 of a transposed
    convolution), and output phases too for a stride-2 upsampler (see the module docs)."""
    w = weight.detach().abs()
    if is_stride2_upsampler(layer):
        cin, cout = w.shape[:2]
        # kernel index k = 2a + b: taps of one parity b make one output phase of the sub-pixel form
        amax = w.view(cin, cout, 2, 2, 2, 2).amax(dim=(0, 2, 4), keepdim=True)
        return (amax / WEIGHT_QMAX).clamp_min(EPS).expand(cin, cout, 2, 2, 2, 2).reshape(w.shape)
    axis = 1 if isinstance(layer, nn.ConvTranspose2d) else 0
    dims = [d for d in range(w.dim()) if d != axis]
    return (w.amax(dim=dims, keepdim=True) / WEIGHT_QMAX).clamp_min(EPS)


def quantize_weight(layer: nn.Module, weight: torch.Tensor) -> torch.Tensor:
    """``weight`` on its int8 grid, with a straight-through gradient."""
    scale = weight_scale(layer, weight)
    q = torch.round(weight.detach() / scale).clamp(-WEIGHT_QMAX, WEIGHT_QMAX) * scale
    return weight + (q - weight).detach()


def activation_qparams(lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, zero point) of int8 affine quantization over [lo, hi] widened to hold 0."""
    lo, hi = lo.clamp(max=0.0), hi.clamp(min=0.0)
    scale = ((hi - lo) / (QMAX - QMIN)).clamp_min(EPS)
    return scale, torch.round(QMIN - lo / scale)


def quantize_activation(x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """``x`` on the int8 grid of [lo, hi]; straight-through inside the range, no gradient outside."""
    scale, zero = activation_qparams(lo.to(x.dtype), hi.to(x.dtype))
    low, high = (QMIN - zero) * scale, (QMAX - zero) * scale
    clipped = torch.minimum(torch.maximum(x, low), high)
    q = torch.round(clipped.detach() / scale) * scale  # (round(x / s) + zp - zp) s: zp is an integer
    return clipped + (q - clipped).detach()


class ActivationRanges:
    """Observed [lo, hi] of named activations: the first observation, then an exponential moving
    average of each batch's min and max (``momentum``: the weight of the new batch)."""

    def __init__(self, momentum: float = 0.01, ranges: Optional[dict[str, torch.Tensor]] = None) -> None:
        self.momentum = momentum
        self.ranges: dict[str, torch.Tensor] = dict(ranges or {})

    @torch.no_grad()
    def observe(self, key: str, x: torch.Tensor) -> None:
        seen = torch.stack([x.detach().min(), x.detach().max()]).float()
        old = self.ranges.get(key)
        self.ranges[key] = seen if old is None else old.to(seen.device).lerp_(seen, self.momentum)

    def get(self, key: str, device: torch.device) -> Optional[torch.Tensor]:
        value = self.ranges.get(key)
        if value is not None and value.device != device:
            value = self.ranges[key] = value.to(device)
        return value

    def to_state(self) -> dict:
        return {"momentum": self.momentum, "ranges": {k: [float(v[0]), float(v[1])] for k, v in self.ranges.items()}}

    @classmethod
    def from_state(cls, state: dict) -> "ActivationRanges":
        return cls(state["momentum"], {k: torch.tensor(v, dtype=torch.float32) for k, v in state["ranges"].items()})


def layer_forward(layer: nn.Module, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The layer's own computation on ``x`` with ``weight`` in place of its stored one."""
    if isinstance(layer, nn.Linear):
        return F.linear(x, weight, layer.bias)
    if isinstance(layer, nn.ConvTranspose2d):
        pad = layer._output_padding(x, None, list(layer.stride), list(layer.padding), list(layer.kernel_size), 2, list(layer.dilation))
        return F.conv_transpose2d(x, weight, layer.bias, layer.stride, layer.padding, pad, layer.groups, layer.dilation)
    return layer._conv_forward(x, weight, layer.bias)


class QuantizedForward:
    """Installed as ``layer.forward``: fake-quantized input, weight and (for the output layer) output."""

    def __init__(self, owner: "FakeQuantizer", layer: nn.Module, path: str, is_output: bool) -> None:
        self.owner, self.layer, self.path, self.is_output = owner, layer, path, is_output

    def _activation(self, key: str, x: torch.Tensor) -> torch.Tensor:
        ranges = self.owner.ranges
        if self.owner.observe and (self.layer.training or self.owner.calibrating):
            ranges.observe(key, x)
        r = ranges.get(key, x.device)
        return x if r is None else quantize_activation(x, r[0], r[1])

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if not self.owner.enabled:
            return layer_forward(self.layer, x, self.layer.weight)
        out = layer_forward(self.layer, self._activation(f"{self.path}:in", x), quantize_weight(self.layer, self.layer.weight))
        return self._activation(f"{self.path}:out", out) if self.is_output else out


class FakeQuantizer:
    """Fake-quantizes every Linear/Conv2d/ConvTranspose2d of a network (see the module docs).

    ``ranges`` may be shared by several networks of the same layout (a generator and its EMA
    copy: only a network with ``observe`` True moves them, in training mode). :meth:`attach`
    (again after an architecture change) installs the forwards, :meth:`remove` restores the layers.
    """

    def __init__(self, ranges: ActivationRanges, observe: bool = True) -> None:
        self.ranges, self.observe, self.enabled = ranges, observe, True
        self.calibrating = False  # observe in eval mode too (the first ranges, on fixed latents)
        self.layers: list[nn.Module] = []

    def attach(self, network: nn.Module, output_layer: Optional[str]) -> list[str]:
        self.remove()
        paths = []
        for path, layer in network.named_modules():
            if isinstance(layer, LAYERS) and not (isinstance(layer, nn.ConvTranspose2d) and layer.padding_mode != "zeros"):
                layer.forward = QuantizedForward(self, layer, path, path == output_layer)
                self.layers.append(layer)
                paths.append(path)
        return paths

    def remove(self) -> None:
        for layer in self.layers:
            if isinstance(vars(layer).get("forward"), QuantizedForward):
                del layer.forward
        self.layers = []

    @property
    def attached(self) -> bool:
        return bool(self.layers)


def attached_quantizers(network: nn.Module) -> Iterable[QuantizedForward]:
    """The fake-quantized forwards installed in ``network`` (e.g. to refuse copying them into a teacher)."""
    return [f for m in network.modules() if isinstance(f := vars(m).get("forward"), QuantizedForward)]
