"""What one pruning event removes: scores, then selection, identical on every rank.

Scores are averaged across ranks and rank 0's decision is broadcast, so even ties cannot split
the ranks. The maths (criteria, selection) lives in ``gan_lightning.compress``; here the
options of ``--callbacks prune`` choose what it is asked.
"""

from __future__ import annotations

from typing import Optional

import torch
from pytorch_lightning import Trainer

from callbacks.prune_options import PruneOptions
from callbacks.target import target_of
from gan_lightning.compress.importance import Importance
from gan_lightning.compress.masks import Masks
from gan_lightning.compress.pruning import PruneDecision, example_input, prunable_groups
from gan_lightning.compress.schedules import Schedule
from gan_lightning.compress.selection import units_to_keep, unstructured_masks
from gan_lightning.compress.surgery import WEIGHTED, trace, weight_name


def decide(
    options: PruneOptions, plan: Schedule, importance: Importance, trainer: Trainer, module, event: int,
    skip: set[str], masks: Masks, original_units: dict[str, int], original_z: Optional[int],
) -> PruneDecision:
    """What event ``event`` of ``plan`` removes. ``skip``: layers never pruned; ``masks``: the
    current masks; ``original_units``/``original_z``: the dense network's unit and latent counts,
    which the schedule's fractions are of."""
    target = target_of(module)

    def scores_of(net: str, weights: list[str], batches: list) -> dict[str, torch.Tensor]:
        scores = target.scores(net, importance, weights, batches, seed=options.seed + event)
        return {k: trainer.strategy.reduce(v, reduce_op="mean") for k, v in scores.items()}

    batches = []
    if importance.needs_data:
        batches = target.calibration_batches(trainer, options.calibration_samples, options.calibration_batch_size, options.seed + event, options.calibration_source)
    decision = PruneDecision()
    for net in options.scoped:
        amount = plan.target(event, options.amounts[net])
        if options.granularity == "unstructured" and amount > 0:
            layers = [n for n, m in getattr(module, net).named_modules() if isinstance(m, WEIGHTED) and f"{net}.{n}" not in skip]
            scores = scores_of(net, [weight_name(getattr(module, net), n) for n in layers], batches)
            new = unstructured_masks(scores, amount, options.ranking, masks.of(net), network=net)
            decision.masks.update({f"{net}.{k}": v.cpu() for k, v in new.items()})
        elif amount > 0:
            groups = prunable_groups(module, net, skip)
            network = getattr(module, net)
            # magnitude needs no data: the same on every rank, whose weights DDP keeps equal
            weights = [weight_name(network, p.layer) for g in groups for p in g.producers]
            scores = scores_of(net, weights, batches) if importance.needs_data else None
            chosen = importance.for_network(groups)
            if chosen is not importance:
                decision.criteria[net] = chosen.name
            units = {g.producer: chosen.unit_scores(network, g, scores) for g in groups}
            original = {g.producer: original_units[f"{net}.{g.producer}"] for g in groups}
            decision.keep[net] = units_to_keep(units, original, amount, options.ranking, options.round_to)
        if net == "generator" and options.latent_amount > 0:
            graph = trace(module.generator, example_input(module, "generator"))
            first = weight_name(module.generator, graph.input_layer)
            score = scores_of(net, [first], batches)[first]
            per_input = score.float().sum(0)  # a Linear's weight is (out, in): one column per latent
            keep = max(1, round((1 - plan.target(event, options.latent_amount)) * original_z))
            decision.inputs = torch.argsort(per_input, descending=True, stable=True)[:keep].sort().values.cpu()
    return trainer.strategy.broadcast(decision, src=0)

