"""Adversarial losses and discriminator regularizers, in one registry.

A loss maps discriminator logits to the two scalar losses; regularizers need the
discriminator itself and live beside them as functions.
"""

from __future__ import annotations

from typing import Callable, Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from gan_lightning.errors import ConfigError


class AdversarialLoss(NamedTuple):
    discriminator: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (real_logits, fake_logits)
    generator: Callable[[torch.Tensor], torch.Tensor]  # (fake_logits)


def _bce_d(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(real, torch.ones_like(real)) + F.binary_cross_entropy_with_logits(
        fake, torch.zeros_like(fake)
    )


def _bce_g(fake: torch.Tensor) -> torch.Tensor:
    # Non-saturating: maximise log D(G(z)) rather than minimise log(1 - D(G(z))).
    return F.binary_cross_entropy_with_logits(fake, torch.ones_like(fake))


def _hinge_d(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    return F.relu(1 - real).mean() + F.relu(1 + fake).mean()


def _wasserstein_d(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    return fake.mean() - real.mean()


def _negated_mean(fake: torch.Tensor) -> torch.Tensor:
    # The generator loss of both hinge and Wasserstein GANs.
    return -fake.mean()


def _lsgan_d(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    return 0.5 * ((real - 1) ** 2).mean() + 0.5 * (fake**2).mean()


def _lsgan_g(fake: torch.Tensor) -> torch.Tensor:
    return 0.5 * ((fake - 1) ** 2).mean()


# Module-level functions, not lambdas: ddp_spawn pickles the module and its loss.
LOSSES: dict[str, AdversarialLoss] = {
    "bce": AdversarialLoss(_bce_d, _bce_g),
    "hinge": AdversarialLoss(_hinge_d, _negated_mean),
    "wasserstein": AdversarialLoss(_wasserstein_d, _negated_mean),
    "lsgan": AdversarialLoss(_lsgan_d, _lsgan_g),
}

LossName = Literal["bce", "hinge", "wasserstein", "lsgan"]


def get_loss(name: str) -> AdversarialLoss:
    if name not in LOSSES:
        raise ConfigError(f"--model.loss must be one of {sorted(LOSSES)}, got {name!r}")
    return LOSSES[name]


def gradient_penalty(discriminator: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """WGAN-GP (Gulrajani et al.): (||grad D(x_hat)|| - 1)^2 on random interpolates."""
    # Synthetic samples appended to the real or the fake batch make the two sizes differ: pair what both have.
    n = min(len(real), len(fake))
    real, fake = real[:n], fake[:n]
    alpha = torch.rand(n, *([1] * (real.dim() - 1)), device=real.device, dtype=real.dtype)
    x_hat = (alpha * real.detach() + (1 - alpha) * fake.detach()).requires_grad_(True)
    (grad,) = torch.autograd.grad(discriminator(x_hat).sum(), x_hat, create_graph=True)
    return ((grad.flatten(1).norm(2, dim=1) - 1) ** 2).mean()


def r1_penalty(discriminator: nn.Module, real: torch.Tensor) -> torch.Tensor:
    """R1 (Mescheder et al.): ||grad D(x)||^2 on real samples (the 1/2 factor is in the weight)."""
    x = real.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(discriminator(x).sum(), x, create_graph=True)
    return grad.flatten(1).pow(2).sum(dim=1).mean()
