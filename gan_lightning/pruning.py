"""Which weights or units to remove, and removing them from a GANModule.

Unstructured pruning keeps a boolean mask per weight tensor and zeroes the weights under it;
structured pruning cuts units out with :mod:`gan_lightning.surgery` and records the cut in
``GANModule.structure``, which checkpoints carry so a fresh process can rebuild the network.
Amounts are always the cumulative target: the fraction of the layer's *original* weights or
units removed after this event (already removed ones count towards it).
"""

from __future__ import annotations

import math
from typing import Literal, Optional

import torch
from pytorch_lightning import Trainer
from pytorch_lightning.strategies import DDPStrategy
from torch import nn

from gan_lightning.profiling import evaluating
from gan_lightning.surgery import INPUT_KEY, ChannelGroup, compose_keep, out_dim, remove_inputs, remove_units, trace

Ranking = Literal["layerwise", "global"]


def unstructured_masks(
    scores: dict[str, torch.Tensor], amount: float, ranking: Ranking, current: Optional[dict[str, torch.Tensor]] = None
) -> dict[str, torch.Tensor]:
    """Boolean keep-masks removing ``amount`` of the scored weights, lowest scores first.
    Weights outside ``current`` masks stay removed (they rank below every live weight)."""
    current = current or {}
    ranked = {}
    for name, s in scores.items():
        s = s.detach().float().clone()
        if name in current:
            s[~current[name].to(s.device)] = -math.inf
        ranked[name] = s
    if ranking == "layerwise":
        return {name: _keep_top(s, s.numel() - round(amount * s.numel())) for name, s in ranked.items()}
    flat = torch.cat([s.reshape(-1) for s in ranked.values()])
    removed = round(amount * flat.numel())
    if removed == 0:
        return {name: torch.ones_like(s, dtype=torch.bool) for name, s in ranked.items()}
    keep = torch.ones(flat.numel(), dtype=torch.bool, device=flat.device)
    keep[torch.argsort(flat, stable=True)[:removed]] = False
    out, start = {}, 0
    for name, s in ranked.items():
        out[name] = keep[start : start + s.numel()].view_as(s)
        start += s.numel()
    return out


def _keep_top(scores: torch.Tensor, k: int) -> torch.Tensor:
    keep = torch.zeros(scores.numel(), dtype=torch.bool, device=scores.device)
    if k > 0:  # stable sort: equal scores are kept in index order, identically on every rank
        keep[torch.argsort(scores.reshape(-1), descending=True, stable=True)[:k]] = True
    return keep.view_as(scores)


def units_to_keep(
    scores: dict[str, torch.Tensor], original: dict[str, int], amount: float, ranking: Ranking
) -> dict[str, torch.Tensor]:
    """Indices (into the current units) of the units each group keeps: ``1 - amount`` of its
    original count, at least one. Global ranking compares scores divided by their layer's
    mean, since raw scores of differently sized layers are not on one scale."""
    if ranking == "layerwise":
        return {name: _top_indices(s, max(1, round((1 - amount) * original[name]))) for name, s in scores.items()}
    normalized = {name: s / s.mean().clamp_min(1e-12) for name, s in scores.items()}
    budget = max(len(scores), round((1 - amount) * sum(original.values())))
    # each layer keeps its best unit; the rest of the budget goes to the best units overall
    keep = {name: [int(s.argmax())] for name, s in normalized.items()}
    pool = [(float(v), name, i) for name, s in normalized.items() for i, v in enumerate(s.tolist()) if i != keep[name][0]]
    pool.sort(key=lambda t: (-t[0], t[1], t[2]))
    for _, name, i in pool[: budget - len(scores)]:
        keep[name].append(i)
    return {name: torch.tensor(sorted(idx), dtype=torch.long) for name, idx in keep.items()}


def _top_indices(scores: torch.Tensor, k: int) -> torch.Tensor:
    return torch.argsort(scores, descending=True, stable=True)[:k].sort().values.cpu()


def example_input(module, network: str) -> torch.Tensor:
    """A two-sample input of ``module.<network>``, for tracing and counting."""
    z = torch.zeros(2, module.z_dim, device=module.device)
    if network == "generator":
        return z
    with evaluating(module.generator), torch.no_grad():
        return module.generator(z)


def networks_of(module, network: str) -> list[nn.Module]:
    """The network and its copies that must stay identical in structure (the generator's EMA)."""
    nets = [getattr(module, network)]
    if network == "generator" and module.generator_ema is not None:
        nets.append(module.generator_ema)
    return nets


