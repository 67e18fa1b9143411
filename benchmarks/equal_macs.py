"""Ours against Torch-Pruning at the same MACs: the counts and choices both benchmarks of residual
pruning compare (``residual_pruning.py`` on the SNGAN generator, ``resnet18_pruning.py`` on a
torchvision classifier).

Ours is measured with the prune callback's own count per group (``units_to_keep``, layerwise, as
``--prune.generator_amount`` / ``Prune(networks={...: amount})`` decides); Torch-Pruning's choice
(``MetaPruner``, ``GroupMagnitudeImportance(p=2)``, its default) is read from its pruning history
as the units each of the project's groups keeps, so both are executed by the same surgery and
only *which* channels go differs. Torch-Pruning is installed for the benchmarks only.
"""

from __future__ import annotations

import copy
import sys
from typing import Callable

import torch
from torch import nn

from gan_lightning.compress.profiling import network_cost
from gan_lightning.compress.selection import units_to_keep
from gan_lightning.compress.surgery import cut_groups, trace


def macs(network: nn.Module, example: torch.Tensor) -> int:
    return network_cost(network, example).macs


def ours_macs_at(network: nn.Module, example: torch.Tensor, amount: float) -> int:
    """MACs after the prune callback's cut at ``amount`` (which units does not change MACs)."""
    net = copy.deepcopy(network)
    groups = trace(net, example).groups
    cut_groups(net, example, units_to_keep({g.producer: torch.zeros(g.units) for g in groups}, {g.producer: g.units for g in groups}, amount, "layerwise"))
    return macs(net, example)


def tp_keep(network: nn.Module, example: torch.Tensor, ratio: float, ignored: Callable[[nn.Module], list[nn.Module]]) -> dict[str, torch.Tensor]:
    """Torch-Pruning's choice at ``ratio`` (the layers ``ignored(copy)`` names keep their outputs),
    as the units each of the project's groups keeps."""
    import torch_pruning as tp

    net = copy.deepcopy(network).eval()
    pruner = tp.pruner.MetaPruner(net, example, importance=tp.importance.GroupMagnitudeImportance(p=2), pruning_ratio=ratio, ignored_layers=ignored(net))
    pruner.step()
    owner = {m.layer: (grp, m.size) for grp in trace(network, example).groups for m in grp.producers}
    keep = {}
    for layer, is_out, removed in pruner.pruning_history():
        if not is_out or layer not in owner:
            continue
        grp, size = owner[layer]
        units = sorted({i // size for i in removed})
        if len(units) * size != len(removed):
            sys.exit(f"Torch-Pruning removed part of a unit of {layer} ({len(removed)} features, units of {size}): not comparable")
        kept = torch.tensor([u for u in range(grp.units) if u not in set(units)], dtype=torch.long)
        keep[grp.producer] = kept if len(kept) else torch.tensor([0])
    return keep


def tp_macs_at(network: nn.Module, example: torch.Tensor, ratio: float, ignored) -> tuple[int, dict[str, torch.Tensor]]:
    keep = tp_keep(network, example, ratio, ignored)
    net = copy.deepcopy(network)
    cut_groups(net, example, keep)
    return macs(net, example), keep


def bisect(macs_at: Callable[[float], int], target: float, lo: float = 0.0, hi: float = 0.95, steps: int = 14) -> float:
    """The amount whose MACs are closest to ``target`` (MACs fall, in steps of whole units, as
    the amount grows): the nearer of the two sides of the last step."""
    for _ in range(steps):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if macs_at(mid) > target else (lo, mid)
    return min((round(lo, 4), round(hi, 4)), key=lambda a: abs(macs_at(a) - target))
