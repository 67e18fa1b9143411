"""Structured pruning that physically removes channels, neurons and latent inputs.

Which units go together is read from the network's data flow by
:mod:`gan_lightning.compress.dependency`: a group's units are cut out of every producer's
output rows (dim 1 of a ConvTranspose weight) and bias, every normalization's parameters and
running statistics, and every consumer's input columns, at each layer's own offset and unit
size (a DCGAN stem's unit is a whole ``4x4`` feature map, ``16`` Linear outputs). A
spectral-norm parametrized layer is cut in its original weight, and its power-iteration
vectors are set to the cut weight's top singular pair, so sigma is the remaining weight's. Every cut is checked to have shrunk its group; anything that cannot be handled
is refused in one sentence.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn
from torch.nn.utils import parametrize

from gan_lightning.compress.dependency import NORMS, WEIGHTED, ChannelGroup, Member, NetworkGraph, features, trace
from gan_lightning.compress.lowrank import LowRank
from gan_lightning.compress.spectral import exact_spectral_vectors
from gan_lightning.errors import CheckpointError, ConfigError

__all__ = ["NORMS", "WEIGHTED", "ChannelGroup", "NetworkGraph", "trace", "remove_units", "remove_inputs", "apply_cut"]


def out_dim(module: nn.Module) -> int:
    """The weight dimension holding a layer's output channels."""
    return 1 if isinstance(module, nn.modules.conv._ConvTransposeNd) else 0


def in_dim(module: nn.Module) -> int:
    return 0 if isinstance(module, nn.modules.conv._ConvTransposeNd) else 1


def weight_name(network: nn.Module, layer: str) -> str:
    """The parameter that holds ``layer``'s weight: the original of a parametrized (spectral
    norm) weight, which is what training and scoring change."""
    module = network.get_submodule(layer)
    return f"{layer}.parametrizations.weight.original" if parametrize.is_parametrized(module, "weight") else f"{layer}.weight"


def layer_of(weight: str) -> str:
    """The layer a weight parameter's name belongs to (the inverse of :func:`weight_name`)."""
    return weight.removesuffix(".parametrizations.weight.original").removesuffix(".weight")


def weight_of(module: nn.Module) -> torch.Tensor:
    """The stored weight (a parametrized layer's original), the one that masks and cuts edit."""
    return module.parametrizations.weight.original if parametrize.is_parametrized(module, "weight") else module.weight


def _slice_param(module: nn.Module, name: str, dim: int, index: torch.Tensor) -> None:
    if name == "weight" and parametrize.is_parametrized(module, "weight"):
        module, name = module.parametrizations.weight, "original"
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


def _kept(member: Member, keep: torch.Tensor, units: int, total: int) -> torch.Tensor:
    """The features of a layer kept when its share ``member`` of a group keeps units ``keep``;
    the features before and after that share (other parts of a concatenation) all stay."""
    end = member.offset + units * member.size
    return torch.cat([torch.arange(member.offset), member.offset + _expand(keep, member.size), torch.arange(end, total)])


def _set_features(module: nn.Module, which: str, n: int) -> None:
    if isinstance(module, nn.Linear):
        setattr(module, "out_features" if which == "out" else "in_features", n)
    elif isinstance(module, nn.GroupNorm):
        if module.num_groups == module.num_channels:
            module.num_groups = n
        module.num_channels = n
    elif isinstance(module, NORMS):
        module.num_features = n
    else:
        setattr(module, "out_channels" if which == "out" else "in_channels", n)


def remove_units(network: nn.Module, group: ChannelGroup, keep: torch.Tensor) -> None:
    """Keep only units ``keep`` (sorted indices) of ``group``: a genuinely smaller network."""
    modules = dict(network.named_modules())
    keep = keep.sort().values.cpu()
    cut = len(keep) < group.units  # a cut that keeps every unit leaves sigma's estimate exactly as it was
    for member in group.producers:
        layer = modules[member.layer]
        rows = _kept(member, keep, group.units, features(layer, "out"))
        _slice_param(layer, "weight", out_dim(layer), rows)
        _slice_param(layer, "bias", 0, rows)
        _set_features(layer, "out", len(rows))
        if cut:
            exact_spectral_vectors(layer)
    for member in group.norm_members:
        norm = modules[member.layer]
        rows = _kept(member, keep, group.units, features(norm, "out"))
        for attr in ("weight", "bias", "running_mean", "running_var"):
            if hasattr(norm, attr):
                _slice_param(norm, attr, 0, rows)
        _set_features(norm, "out", len(rows))
    for member in group.consumers:
        layer = modules[member.layer]
        cols = _kept(member, keep, group.units, features(layer, "in"))
        _slice_param(layer, "weight", in_dim(layer), cols)
        _set_features(layer, "in", len(cols))
        if cut:
            exact_spectral_vectors(layer)
    group.units = len(keep)


def cut_groups(network: nn.Module, example: torch.Tensor, keep: dict[str, torch.Tensor]) -> None:
    """Cut each named group (by its first producer) down to its kept units, tracing again after
    each cut: a cut moves the offsets of the other parts of a concatenation."""
    for layer, kept in keep.items():
        group = {g.producer: g for g in trace(network, example).groups}.get(layer)
        if group is not None and group.units > len(kept):
            remove_units(network, group, kept)


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
        if group.units > len(keep):  # otherwise cut before: replaying a rebuilt network changes nothing
            _check_positions(network, layer, keep, group.units)
    cut_groups(network, example, {layer: torch.tensor(keep, dtype=torch.long) for layer, keep in units.items()})
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
