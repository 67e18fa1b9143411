"""gan-lightning: train GANs with PyTorch Lightning and compress them with plug-in callbacks.

The rooms of the package and what each may import: ``ROOMS`` in ``tests/test_layers.py``, which
enforces them (the developer notes in ``docs/developer.md`` explain them).

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
    "load_exported": "gan_lightning.deploy.export_file",
}
__all__ = list(_EXPORTS)

if TYPE_CHECKING:
    from gan_lightning.deploy.export_file import load_exported
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
