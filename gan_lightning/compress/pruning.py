"""Which weights or units to remove, and removing them from a GANModule's networks (or a
named network of any other module).

Unstructured pruning keeps a boolean mask per weight tensor and zeroes the weights under it;
structured pruning cuts units out with :mod:`gan_lightning.compress.surgery` and returns the cut
as a :class:`~gan_lightning.compress.edits.Cut`, which the caller records (``GANModule.edits``,
which checkpoints carry so a fresh process can rebuild the network).
Amounts are always the cumulative target: the fraction of the layer's *original* weights or
units removed after this event (already removed ones count towards it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import torch
from torch import nn

from gan_lightning.compress.profiling import batchnorm_momentum, batchnorms, evaluating, parameter_device
from gan_lightning.compress.edits import Cut
from gan_lightning.compress.surgery import ChannelGroup, cut_groups, in_dim, out_dim, remove_inputs, trace, weight_of
from gan_lightning.errors import ConfigError


@dataclass
class PruneDecision:
    """What one pruning event removes: decided from scores, then broadcast from rank 0 and
    executed, so every rank acts on the same decision."""

    masks: dict[str, torch.Tensor] = field(default_factory=dict)  # "<network>.<weight>" -> keep mask (unstructured)
    keep: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)  # network -> producer -> kept unit indices
    inputs: Optional[torch.Tensor] = None  # kept latent inputs of the generator (original indices of the current z)
    criteria: dict[str, str] = field(default_factory=dict)  # network -> what --prune.criterion auto chose (for the log; not in to_state)

    def to_state(self) -> dict[str, Any]:
        """Plain containers of tensors, which ``torch.load(weights_only=True)`` reads back."""
        return {"masks": self.masks, "keep": self.keep, "inputs": self.inputs}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "PruneDecision":
        return cls(masks=dict(state.get("masks", {})), keep=dict(state.get("keep", {})), inputs=state.get("inputs"))


GAN_NETWORKS = ("generator", "discriminator")


def example_input(module, network: str) -> torch.Tensor:
    """A small input of ``module.<network>``, for tracing and counting: two latents for a GAN's
    generator, two generated samples for its discriminator, and for a network of any other
    module whatever that network receives when the module runs on its ``example_input_array``
    (Lightning's own attribute for an example of the module's input)."""
    if network not in GAN_NETWORKS:
        return captured_input(module, network)
    z = torch.zeros(2, module.z_dim, device=parameter_device(module.generator))  # also in setup, before the move to the device
    if network == "generator":
        return z
    with evaluating(module.generator), torch.no_grad():
        return module.generator(z)


@torch.no_grad()
def captured_input(module: nn.Module, network: str) -> torch.Tensor:
    """The first input ``module.<network>`` is called with while ``module`` runs (eval mode) on
    ``module.example_input_array``: the network's input is only known to the module's forward."""
    example = getattr(module, "example_input_array", None)
    if example is None:
        raise ConfigError(
            f"{type(module).__name__} has no example_input_array: set self.example_input_array to a small batch of its"
            f" forward's input (e.g. torch.zeros(2, 1, 8, 8)), from which the compression callbacks trace {network!r}"
        )
    device = next(module.parameters()).device
    seen: list[torch.Tensor] = []

    def keep_first(_module, args) -> None:
        if not seen:
            seen.append(args[0])

    handle = getattr(module, network).register_forward_pre_hook(keep_first)
    try:
        with evaluating(module):
            if isinstance(example, dict):
                module(**{k: v.to(device) for k, v in example.items()})
            elif isinstance(example, (tuple, list)):
                module(*[v.to(device) for v in example])
            else:
                module(example.to(device))
    finally:
        handle.remove()
    if not seen:
        raise ConfigError(f"{type(module).__name__}.forward never calls {network!r} on example_input_array, so it cannot be traced")
    return seen[0]


def networks_of(module, network: str) -> list[nn.Module]:
    """The network and its copies that must stay identical in structure (a GAN generator's EMA)."""
    nets = [getattr(module, network)]
    if network == "generator" and getattr(module, "generator_ema", None) is not None:
        nets.append(module.generator_ema)
    return nets


def cut_units(module, network: str, keep: dict[str, torch.Tensor], keep_inputs: Optional[torch.Tensor] = None) -> Cut:
    """Remove units (and latent inputs) of ``module.<network>`` and its EMA copy; returns the cut
    (positions among the units each layer has now) for the caller to record and announce."""
    example = example_input(module, network)
    for net in networks_of(module, network):
        cut_groups(net, example, keep)
        graph = trace(net, example)
        if keep_inputs is not None and len(keep_inputs) < graph.input_features:
            remove_inputs(net, graph, keep_inputs)
        probe = example[:, : graph.input_features] if network == "generator" else example  # z may have shrunk
        after = {g.producer: g.units for g in trace(net, probe).groups}
        missed = [p for p, idx in keep.items() if after.get(p) != len(idx)]
        if missed:  # where other tools silently skip a layer, this one stops
            raise RuntimeError(f"structured pruning did not shrink {network} layer(s) {', '.join(missed)} to the chosen units")
    inputs = None if keep_inputs is None else keep_inputs.sort().values.tolist()
    return Cut({producer: idx.sort().values.tolist() for producer, idx in keep.items()}, inputs)


@torch.no_grad()
def recalibrate_batchnorm(network: nn.Module, z_dim: int, device: torch.device, batches: int = 16, batch_size: int = 64, seed: int = 0) -> None:
    """Re-estimate a generator's BatchNorm running statistics on fresh latents.

    After units are removed or weights zeroed, the statistics describe activations that no
    longer exist, and a generator sampled in eval mode produces garbage until training has
    slowly updated them; this makes the quality measured right after an event meaningful."""
    norms = batchnorms(network)
    if not norms:
        return
    for m in norms:
        m.reset_running_stats()
    gen = torch.Generator().manual_seed(seed)
    was_training = network.training
    network.train()
    try:
        with batchnorm_momentum(network, None):  # a plain average over the batches below
            for _ in range(batches):
                network(torch.randn(batch_size, z_dim, generator=gen).to(device))
    finally:
        network.train(was_training)


def prunable_groups(module, network: str, skip: set[str]) -> list[ChannelGroup]:
    """The channel groups of ``module.<network>`` whose producer is not skipped."""
    graph = trace(getattr(module, network), example_input(module, network))
    return [g for g in graph.groups if f"{network}.{g.producer}" not in skip]


@torch.no_grad()
def zero_units(module, network: str, keep: dict[str, torch.Tensor], inputs: Optional[torch.Tensor]) -> None:
    """Make removed units output exactly zero (producer rows and bias, norm scale and shift,
    and the consumers' columns, which a spectral norm's sigma still sees), so the network
    computes what the physically cut one will, and the cut can wait."""
    for net in networks_of(module, network):
        mask_units(net, example_input(module, network), keep, inputs)


@torch.no_grad()
def mask_units(net: nn.Module, example: torch.Tensor, keep: dict[str, torch.Tensor], inputs: Optional[torch.Tensor] = None) -> None:
    """:func:`zero_units` on one network, given an example of its input."""
    graph = trace(net, example)
    modules = dict(net.named_modules())
    for group in graph.groups:
        if group.producer not in keep:
            continue
        dropped = torch.ones(group.units, dtype=torch.bool)
        dropped[keep[group.producer]] = False
        for member in group.producers:
            layer = modules[member.layer]
            rows = _member_rows(member, dropped)
            weight_of(layer).index_fill_(out_dim(layer), rows.nonzero().view(-1).to(layer.weight.device), 0.0)
            if layer.bias is not None:
                layer.bias[rows.to(layer.bias.device)] = 0.0
        for member in group.consumers:  # their inputs are zero already; a spectral norm's sigma sees the columns
            layer = modules[member.layer]
            cols = _member_rows(member, dropped, weight_of(layer).shape[in_dim(layer)])
            weight_of(layer).index_fill_(in_dim(layer), cols.nonzero().view(-1).to(layer.weight.device), 0.0)
        for member in group.norm_members:  # shift too: a unit after a norm is zero only if beta is
            norm = modules[member.layer]
            for t in (getattr(norm, "weight", None), getattr(norm, "bias", None)):
                if t is not None:
                    t[_member_rows(member, dropped, len(t)).to(t.device)] = 0.0
    if inputs is not None:
        first = modules[graph.input_layer]
        dropped = torch.ones(graph.input_features, dtype=torch.bool)
        dropped[inputs] = False
        weight_of(first)[:, dropped.to(first.weight.device)] = 0.0


def _member_rows(member, dropped: torch.Tensor, total: Optional[int] = None) -> torch.Tensor:
    """A layer's features (of ``total``) that belong to a group's dropped units."""
    rows = dropped.repeat_interleave(member.size)
    if total is None or total == len(rows):
        return rows
    out = torch.zeros(total, dtype=torch.bool)
    out[member.offset : member.offset + len(rows)] = rows
    return out


def load_matching(module, state: dict[str, torch.Tensor], networks: list[str]) -> None:
    """Copy saved values into the named networks' tensors (the rewind of the lottery-ticket procedure)."""
    own = module.state_dict()
    with torch.no_grad():
        for net in networks:
            for key, value in state.items():
                if key.startswith(net + ".") and key in own and own[key].shape == value.shape:
                    own[key].copy_(value)
                    if net == "generator" and module.generator_ema is not None:
                        ema_key = "generator_ema." + key[len("generator.") :]
                        if ema_key in own:
                            own[ema_key].copy_(value)


def reinitialize(*networks: nn.Module, seed: int) -> None:
    """Fresh initial weights (and, through BatchNorm's own reset, fresh running statistics), the
    same for the same seed on every rank, leaving the global random state as it was: the
    ``network`` retrain mode of pruning, and the balance control's restart of a discriminator."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        for network in networks:
            for m in network.modules():
                if list(m.parameters(recurse=False)) and hasattr(m, "reset_parameters"):
                    m.reset_parameters()
