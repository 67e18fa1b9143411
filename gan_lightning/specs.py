"""A network from its spec: a class path and init args, as LightningCLI stores them in a
checkpoint's hyper-parameters and as exports and the edit record keep them.

A leaf: checkpoints, exports, the edit record and the distillation student all build networks
this way, and none of them should need the others (or Lightning) for it.
"""

from __future__ import annotations

from typing import Any, Optional

from torch import nn

from gan_lightning.class_paths import import_class
from gan_lightning.errors import CheckpointError


def spec_from_hparams(hparams) -> Optional[dict[str, Any]]:
    """``{"class_path", "init_args"}`` of the generator in a GANModule's (or a checkpoint's)
    hyper-parameters; None when they hold no class path (a module built in Python)."""
    spec = hparams.get("generator") if hparams is not None else None
    if isinstance(spec, dict) and isinstance(spec.get("class_path"), str):
        return {"class_path": spec["class_path"], "init_args": dict(spec.get("init_args") or {})}
    return None


def build_generator(spec: dict[str, Any], source: str = "the file") -> nn.Module:
    """A freshly initialized network from its class path and init args; the class path must be
    on the allow-list (:mod:`gan_lightning.class_paths`) since ``spec`` comes from ``source``."""
    cls = import_class(spec["class_path"], source)
    if not issubclass(cls, nn.Module):
        raise CheckpointError(f"{source} names the generator class {spec['class_path']!r}, which is not a torch.nn.Module")
    try:
        return cls(**spec.get("init_args", {}))
    except TypeError as exc:
        raise CheckpointError(f"{source}: generator class {spec['class_path']!r} does not take the recorded init args ({exc})") from exc
