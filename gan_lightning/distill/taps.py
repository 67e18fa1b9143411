"""Feature taps: forward hooks at named module paths that keep each module's latest output
(and :class:`TrainingCalls`, which keeps a whole network's training calls).

Taps name modules by path, so after a structured cut or a factorization (which replace or
resize modules) they are attached again by the same paths; ``remove`` detaches every hook, so
no network keeps a reference to a tap it no longer needs.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import torch
from torch import nn

from gan_lightning.errors import ConfigError

ACTIVATIONS = (nn.ReLU, nn.LeakyReLU, nn.SiLU, nn.GELU, nn.ELU, nn.Mish, nn.PReLU)


def default_feature_layers(network: nn.Module) -> list[str]:
    """The hidden activations of a network, in order: the output of every block (for the
    bundled networks: after each BatchNorm + ReLU), whose paths survive cuts and factorization."""
    return [name for name, m in network.named_modules() if isinstance(m, ACTIVATIONS)]


def check_layers(network: nn.Module, paths: Iterable[str], flag: str) -> None:
    """Refuse paths that name no module of ``network``, in one sentence naming the flag."""
    names = {n for n, _ in network.named_modules() if n}
    missing = [p for p in paths if p not in names]
    if missing:
        shown = ", ".join(default_feature_layers(network)) or ", ".join(sorted(names)[:12])
        raise ConfigError(f"{flag} names {', '.join(missing)}, which {type(network).__name__} does not have; e.g. {shown}")


class FeatureTaps:
    """Keeps the output of each named module of ``network`` from its latest forward pass."""

    def __init__(self, network: nn.Module, paths: Sequence[str]) -> None:
        check_layers(network, paths, "a feature tap")
        self.network = network
        self.paths = list(paths)
        self.outputs: dict[str, torch.Tensor] = {}
        modules = dict(network.named_modules())
        self._handles = [modules[p].register_forward_hook(self._keeper(p)) for p in self.paths]
        self._modules = {p: modules[p] for p in self.paths}

    def _keeper(self, path: str):
        def keep(module, inputs, output):
            self.outputs[path] = output

        return keep

    def attached_to(self, network: nn.Module) -> bool:
        """Whether every tap hooks the module its path names in ``network`` now (a cut or a
        factorization may have replaced it)."""
        modules = dict(network.named_modules())
        return network is self.network and all(modules.get(p) is m for p, m in self._modules.items())

    def collect(self) -> dict[str, torch.Tensor]:
        """The outputs of the last forward pass, in tap order; clears them."""
        missing = [p for p in self.paths if p not in self.outputs]
        if missing:
            raise RuntimeError(f"feature taps {missing} saw no forward pass (is the tap attached to a module the network still uses?)")
        out = {p: self.outputs[p] for p in self.paths}
        self.outputs = {}
        return out

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles, self.outputs = [], {}


class TrainingCalls:
    """Keeps the inputs and output of every training call of ``network`` (train mode, gradients
    on) until taken: a teacher run on the same inputs gives the targets of an output term, for a
    network that is called inside a training step this project does not write (any
    LightningModule's). Evaluation and scoring passes (eval mode or no gradients) are not kept."""

    def __init__(self, network: nn.Module) -> None:
        self.calls: list[tuple[tuple, torch.Tensor]] = []
        self._handle = network.register_forward_hook(self._keep)

    def _keep(self, network: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        if network.training and torch.is_grad_enabled():
            self.calls.append((inputs, output))

    def take(self) -> list[tuple[tuple, torch.Tensor]]:
        """The calls since the last take, oldest first; forgets them."""
        calls, self.calls = self.calls, []
        return calls

    def remove(self) -> None:
        self._handle.remove()
        self.calls = []
