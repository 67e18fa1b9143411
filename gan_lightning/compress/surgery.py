"""Structured pruning that physically removes channels, neurons and latent inputs.

A network is traced once (forward hooks, in execution order) into *channel groups*: the
output units of one Linear or (transposed) convolution, the normalization layers that act
on them, and the next layer whose inputs they feed. Removing unit ``i`` of a group slices

- the producer's weight rows (dim 1 of a ConvTranspose weight) and bias,
- the BatchNorm/GroupNorm parameters and running statistics of that unit,
- the consumer's input columns.

Where a Linear feeds a convolution through a reshape (the DCGAN stem, ``c*4*4`` features
viewed as ``c x 4 x 4``), one unit is a whole feature map: ``4*4`` consecutive Linear outputs
(and BatchNorm1d features). A Flatten between a convolution and a Linear (the DCGAN
discriminator's head) is the same in reverse. Generic tools often skip such layers silently;
here every group is checked to have shrunk, and anything that cannot be handled is refused.

The supported networks are chains (each layer's output feeds only the next parametrized
layer, through parameter-free operations), as built by :mod:`gan_lightning.networks`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch
from torch import nn

from gan_lightning.compress.lowrank import LowRank
from gan_lightning.compress.profiling import COUNTED, forward_with_hooks
from gan_lightning.errors import CheckpointError, ConfigError

WEIGHTED = COUNTED  # the layers whose MACs are counted are the ones pruning acts on
NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.GroupNorm)


@dataclass
class ChannelGroup:
    """The units (output channels/neurons) of one layer and everything that shrinks with them."""

    producer: str
    units: int
    unit_size: int  # producer outputs per unit (> 1 when a Linear feeds a feature map)
    consumer: str
    consumer_unit_size: int  # consumer inputs per unit (> 1 when a feature map is flattened into a Linear)
    norms: list[str] = field(default_factory=list)


@dataclass
class NetworkGraph:
    """The chain of a network: its weighted layers in order, the groups between them, and the
    layer that reads the network input (whose input features are the latent dimensions)."""

    layers: list[str]
    groups: list[ChannelGroup]
    input_layer: str
    input_features: int


def out_dim(module: nn.Module) -> int:
    """The weight dimension holding a layer's output channels."""
    return 1 if isinstance(module, nn.modules.conv._ConvTransposeNd) else 0


def in_dim(module: nn.Module) -> int:
    return 0 if isinstance(module, nn.modules.conv._ConvTransposeNd) else 1


def _channels(module: nn.Module, which: str) -> int:
    if isinstance(module, nn.Linear):
        return module.out_features if which == "out" else module.in_features
    return module.out_channels if which == "out" else module.in_channels


@torch.no_grad()
def trace(network: nn.Module, example: torch.Tensor) -> NetworkGraph:
    """Trace ``network`` on ``example`` into its channel groups, or refuse it in one sentence."""
    calls: list[tuple[str, nn.Module, torch.Size, torch.Size]] = []
    names = {m: n for n, m in network.named_modules()}

    def hook(module, inputs, output):
        calls.append((names[module], module, inputs[0].shape, output.shape))

    leaves = [m for m in network.modules() if not list(m.children()) and list(m.parameters(recurse=False))]
    for m in leaves:
        if not isinstance(m, WEIGHTED + NORMS):
            raise ConfigError(
                f"structured pruning cannot handle layer {names[m]!r} of type {type(m).__name__} in"
                f" {type(network).__name__}; supported: Linear, Conv, ConvTranspose, BatchNorm, GroupNorm"
                " (or use --prune.granularity unstructured)"
            )
        if isinstance(m, nn.modules.conv._ConvNd) and m.groups != 1:
            raise ConfigError(f"structured pruning cannot handle grouped convolution {names[m]!r}; use --prune.granularity unstructured")
    forward_with_hooks(network, example, leaves, hook)
    seen = [c[0] for c in calls]
    if len(set(seen)) != len(seen):
        raise ConfigError(f"structured pruning needs each layer of {type(network).__name__} to run once per forward pass")
    weighted = [c for c in calls if isinstance(c[1], WEIGHTED)]
    if not weighted:
        raise ConfigError(f"{type(network).__name__} has no Linear or convolution layer to prune")
    groups = []
    for (p_name, p, _, p_out), (c_name, c, c_in, _) in zip(weighted, weighted[1:]):
        units = _channels(p, "out")
        per_sample_out, per_sample_in = p_out[1:].numel(), c_in[1:].numel()
        if per_sample_out != per_sample_in:
            raise ConfigError(
                f"structured pruning needs {type(network).__name__} to be a chain, but {p_name!r} ({per_sample_out}"
                f" outputs per sample) does not feed {c_name!r} ({per_sample_in} inputs); use --prune.granularity unstructured"
            )
        consumer_units = _channels(c, "in")
        if isinstance(p, nn.Linear) and not isinstance(c, nn.Linear):  # Linear -> reshape -> conv
            unit_size, consumer_unit_size, units = units // consumer_units, 1, consumer_units
        elif not isinstance(p, nn.Linear) and isinstance(c, nn.Linear):  # conv -> flatten -> Linear
            unit_size, consumer_unit_size = 1, consumer_units // units
        else:
            unit_size = consumer_unit_size = 1
        between = calls[seen.index(p_name) + 1 : seen.index(c_name)]
        norms = []
        for n_name, norm, _, _ in between:
            features = norm.num_channels if isinstance(norm, nn.GroupNorm) else norm.num_features
            if isinstance(norm, nn.GroupNorm) and norm.num_groups not in (1, norm.num_channels):
                raise ConfigError(f"structured pruning cannot shrink {n_name!r}: GroupNorm with {norm.num_groups} groups of several channels")
            if features != units * unit_size:
                raise ConfigError(f"structured pruning cannot match {n_name!r} ({features} features) to the {units} units of {p_name!r}")
            norms.append(n_name)
        groups.append(ChannelGroup(p_name, units, unit_size, c_name, consumer_unit_size, norms))
    first_name, first = weighted[0][:2]
    return NetworkGraph([w[0] for w in weighted], groups, first_name, _channels(first, "in"))


