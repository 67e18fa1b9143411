"""``--distill.teacher_ckpt``: a teacher taken from another run's checkpoint, checked against the student.

The teacher's record (its spec, its edits, its weights and their hash) lives in
:mod:`gan_lightning.distill.teacher`; here is what needs the Lightning side: reading the
checkpoint as train.py wrote it, and refusing a teacher the run's student cannot learn from.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from gan_lightning.class_paths import check_class_path, class_paths_in
from gan_lightning.compress.edits import EditRecord
from gan_lightning.compress.profiling import evaluating, parameter_device
from gan_lightning.specs import spec_from_hparams
from gan_lightning.core.checkpoint import read_checkpoint
from gan_lightning.core.module import GANModule
from gan_lightning.errors import CheckpointError, ConfigError


def load_teacher_checkpoint(path: str) -> tuple[nn.Module, dict[str, Any], EditRecord]:
    """The sampling generator of the train.py checkpoint at ``path``, its spec and its edits;
    every class path it names is checked against the allow-list before anything is built."""
    checkpoint = read_checkpoint(path, flag="--distill.teacher_ckpt")
    spec = spec_from_hparams(checkpoint.get("hyper_parameters"))
    if spec is None:
        raise ConfigError(f"--distill.teacher_ckpt {path} holds no generator class path; give a checkpoint written by train.py")
    for class_path in class_paths_in(checkpoint.get("hyper_parameters")):
        check_class_path(class_path, f"--distill.teacher_ckpt {path}")
    try:
        teacher = GANModule.load_from_checkpoint(path, map_location="cpu").sampling_generator
    except Exception as exc:
        raise CheckpointError(f"--distill.teacher_ckpt {path} cannot be loaded ({type(exc).__name__}: {exc})") from exc
    return teacher, spec, EditRecord.from_checkpoint(checkpoint, f"--distill.teacher_ckpt {path}")


def check_teacher(teacher: nn.Module, module, latent_index: torch.Tensor, where: str) -> None:
    """The teacher must take the student's latents (``latent_index``: each student latent's
    place in the teacher's z) and make samples of the student's shape."""
    teacher_z = getattr(teacher, "z_dim", None)
    if not isinstance(teacher_z, int):
        raise ConfigError(f"{where}: the teacher generator has no integer z_dim attribute")
    if int(latent_index.max()) >= teacher_z:
        raise ConfigError(
            f"{where}: the teacher takes {teacher_z} latent dimensions, fewer than the student's {int(latent_index.max()) + 1}:"
            " distil from a generator of the same --model.z_dim"
        )
    with torch.no_grad(), evaluating(teacher, module.generator):
        made = tuple(teacher(torch.zeros(2, teacher_z)).shape[1:])
        wanted = tuple(module.generator(torch.zeros(2, module.z_dim, device=parameter_device(module.generator))).shape[1:])
    if made != wanted:
        raise ConfigError(f"{where}: the teacher makes samples of shape {made} but the student makes {wanted}: use a teacher trained on the same data")
