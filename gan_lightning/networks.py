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


def _num_upsamplings(image_size: int) -> int:
    # DCGAN starts from a 4x4 map and doubles it; other sizes cannot be reached exactly.
    n = int(math.log2(image_size)) - 2
    if image_size < 8 or 4 * 2**n != image_size:
        raise ConfigError(
            f"--model.generator.init_args.image_size and --model.discriminator.init_args.image_size must be a"
            f" power of two >= 8 for DCGAN networks (and match --data.image_size), got {image_size}"
        )
    return n


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
    which are defined per sample) or ``layer``.
    """

    def __init__(
        self,
        image_size: int = 32,
        channels: int = 1,
        width: int = 32,
        norm: Literal["batch", "none", "layer"] = "batch",
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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).view(-1)
