"""Rebuild a freshly constructed network in the shapes its recorded structural edits gave it.

Two kinds of edit change shapes: structured cuts (``structure``: producer layer -> kept
units, ``"<input>"`` -> kept latent inputs; see :mod:`gan_lightning.compress.surgery`) and
low-rank factorization (``ranks``: layer -> rank; see :mod:`gan_lightning.compress.lowrank`).
A cut made before a factorization names the original layer (``stem.0``); one made after it
names a factor (``stem.0.0``). Both replays are idempotent, so cutting, factorizing and
cutting again rebuilds either order. This is the one place that order is written: the
GANModule (resume, ``load_from_checkpoint``) and the export loader both call it.
"""

from __future__ import annotations

import torch
from torch import nn

from gan_lightning.compress.lowrank import apply_ranks
from gan_lightning.compress.surgery import INPUT_KEY, apply_structure


def replay_edits(network: nn.Module, example: torch.Tensor, structure: dict[str, list[int]], ranks: dict[str, int]) -> None:
    """Apply ``structure`` and ``ranks`` to ``network`` (shapes only: the weights are left for a
    state_dict to fill). ``example`` is an input of the network as currently built; for a
    generator whose latent inputs were cut, the cut latent is its leading columns' count."""
    if structure:
        apply_structure(network, example, structure)
        if INPUT_KEY in structure:
            example = example[:, : len(structure[INPUT_KEY])]
    if ranks:
        apply_ranks(network, ranks, weights=False)
        if structure:
            apply_structure(network, example, structure)
