"""``--distill.student``: a new, smaller generator that takes the run's generator's place.

The student's spec is completed once from the run's generator (its class path unless one is
given, its init args overridden by the given ones), checked before training (shapes, latent
size, the epoch), and at its epoch it replaces the generator through one ``Replace`` edit
(:mod:`gan_lightning.compress.edits`), which the checkpoint records so that resume, evaluate
and export build the student.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from pytorch_lightning import Trainer
from torch import nn

from gan_lightning.compress.edits import replace_network
from gan_lightning.compress.profiling import evaluating, parameter_device
from gan_lightning.compress.schedules import event_epoch
from gan_lightning.specs import spec_from_hparams
from gan_lightning.errors import CheckpointError, ConfigError
from gan_lightning.specs import build_generator


class StudentReplacement:
    """``student``: ``{class_path: ..., init_args: {...}}`` as given (either may be left out);
    ``epoch``: ``--distill.student_epoch``; ``teacher_ckpt``: whether the teacher comes ready
    from a checkpoint (then the student starts at epoch 0)."""

    def __init__(self, student: dict[str, Any], epoch: Optional[int], teacher_ckpt: Optional[str]) -> None:
        if not isinstance(student, dict) or not set(student) <= {"class_path", "init_args"} or not isinstance(student.get("init_args", {}), dict):
            raise ConfigError(f"--distill.student takes {{class_path: CLASS, init_args: {{...}}}} (either may be left out), got {student!r}")
        if epoch is not None and epoch < 0:
            raise ConfigError(f"--distill.student_epoch must be an epoch >= 0, got {epoch}")
        self.student, self.epoch, self.teacher_ckpt = student, epoch, teacher_ckpt

    def due_epoch(self, max_epochs: Optional[int]) -> int:
        if self.epoch is None and self.teacher_ckpt is not None:
            return 0  # the teacher is ready: nothing to train first
        return event_epoch(self.epoch, max_epochs, "--distill.student_epoch")

    def is_due(self, trainer: Trainer, module) -> bool:
        # ">=": a run resumed (or extended) past the epoch without the replacement still gets it
        return module.edits.replacement("generator") is None and trainer.current_epoch >= self.due_epoch(trainer.max_epochs)

    def spec(self, module) -> dict[str, Any]:
        """The student's class path and init args, completed from the run's generator."""
        configured = spec_from_hparams(module.hparams) or {}
        class_path = self.student.get("class_path") or configured.get("class_path")
        if class_path is None:
            raise ConfigError("--distill.student needs a class_path here: the module holds no generator class path to default to (it was not built by train.py)")
        init_args = dict(configured.get("init_args") or {}) if class_path == configured.get("class_path") else {}
        return {"class_path": class_path, "init_args": {**init_args, **dict(self.student.get("init_args") or {})}}

    def build(self, spec: dict[str, Any], module) -> nn.Module:
        """A fresh student from its :meth:`spec`."""
        try:
            student = build_generator(spec, source="--distill.student")
        except CheckpointError as exc:
            raise ConfigError(str(exc)) from exc
        if getattr(student, "z_dim", module.z_dim) != module.z_dim:
            raise ConfigError(f"--distill.student takes {student.z_dim} latent dimensions but the run's generator {module.z_dim}: leave z_dim out of its init_args")
        return student

    def check(self, trainer: Trainer, module, compressing: list) -> None:
        """Refuse, before training, a student that cannot replace this run's generator.
        ``compressing``: the callbacks that compress the generator (which make a student already)."""
        if compressing:
            names = ", ".join(sorted(getattr(cb, "option_group", type(cb).__name__) for cb in compressing))
            raise ConfigError(
                f"--distill.student replaces the generator by a new network, and {names} compresses the generator into a student"
                " already: use one of the two (--callbacks prune,distill without --distill.student, or --callbacks distill --distill.student ...)"
            )
        if module.edits.replacement("generator") is not None:  # resumed after the replacement
            return
        if module.edits.compressed("generator"):
            raise ConfigError("--distill.student replaces the generator, which is already pruned or factorized: distil into it without --distill.student")
        if self.teacher_ckpt is not None and self.epoch:
            raise ConfigError(
                f"--distill.student_epoch {self.epoch} with --distill.teacher_ckpt would train the configured generator for"
                " nothing until the student replaces it: leave --distill.student_epoch out (the student starts at epoch 0)"
            )
        probe = self.build(self.spec(module), module)
        with torch.no_grad(), evaluating(probe, module.generator):
            z = torch.zeros(2, module.z_dim)
            made = tuple(probe(z).shape[1:])
            wanted = tuple(module.generator(z.to(parameter_device(module.generator))).shape[1:])
        if made != wanted:
            raise ConfigError(f"--distill.student makes samples of shape {made} but the run's generator makes {wanted}: give it the run's image_size and channels")
        epoch = self.due_epoch(trainer.max_epochs)
        if trainer.max_epochs is not None and trainer.max_epochs >= 0 and epoch >= trainer.max_epochs:
            raise ConfigError(f"--distill.student_epoch {epoch} is not before --trainer.max_epochs {trainer.max_epochs}: the student would never train")

    def replace(self, module, previous: Optional[nn.Module]) -> dict[str, Any]:
        """Put a fresh student in the generator's place, recorded and announced as one edit
        (rank 0's initial weights on every rank: the DDP wrapper that ``architecture_changed``
        rebuilds broadcasts them); returns its spec."""
        spec = self.spec(module)
        replaces = module.edits.spec("generator", spec_from_hparams(module.hparams))
        module.architecture_changed("generator", previous, edit=replace_network(module, "generator", self.build(spec, module), spec, replaces))
        return spec
