"""grad_norm: log the gradient norm of each network after its optimizer step.

Exploding discriminator gradients and a generator whose gradient vanishes are the first
signs of a GAN going wrong; this puts both on the dashboard as ``train/d_grad_norm`` and
``train/g_grad_norm``.
"""

from __future__ import annotations

import torch
from pytorch_lightning import Trainer
from torch import nn
from typing_extensions import override

from callbacks.registry import register
from gan_lightning.core.hooks import GANCallback
from gan_lightning.errors import ConfigError


def grad_norm(module: nn.Module, norm_type: float) -> torch.Tensor:
    grads = [p.grad.detach().float().norm(norm_type) for p in module.parameters() if p.grad is not None]
    if not grads:
        return torch.zeros(())
    return torch.stack(grads).norm(norm_type)


@register("grad_norm")
class GradNormMonitor(GANCallback):
    """Logs ``train/d_grad_norm`` and ``train/g_grad_norm`` (the total norm over the network's
    parameters, after gradient sync and before the next zero_grad).

    Args:
        norm_type: the p of the p-norm, > 0 (2 is the Euclidean norm).
    """

    def __init__(self, norm_type: float = 2.0) -> None:
        if norm_type <= 0:
            raise ConfigError(f"--grad_norm.norm_type must be > 0, got {norm_type}")
        self.norm_type = norm_type

    @override
    def on_discriminator_step_end(self, trainer: Trainer, module) -> None:
        module.log("train/d_grad_norm", grad_norm(module.discriminator, self.norm_type), on_step=True, on_epoch=False)

    @override
    def on_generator_step_end(self, trainer: Trainer, module) -> None:
        module.log("train/g_grad_norm", grad_norm(module.generator, self.norm_type), on_step=True, on_epoch=False)
