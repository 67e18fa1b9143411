"""Plug-in callbacks, switched on by name with ``python train.py --callbacks a,b``.

Importing this package registers every callback module listed here.
"""

from callbacks import clip  # noqa: F401  (registers "clip")
from callbacks import diffaug  # noqa: F401  (registers "diffaug")
from callbacks import distill  # noqa: F401  (registers "distill")
from callbacks import grad_norm  # noqa: F401  (registers "grad_norm")
from callbacks import lowrank  # noqa: F401  (registers "lowrank")
from callbacks import prune  # noqa: F401  (registers "prune")
from callbacks import quantize  # noqa: F401  (registers "quantize")
from callbacks import vae  # noqa: F401  (registers "vae")
from callbacks.registry import CALLBACKS, parse_names, register

__all__ = ["CALLBACKS", "parse_names", "register"]