def _slice_param(module: nn.Module, name: str, dim: int, index: torch.Tensor) -> None:
    param = getattr(module, name)
    if param is None:
        return
    sliced = param.data.index_select(dim, index.to(param.device)).clone()
    if isinstance(param, nn.Parameter):
        setattr(module, name, nn.Parameter(sliced, requires_grad=param.requires_grad))
    else:
        setattr(module, name, sliced)


def _expand(keep: torch.Tensor, size: int) -> torch.Tensor:
    """Unit indices to the feature indices they cover, when one unit spans ``size`` features."""
    return (keep[:, None] * size + torch.arange(size)).reshape(-1)


def remove_units(network: nn.Module, group: ChannelGroup, keep: torch.Tensor) -> None:
    """Keep only units ``keep`` (sorted indices) of ``group``: a genuinely smaller network."""
    modules = dict(network.named_modules())
    keep = keep.sort().values.cpu()
    producer, consumer = modules[group.producer], modules[group.consumer]
    rows = _expand(keep, group.unit_size)
    _slice_param(producer, "weight", out_dim(producer), rows)
    _slice_param(producer, "bias", 0, rows)
    if isinstance(producer, nn.Linear):
        producer.out_features = len(rows)
    else:
        producer.out_channels = len(rows)
    for name in group.norms:
        norm = modules[name]
        for attr in ("weight", "bias", "running_mean", "running_var"):
            if hasattr(norm, attr):
                _slice_param(norm, attr, 0, rows)
        if isinstance(norm, nn.GroupNorm):
            if norm.num_groups == norm.num_channels:
                norm.num_groups = len(rows)
            norm.num_channels = len(rows)
        else:
            norm.num_features = len(rows)
    cols = _expand(keep, group.consumer_unit_size)
    _slice_param(consumer, "weight", in_dim(consumer), cols)
    if isinstance(consumer, nn.Linear):
        consumer.in_features = len(cols)
    else:
        consumer.in_channels = len(cols)
    group.units = len(keep)


def remove_inputs(network: nn.Module, graph: NetworkGraph, keep: torch.Tensor) -> None:
    """Keep only input features ``keep`` of the first layer (latent dimensions of a generator);
    the network's ``z_dim`` attribute, if any, follows."""
    layer = dict(network.named_modules())[graph.input_layer]
    if not isinstance(layer, nn.Linear):
        raise ConfigError("--prune.latent_amount needs a generator whose first layer is a Linear on z")
    keep = keep.sort().values.cpu()
    _slice_param(layer, "weight", 1, keep)
    layer.in_features = len(keep)
    graph.input_features = len(keep)
    if hasattr(network, "z_dim"):
        network.z_dim = len(keep)


def apply_cut(network: nn.Module, example: torch.Tensor, units: dict[str, list[int]], inputs: Optional[list[int]] = None) -> None:
    """Repeat a recorded cut on a network: ``units`` maps a producer layer to the positions of the
    units it keeps, ``inputs`` the kept input features. A layer already at (or below) its kept
    count was cut before and is left alone, so replaying a rebuilt network changes nothing; a
    layer the network lacks, or fewer units than the cut names, is refused in one sentence."""
    graph = trace(network, example)
    groups = {g.producer: g for g in graph.groups}
    for layer, keep in units.items():
        group = groups.get(layer)
        if group is None and isinstance(_submodule(network, layer), LowRank):
            continue  # factorized after this cut: the network is past it
        if group is None:
            raise CheckpointError(
                f"layer {layer!r} is recorded as cut but {type(network).__name__} has no such layer with units to cut at that point:"
                " use the network settings it was trained with"
            )
        if group.units > len(keep):
            _check_positions(network, layer, keep, group.units)
            remove_units(network, group, torch.tensor(keep, dtype=torch.long))
    if inputs is not None and graph.input_features > len(inputs):
        _check_positions(network, INPUT_KEY, inputs, graph.input_features)
        remove_inputs(network, graph, torch.tensor(inputs, dtype=torch.long))


def _submodule(network: nn.Module, name: str) -> Optional[nn.Module]:
    try:
        return network.get_submodule(name)
    except AttributeError:
        return None


def _check_positions(network: nn.Module, layer: str, keep: list[int], units: int) -> None:
    if keep and max(keep) >= units:
        raise CheckpointError(
            f"layer {layer!r} of {type(network).__name__} has {units} units but the recorded cut keeps unit {max(keep)}:"
            " use the network settings it was trained with"
        )


INPUT_KEY = "<input>"


def compose_keep(previous: Optional[list[int]], keep: torch.Tensor) -> list[int]:
    """Indices into the original layer after a further cut that kept positions ``keep`` of the
    current (already cut) layer."""
    keep = keep.sort().values.tolist()
    return keep if previous is None else [previous[i] for i in keep]