def cut_units(module, network: str, keep: dict[str, torch.Tensor], keep_inputs: Optional[torch.Tensor] = None) -> None:
    """Remove units (and latent inputs) of ``module.<network>`` and its EMA copy, and record the
    cut, in original indices, in ``module.structure``."""
    example = example_input(module, network)
    record = module.structure.setdefault(network, {})
    for net in networks_of(module, network):
        graph = trace(net, example)
        for group in graph.groups:
            if group.producer in keep and len(keep[group.producer]) < group.units:
                remove_units(net, group, keep[group.producer])
        if keep_inputs is not None and len(keep_inputs) < graph.input_features:
            remove_inputs(net, graph, keep_inputs)
        probe = example[:, : graph.input_features] if network == "generator" else example  # z may have shrunk
        after = {g.producer: g.units for g in trace(net, probe).groups}
        missed = [p for p, idx in keep.items() if after.get(p) != len(idx)]
        if missed:  # where other tools silently skip a layer, this one stops
            raise RuntimeError(f"structured pruning did not shrink {network} layer(s) {', '.join(missed)} to the chosen units")
    for producer, idx in keep.items():
        record[producer] = compose_keep(record.get(producer), idx)
    if keep_inputs is not None:
        record[INPUT_KEY] = compose_keep(record.get(INPUT_KEY), keep_inputs)
        module.z_dim = len(record[INPUT_KEY])


@torch.no_grad()
def recalibrate_batchnorm(network: nn.Module, z_dim: int, device: torch.device, batches: int = 16, batch_size: int = 64, seed: int = 0) -> None:
    """Re-estimate a generator's BatchNorm running statistics on fresh latents.

    After units are removed or weights zeroed, the statistics describe activations that no
    longer exist, and a generator sampled in eval mode produces garbage until training has
    slowly updated them; this makes the quality measured right after an event meaningful."""
    norms = [m for m in network.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not norms:
        return
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a plain average over the batches below
    gen = torch.Generator().manual_seed(seed)
    was_training = network.training
    network.train()
    try:
        for _ in range(batches):
            network(torch.randn(batch_size, z_dim, generator=gen).to(device))
    finally:
        network.train(was_training)
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum


def prunable_groups(module, network: str, skip: set[str]) -> list[ChannelGroup]:
    """The channel groups of ``module.<network>`` whose producer is not skipped."""
    graph = trace(getattr(module, network), example_input(module, network))
    return [g for g in graph.groups if f"{network}.{g.producer}" not in skip]


def refresh_training_state(trainer: Trainer) -> None:
    """After parameters were replaced: new optimizers over them (their moments described the old
    shapes) and, under DDP, a new wrapper, since DistributedDataParallel registered the old
    parameters in its gradient buckets. The wrapper's constructor also broadcasts rank 0's
    weights, so every rank continues from identical ones."""
    strategy = trainer.strategy
    strategy.setup_optimizers(trainer)
    if isinstance(strategy, DDPStrategy) and trainer.world_size > 1:
        # no public API re-wraps a model mid-fit; this is what DDPStrategy.configure_ddp does
        strategy.model = strategy._setup_model(strategy.lightning_module)
        strategy._register_ddp_hooks()


@torch.no_grad()
def zero_units(module, network: str, keep: dict[str, torch.Tensor], inputs: Optional[torch.Tensor]) -> None:
    """Make removed units output exactly zero (producer rows and bias, norm scale and shift),
    so the network computes what the physically cut one will, and the cut can wait."""
    for net in networks_of(module, network):
        graph = trace(net, example_input(module, network))
        modules = dict(net.named_modules())
        for group in graph.groups:
            if group.producer not in keep:
                continue
            dropped = torch.ones(group.units, dtype=torch.bool)
            dropped[keep[group.producer]] = False
            rows = dropped.repeat_interleave(group.unit_size)
            producer = modules[group.producer]
            producer.weight.index_fill_(out_dim(producer), rows.nonzero().view(-1).to(producer.weight.device), 0.0)
            for name in ["bias", *[f"{n}.weight" for n in group.norms], *[f"{n}.bias" for n in group.norms]]:
                owner, attr = (producer, name) if "." not in name else (modules[name.rsplit(".", 1)[0]], name.rsplit(".", 1)[1])
                t = getattr(owner, attr, None)
                if t is not None:
                    t[rows.to(t.device)] = 0.0
        if inputs is not None:
            first = modules[graph.input_layer]
            dropped = torch.ones(graph.input_features, dtype=torch.bool)
            dropped[inputs] = False
            first.weight[:, dropped.to(first.weight.device)] = 0.0


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
