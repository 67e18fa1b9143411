"""The keep-masks of unstructured pruning: which single weights were removed, and keeping them at zero.

A masked weight is only zeroed, so the optimizer would grow it back at its next step: the
masks are re-applied after every optimizer step (a GAN's D and G steps alike) until the
pruning retrains without them (``--prune.retrain weight``).
"""

from __future__ import annotations

from typing import Any, Iterable

import torch
from torch import nn


class Masks(dict):
    """Boolean keep-masks by ``"<network>.<parameter name>"`` (e.g. ``generator.stem.0.weight``),
    the same shape as the weight. A plain dict in checkpoints (:meth:`to_state`), so they load
    with ``weights_only``."""

    def to_state(self) -> dict[str, torch.Tensor]:
        return dict(self)

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "Masks":
        return cls(state)

    def clone(self) -> "Masks":
        return Masks({k: v.clone() for k, v in self.items()})

    def networks(self) -> set[str]:
        return {key.split(".", 1)[0] for key in self}

    def of(self, network: str) -> dict[str, torch.Tensor]:
        """The masks of one network, by parameter name within it."""
        return {k[len(network) + 1 :]: v for k, v in self.items() if k.startswith(network + ".")}

    @torch.no_grad()
    def apply(self, network: str, copies: Iterable[nn.Module]) -> None:
        """Zero the removed weights of ``network`` in each of ``copies`` (the network and the
        copies that share its structure, e.g. a generator's EMA)."""
        mine = [k for k in self if k.startswith(network + ".")]
        if not mine:
            return
        for net in copies:
            params = dict(net.named_parameters())
            for key in mine:
                p, mask = params[key[len(network) + 1 :]], self[key]
                if mask.device != p.device:  # moved once (decided and restored on CPU), not every step
                    mask = self[key] = mask.to(p.device)
                p.mul_(mask)

    def keep_inputs(self, key: str, inputs: torch.Tensor) -> None:
        """After a cut of a layer's inputs (a generator's latent dimensions), keep only the
        columns of the kept ``inputs`` in the mask of that layer's weight ``key``."""
        mask = self.get(key)
        if mask is not None and mask.shape[1] != len(inputs):  # the mask still has the removed inputs' columns
            self[key] = mask[:, inputs.sort().values]
