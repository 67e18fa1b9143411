"""Generator and discriminator networks.

Every network takes its output (or input) shape explicitly so the GANModule can check
it against the datamodule's ``sample_shape`` before training starts, instead of failing
with a shape error deep inside the first step.
"""

from __future__ import annotations

import math
from typing import Literal, Sequence

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm_one

from gan_lightning.errors import ConfigError

OutputActivation = Literal["tanh", "none"]


def _output_activation(name: OutputActivation) -> nn.Module:
    return nn.Tanh() if name == "tanh" else nn.Identity()


class MLPGenerator(nn.Module):
    """Fully connected generator: z -> hidden layers (ReLU) -> prod(out_shape), reshaped.

    Defaults are the seeds' MLP GAN: z 100 -> 256 -> 256 -> 784 (a 1x28x28 image).

    Args:
        z_dim: latent size.
        hidden: width of each hidden layer, in order.
        out_shape: shape of one sample, e.g. ``[1, 28, 28]`` for images or ``[2]`` for 2-D points.
        output_activation: ``tanh`` for data scaled to [-1, 1], ``none`` for unbounded data.
    """

    def __init__(
        self,
        z_dim: int = 100,
        hidden: Sequence[int] = (256, 256),
        out_shape: Sequence[int] = (1, 28, 28),
        output_activation: OutputActivation = "tanh",
    ) -> None:
        super().__init__()
        self.z_dim = z_dim
        self.out_shape = tuple(out_shape)
        layers: list[nn.Module] = []
        width = z_dim
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers += [nn.Linear(width, math.prod(self.out_shape)), _output_activation(output_activation)]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).view(z.shape[0], *self.out_shape)


class MLPDiscriminator(nn.Module):
    """Fully connected discriminator: flatten -> hidden layers (LeakyReLU 0.2) -> 1 logit.

    Defaults are the seeds' MLP GAN: 784 -> 256 -> 128 -> 1.
    """

    def __init__(self, in_shape: Sequence[int] = (1, 28, 28), hidden: Sequence[int] = (256, 128)) -> None:
        super().__init__()
        self.in_shape = tuple(in_shape)
        layers: list[nn.Module] = [nn.Flatten()]
        width = math.prod(self.in_shape)
        for h in hidden:
            layers += [nn.Linear(width, h), nn.LeakyReLU(0.2)]
            width = h
        layers.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).view(-1)


def _num_upsamplings(image_size: int, family: str = "DCGAN") -> int:
    # DCGAN and ResNet generators start from a 4x4 map and double it; other sizes cannot be reached exactly.
    n = int(math.log2(image_size)) - 2 if image_size > 0 else 0
    if image_size < 8 or 4 * 2**n != image_size:
        raise ConfigError(
            f"--model.generator.init_args.image_size and --model.discriminator.init_args.image_size must be a"
            f" power of two >= 8 for {family} networks (and match --data.image_size), got {image_size}"
        )
    return n


def _spectral_norm(network: nn.Module) -> None:
    """Spectral normalization (Miyato et al. 2018) on every Conv2d and Linear of ``network``, as a
    parametrization (not the deprecated hook): every reader of a layer's ``weight`` gets it divided
    by its largest singular value, estimated by one power iteration per training-mode forward."""
    for m in [m for m in network.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]:
        _spectral_norm_one(m)


