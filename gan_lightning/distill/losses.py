"""Distillation losses between a student's and a teacher's outputs and features.

- output reconstruction on the same latents (L1, as GAN Compression; or MSE);
- intermediate features through learned adapters where shapes differ (MSE, GAN Compression);
- kernel alignment (CAT, Jin et al. 2021): how alike the two sample-by-sample similarity
  matrices are, which needs no adapter since it compares n x n matrices;
- a perceptual term: L1 between the discriminator's features of student and teacher samples.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

OutputLoss = Literal["l1", "mse"]


def output_loss(student: torch.Tensor, teacher: torch.Tensor, kind: OutputLoss = "l1") -> torch.Tensor:
    return F.l1_loss(student, teacher) if kind == "l1" else F.mse_loss(student, teacher)


def adapter(student_shape: torch.Size, teacher_shape: torch.Size) -> nn.Module:
    """A learned map from student features to the teacher's shape: a 1x1 convolution for
    feature maps (channels differ, spatial size equal), a Linear for flat features."""
    if len(student_shape) == 4 and student_shape[2:] == teacher_shape[2:]:
        return nn.Conv2d(student_shape[1], teacher_shape[1], kernel_size=1)
    if len(student_shape) == 2 and len(teacher_shape) == 2:
        return nn.Linear(student_shape[1], teacher_shape[1])
    raise ValueError(f"no adapter maps features of shape {tuple(student_shape)} to {tuple(teacher_shape)}")


def feature_loss(student: dict[str, torch.Tensor], teacher: dict[str, torch.Tensor], adapters: nn.ModuleDict) -> torch.Tensor:
    """Mean over taps of the MSE between (adapted) student features and teacher features;
    ``adapters`` is keyed by :func:`adapter_key` and holds entries only where shapes differ."""
    losses = []
    for path, s in student.items():
        key = adapter_key(path)
        s = adapters[key](s) if key in adapters else s
        losses.append(F.mse_loss(s.float(), teacher[path].float()))
    return torch.stack(losses).mean()


def kernel_alignment(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Centered kernel alignment of the linear kernels of two feature batches, in [0, 1]."""
    s = student.flatten(1).float()
    t = teacher.flatten(1).float()
    s, t = s - s.mean(0), t - t.mean(0)
    ks, kt = s @ s.T, t @ t.T
    return (ks * kt).sum() / (ks.norm() * kt.norm()).clamp_min(1e-12)


def alignment_loss(student: dict[str, torch.Tensor], teacher: dict[str, torch.Tensor]) -> torch.Tensor:
    """1 - kernel alignment, averaged over taps."""
    return torch.stack([1.0 - kernel_alignment(s, teacher[p]) for p, s in student.items()]).mean()


def perceptual_loss(student: dict[str, torch.Tensor], teacher: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean over the discriminator's taps of the L1 between its features of student and teacher samples."""
    return torch.stack([F.l1_loss(s.float(), teacher[p].float()) for p, s in student.items()]).mean()


def adapter_key(path: str) -> str:
    """A module path as a ModuleDict key (dots are not allowed there)."""
    return path.replace(".", "__")
