"""The distillation teacher's record: enough to rebuild the frozen teacher in a fresh process.

A teacher is a generator as it was at some moment (before a compression callback first changed
it, or a checkpoint's), frozen. Its record holds the class path and init args it is built from,
the edits it had then (:class:`~gan_lightning.compress.edits.EditRecord`, the generator's part:
the same record the GANModule and the export keep), its weights, its latent size, where it came
from and a hash of its weights; as plain containers of tensors, it is the distill callback's
checkpoint state, read back by ``torch.load(weights_only=True)``. Records written before the
edit record existed hold ``structure`` and ``ranks`` instead of ``edits``, and are read too.
"""

from __future__ import annotations

import copy
import hashlib
from typing import Any, Optional

import torch
from torch import nn

from gan_lightning.compress.edits import EditRecord, old_edits
from gan_lightning.errors import CheckpointError
from gan_lightning.specs import build_generator


def weights_hash(network: nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(network.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def capture_teacher(teacher: nn.Module, spec: Optional[dict[str, Any]], edits: EditRecord, source: str) -> tuple[dict[str, Any], nn.Module]:
    """A frozen copy of ``teacher`` and its record: ``spec`` builds it (None: a network this
    project did not build, which cannot be rebuilt), ``edits`` are those it had."""
    teacher = copy.deepcopy(teacher).eval().requires_grad_(False)
    record = {
        "spec": spec, "edits": edits.only("generator").to_state(),
        "state_dict": {k: v.detach().cpu().clone() for k, v in teacher.state_dict().items()},
        "z_dim": getattr(teacher, "z_dim", None), "source": source, "sha256": weights_hash(teacher),
    }
    return record, teacher


def teacher_record(record: dict[str, Any]) -> dict[str, Any]:
    """A saved teacher record in the current form (an old one's ``structure`` and ``ranks``
    become its ``edits``), so that the checkpoints a resumed run writes hold the current form."""
    if "edits" in record:
        return record
    old = {k: v for k, v in record.items() if k not in ("structure", "ranks")}
    return {**old, "edits": EditRecord({"generator": old_edits(record.get("structure", {}), record.get("ranks", {}))}).to_state()}


def rebuild_teacher(record: dict[str, Any]) -> nn.Module:
    """The saved teacher, rebuilt from its class path, its recorded edits and its weights."""
    if record.get("spec") is None:
        raise CheckpointError("the distill callback's saved teacher has no generator class path (the run was not built by train.py), so it cannot be rebuilt")
    built = build_generator(record["spec"], source="the distill teacher saved in the checkpoint")
    build_z = record["spec"]["init_args"].get("z_dim", getattr(built, "z_dim", None))
    edits = EditRecord.from_state(teacher_record(record)["edits"], "the distill teacher saved in the checkpoint")
    teacher = edits.replay("generator", built, torch.zeros(2, build_z))
    teacher.load_state_dict(record["state_dict"])
    teacher.z_dim = record["z_dim"]
    teacher = teacher.eval().requires_grad_(False)
    if weights_hash(teacher) != record["sha256"]:
        raise CheckpointError("the distill callback's saved teacher does not match its hash: the checkpoint is corrupted")
    return teacher