class DCGANGenerator(nn.Module):
    """DCGAN generator (Radford et al.): Linear z -> width*2^(n-1) x 4 x 4, then n
    ConvTranspose2d(4, stride 2) + BatchNorm + ReLU blocks halving the channels, ending at
    ``channels x image_size x image_size`` with tanh.

    The first layer is a Linear followed by a reshape (rather than a 4x4 transposed conv) so
    the Linear-to-conv boundary that structured pruning must handle is explicit.

    Args:
        z_dim: latent size.
        image_size: output height and width, a power of two >= 8.
        channels: output channels (1 for grey, 3 for colour).
        width: channels of the last hidden block; earlier blocks double it.
    """

    def __init__(self, z_dim: int = 64, image_size: int = 32, channels: int = 1, width: int = 32) -> None:
        super().__init__()
        self.z_dim = z_dim
        self.out_shape = (channels, image_size, image_size)
        n = _num_upsamplings(image_size)
        c = width * 2 ** (n - 1)
        self.stem = nn.Sequential(nn.Linear(z_dim, c * 16, bias=False), nn.BatchNorm1d(c * 16), nn.ReLU())
        blocks: list[nn.Module] = []
        for _ in range(n - 1):
            blocks += [nn.ConvTranspose2d(c, c // 2, 4, 2, 1, bias=False), nn.BatchNorm2d(c // 2), nn.ReLU()]
            c //= 2
        blocks += [nn.ConvTranspose2d(c, channels, 4, 2, 1), nn.Tanh()]
        self.blocks = nn.Sequential(*blocks)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        # -1, not the configured width: structured pruning may have removed stem channels
        h = self.stem(z).view(z.shape[0], -1, 4, 4)
        return self.blocks(h)


class DCGANDiscriminator(nn.Module):
    """DCGAN discriminator: n Conv2d(4, stride 2) + LeakyReLU blocks doubling the channels
    from ``width`` down to a 4x4 map, then a Linear to one logit.

    ``norm`` is ``batch`` (the DCGAN paper), ``none`` (required with gradient penalties,
    which are defined per sample) or ``layer``. ``spectral_norm`` divides every Conv2d and
    Linear weight by its largest singular value, which bounds D's Lipschitz constant without a
    per-sample penalty (the SN-DCGAN of Miyato et al. 2018 pairs it with ``norm: none``; it is
    allowed with the other norms too, which then rescale what the bound constrains).
    """

    def __init__(
        self,
        image_size: int = 32,
        channels: int = 1,
        width: int = 32,
        norm: Literal["batch", "none", "layer"] = "batch",
        spectral_norm: bool = False,
    ) -> None:
        super().__init__()
        self.in_shape = (channels, image_size, image_size)
        n = _num_upsamplings(image_size)
        layers: list[nn.Module] = [nn.Conv2d(channels, width, 4, 2, 1), nn.LeakyReLU(0.2)]
        c, size = width, image_size // 2
        for _ in range(n - 1):
            layers.append(nn.Conv2d(c, c * 2, 4, 2, 1, bias=norm == "none"))
            c, size = c * 2, size // 2
            if norm == "batch":
                layers.append(nn.BatchNorm2d(c))
            elif norm == "layer":
                layers.append(nn.GroupNorm(1, c))
            layers.append(nn.LeakyReLU(0.2))
        layers += [nn.Flatten(), nn.Linear(c * size * size, 1)]
        self.net = nn.Sequential(*layers)
        if spectral_norm:
            _spectral_norm(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).view(-1)


class _Residual(nn.Module):
    """``main(x) + shortcut(x)``: every ResNet block below, with no control flow in its forward,
    so that torch.fx traces it (structured pruning reads the residual addition from the trace)."""

    def __init__(self, main: nn.Module, shortcut: nn.Module) -> None:
        super().__init__()
        self.main, self.shortcut = main, shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x) + self.shortcut(x)


def _conv3(cin: int, cout: int, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, 1, 1, bias=bias)


class ResNetGenerator(nn.Module):
    """SNGAN ResNet generator (Miyato et al. 2018, the CIFAR-10 network; mimicry's ``sngan_32``):
    Linear z -> width x 4 x 4, then n up-sampling residual blocks at constant width, then
    BatchNorm, ReLU, a 3x3 conv to ``channels`` and tanh.

    A block is BN-ReLU-upsample-conv3x3-BN-ReLU-conv3x3 plus a learned shortcut (upsample,
    1x1 conv): the identity path carries the coarse image through every block, so a deep
    generator trains stably under the 5-critic-step hinge schedule of ``configs/sngan.yaml``.
    Nearest up-sampling then a 3x3 conv, rather than a transposed conv, avoids DCGAN's
    checkerboard artefacts. The default width 32 (SNGAN uses 256) keeps the 32x32 digits
    practical on a CPU: 125 k parameters and 26.5 M multiply-accumulates per sample at 32x32
    (gan_lightning.compress.profiling), against DCGANGenerator's 300 k and 4.5 M; width 64
    costs 367 k and 105 M, about 3.5 times the training time.

    Args:
        z_dim: latent size (SNGAN's 128).
        image_size: output height and width, a power of two >= 8 (one block per doubling from 4).
        channels: output channels (1 for grey, 3 for colour).
        width: channels of every block.
    """

    def __init__(self, z_dim: int = 128, image_size: int = 32, channels: int = 1, width: int = 32) -> None:
        super().__init__()
        self.z_dim = z_dim
        self.out_shape = (channels, image_size, image_size)
        n = _num_upsamplings(image_size, "ResNet")
        self.stem = nn.Linear(z_dim, width * 16)

        def up() -> nn.Module:
            return nn.Upsample(scale_factor=2, mode="nearest")

        self.blocks = nn.Sequential(*[
            _Residual(
                nn.Sequential(nn.BatchNorm2d(width), nn.ReLU(), up(), _conv3(width, width, bias=False),
                              nn.BatchNorm2d(width), nn.ReLU(), _conv3(width, width)),
                nn.Sequential(up(), nn.Conv2d(width, width, 1)),
            )
            for _ in range(n)
        ])
        self.head = nn.Sequential(nn.BatchNorm2d(width), nn.ReLU(), _conv3(width, channels), nn.Tanh())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        # -1, not the configured width: structured pruning may have removed stem channels
        h = self.stem(z).view(z.shape[0], -1, 4, 4)
        return self.head(self.blocks(h))


class ResNetDiscriminator(nn.Module):
    """SNGAN ResNet discriminator (Miyato et al. 2018): an optimized first block, residual
    blocks that halve the resolution down to 8x8 (4x4 for an 8x8 image), two residual blocks
    that keep it, then ReLU, a sum over positions and a Linear to one logit.

    Spectral normalization on every Conv2d and Linear bounds D's Lipschitz constant at no
    per-sample cost, which is what lets the hinge loss and five critic steps of
    ``configs/sngan.yaml`` train without a gradient penalty; there is no BatchNorm, so each
    logit depends on its own sample only. The first block starts with a conv rather than a
    ReLU (ReLU on raw pixels would discard the negative half of images in [-1, 1]) and pools
    its shortcut before the 1x1 conv, which is cheaper at full resolution. Positions are
    summed, as in SNGAN, not averaged: with every layer's gain bounded by spectral norm, a mean
    would shrink the logit's range by the map's area (64 at 8x8) and the hinge margin of 1. The
    default width 32 (SNGAN uses 128) costs 66 k parameters and 17.1 M multiply-accumulates
    per 32x32 sample (width 64: 263 k and 67.7 M).

    Args:
        image_size: input height and width, a power of two >= 8.
        channels: input channels (1 for grey, 3 for colour).
        width: channels of every block.
        spectral_norm: parametrize every Conv2d and Linear with spectral normalization.
    """

    def __init__(self, image_size: int = 32, channels: int = 1, width: int = 32, spectral_norm: bool = True) -> None:
        super().__init__()
        self.in_shape = (channels, image_size, image_size)
        # SNGAN's 32x32 D ends on an 8x8 map: one halving fewer than G's doublings, at least one
        downs = max(1, _num_upsamplings(image_size, "ResNet") - 1)
        w = width
        blocks = [_Residual(nn.Sequential(_conv3(channels, w), nn.ReLU(), _conv3(w, w), nn.AvgPool2d(2)),
                            nn.Sequential(nn.AvgPool2d(2), nn.Conv2d(channels, w, 1)))]
        blocks += [_Residual(nn.Sequential(nn.ReLU(), _conv3(w, w), nn.ReLU(), _conv3(w, w), nn.AvgPool2d(2)),
                             nn.Sequential(nn.Conv2d(w, w, 1), nn.AvgPool2d(2)))
                   for _ in range(downs - 1)]
        blocks += [_Residual(nn.Sequential(nn.ReLU(), _conv3(w, w), nn.ReLU(), _conv3(w, w)), nn.Identity())
                   for _ in range(2)]
        self.blocks = nn.Sequential(*blocks)
        self.act = nn.ReLU()
        self.head = nn.Linear(w, 1)
        if spectral_norm:
            _spectral_norm(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.sum(self.act(self.blocks(x)), dim=(2, 3))
        return self.head(h).view(-1)
