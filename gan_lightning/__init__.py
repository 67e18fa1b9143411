"""gan-lightning: train GANs with PyTorch Lightning and compress them with plug-in callbacks.

Rooms, and what each may import (the arrow points down only; ``tests/test_layers.py``
enforces it)::

    gan_lightning.commands   train, evaluate, export   -> everything below
    callbacks (top level)    every Lightning callback  -> core, compress, quality, distill, leaves
    gan_lightning.core       GANModule, losses, hooks  -> compress, quality, leaves
    gan_lightning.quality    FID & co., mode coverage  -> compress, leaves      (no Lightning)
    gan_lightning.distill    taps, adapters, KD losses -> compress, leaves      (no Lightning)
    gan_lightning.compress   pure torch compression    -> leaves                 (no Lightning)
    datamodules (top level)  data only                 -> leaves
    leaves: gan_lightning.errors, gan_lightning.dataset_tensors, gan_lightning.networks, gan_lightning.cache

The names below are imported on first use, so that ``import gan_lightning.compress...`` or
loading an exported generator does not import Lightning or W&B.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "GANModule": "gan_lightning.core.module",
    "GANCallback": "gan_lightning.core.hooks",
    "DCGANGenerator": "gan_lightning.networks",
    "DCGANDiscriminator": "gan_lightning.networks",
    "MLPGenerator": "gan_lightning.networks",
    "MLPDiscriminator": "gan_lightning.networks",
    "load_exported": "gan_lightning.compress.storage",
}
__all__ = list(_EXPORTS)

if TYPE_CHECKING:
    from gan_lightning.compress.storage import load_exported
    from gan_lightning.core.hooks import GANCallback
    from gan_lightning.core.module import GANModule
    from gan_lightning.networks import DCGANDiscriminator, DCGANGenerator, MLPDiscriminator, MLPGenerator


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'gan_lightning' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # the next lookup skips this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
