"""Which weights or units to keep, given their scores: identical on every rank for equal scores.

Amounts are the cumulative target: the fraction of a layer's *original* weights or units
removed after this event (already removed ones count towards it).
"""

from __future__ import annotations

import math
from typing import Literal, Optional

import torch

from gan_lightning.logs import get_logger

Ranking = Literal["layerwise", "global"]
LAYER_FLOOR = 0.02  # the share of a layer's weights that a global unstructured cut leaves it
log = get_logger(__name__)


def unstructured_masks(
    scores: dict[str, torch.Tensor], amount: float, ranking: Ranking, current: Optional[dict[str, torch.Tensor]] = None, network: str = ""
) -> dict[str, torch.Tensor]:
    """Boolean keep-masks removing ``amount`` of the scored weights, lowest scores first.
    Weights outside ``current`` masks stay removed (they rank below every live weight). A global
    ranking leaves every layer at least :data:`LAYER_FLOOR` of its weights (one at least) and
    logs the layers it floored; ``network`` names them in that message."""
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
    order = torch.argsort(flat, stable=True)
    floors = {name: min(max(1, math.ceil(LAYER_FLOOR * s.numel())), int(torch.isfinite(s).sum())) for name, s in ranked.items()}
    plain = _split(_removing(order[:removed], flat.numel()), ranked)
    floored = [name for name, mask in plain.items() if int(mask.sum()) < floors[name]]
    if not floored:
        return plain
    # One layer's scores can all sit below another's (a different scale, an early small layer):
    # a global cut would then empty it, and a generator whose first layer is zero makes the same
    # image from every latent. Each layer keeps its best weights up to the floor instead.
    protected = torch.cat([_keep_top(s, floors[name]).reshape(-1) for name, s in ranked.items()])
    order = order[~protected[order]]
    names = ", ".join(f"{network}.{n}" if network else n for n in floored)
    log.warning(
        "global unstructured pruning would leave %s with fewer than %s of its weights, which can make the network's"
        " output ignore its input; each such layer keeps its best %s (at least one weight) and the other layers lose more",
        names, f"{LAYER_FLOOR:.0%}", f"{LAYER_FLOOR:.0%}",
    )
    return _split(_removing(order[:removed], flat.numel()), ranked)


def _removing(indices: torch.Tensor, numel: int) -> torch.Tensor:
    keep = torch.ones(numel, dtype=torch.bool, device=indices.device)
    keep[indices] = False
    return keep


def _split(keep: torch.Tensor, like: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out, start = {}, 0
    for name, s in like.items():
        out[name] = keep[start : start + s.numel()].view_as(s)
        start += s.numel()
    return out


def _keep_top(scores: torch.Tensor, k: int) -> torch.Tensor:
    keep = torch.zeros(scores.numel(), dtype=torch.bool, device=scores.device)
    if k > 0:  # stable sort: equal scores are kept in index order, identically on every rank
        keep[torch.argsort(scores.reshape(-1), descending=True, stable=True)[:k]] = True
    return keep.view_as(scores)


def rounded_count(count: int, units: int, round_to: int) -> int:
    """``count`` moved to the nearest multiple of ``round_to`` (at least one multiple), but never
    above ``units``, the layer's current count. CPU kernels process channels in SIMD blocks of
    8 or 16: a layer of 14 channels runs about as slowly as one of 16 (benchmarks/deploy_latency.py)."""
    if round_to <= 1:
        return count
    return min(units, max(round_to, round_to * round(count / round_to)))


def units_to_keep(
    scores: dict[str, torch.Tensor], original: dict[str, int], amount: float, ranking: Ranking, round_to: int = 1
) -> dict[str, torch.Tensor]:
    """Indices (into the current units) of the units each group keeps: ``1 - amount`` of its
    original count, at least one, then rounded by :func:`rounded_count`. Global ranking compares
    scores divided by their layer's mean, since raw scores of differently sized layers are not
    on one scale."""
    keep = _units_to_keep(scores, original, amount, ranking)
    for name, idx in keep.items():
        count = rounded_count(len(idx), len(scores[name]), round_to)
        if count != len(idx):  # within a layer both rankings keep a top set by score: so does the rounded one
            keep[name] = _top_indices(scores[name], count)
    return keep


def _units_to_keep(scores: dict[str, torch.Tensor], original: dict[str, int], amount: float, ranking: Ranking) -> dict[str, torch.Tensor]:
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
