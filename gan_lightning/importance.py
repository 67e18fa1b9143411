"""How much each weight matters: the importance criteria of the prune callback.

Every criterion gives one non-negative score per weight element; structured pruning sums
them over a unit's weights (the root of the sum for ``l2``, which makes it the unit's L2 norm),
except that ``l1``/``l2`` score a unit followed by BatchNorm/GroupNorm by the norm's scale
(see :func:`magnitude_unit_scores`).

- ``l1`` / ``l2``: weight magnitude |w| / w^2 (no data needed).
- ``gradient``: sensitivity, the mean over calibration batches of |dL/dw|.
- ``taylor``: first-order Taylor estimate of the loss change when w is removed, |w * dL/dw|.
- ``fisher``: the diagonal empirical Fisher, the sum over samples of (dL_i/dw)^2, from
  per-sample gradients (``torch.func``).
- ``obd``: Optimal Brain Damage, 0.5 * |H_ww| * w^2, with the Hessian diagonal estimated by
  Hutchinson probes (E[v * Hv] for Rademacher v).

L is the network's own adversarial loss: the generator's loss through the (fixed)
discriminator, or the discriminator's loss on real calibration samples and generated ones.
Both networks are put in eval mode while scoring, so BatchNorm statistics are not changed.
"""

from __future__ import annotations

from typing import Literal, Sequence

import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from gan_lightning.profiling import evaluating

Criterion = Literal["l1", "l2", "gradient", "taylor", "fisher", "obd"]
NEEDS_DATA = ("gradient", "taylor", "fisher", "obd")


def _network_loss(module, network: str, real: torch.Tensor, z: torch.Tensor, params=None) -> torch.Tensor:
    """The adversarial loss of ``network``; with ``params`` the network runs functionally on them."""
    g, d = module.generator, module.discriminator
    if network == "generator":
        fake = functional_call(g, params, (z,)) if params is not None else g(z)
        return module.adversarial.generator(d(fake))
    with torch.no_grad():
        fake = g(z)
    run = (lambda x: functional_call(d, params, (x,))) if params is not None else d
    return module.adversarial.discriminator(run(real), run(fake))


def weight_importance(
    module,
    network: str,
    criterion: Criterion,
    weights: Sequence[str],
    batches: Sequence[torch.Tensor],
    seed: int = 0,
    hutchinson_probes: int = 2,
) -> dict[str, torch.Tensor]:
    """Scores (same shape as the weight) for the named weight parameters of ``module.<network>``.

    ``batches`` are real calibration batches on the module's device; latents are drawn from
    ``seed``, so the same weights and batches always give the same scores."""
    net: nn.Module = getattr(module, network)
    params = dict(net.named_parameters())
    missing = [w for w in weights if w not in params]
    if missing:
        raise KeyError(f"{network} has no parameters {missing}")
    if criterion in ("l1", "l2"):
        return {w: params[w].detach().abs() if criterion == "l1" else params[w].detach().pow(2) for w in weights}
    gen = torch.Generator().manual_seed(seed)
    latents = [torch.randn(len(b), module.z_dim, generator=gen).to(b.device) for b in batches]
    scores = {w: torch.zeros_like(params[w], dtype=torch.float32) for w in weights}
    with evaluating(module.generator, module.discriminator), torch.enable_grad():
        for real, z in zip(batches, latents):
            if criterion == "fisher":
                for w, s in _per_sample_sq_grads(module, network, net, weights, real, z).items():
                    scores[w] += s
                continue
            targets = [params[w] for w in weights]
            loss = _network_loss(module, network, real, z)
            grads = torch.autograd.grad(loss, targets, create_graph=criterion == "obd")
            for w, p, g in zip(weights, targets, grads):
                if criterion == "gradient":
                    scores[w] += g.detach().abs().float()
                elif criterion == "taylor":
                    scores[w] += (p.detach() * g.detach()).abs().float()
            if criterion == "obd":
                for w, h in _hutchinson_diagonal(targets, grads, hutchinson_probes, gen).items():
                    scores[weights[w]] += 0.5 * h.abs() * targets[w].detach().float().pow(2)
    if criterion != "fisher":  # Fisher is a sum over samples by definition; the others are means
        scores = {w: s / len(batches) for w, s in scores.items()}
    return scores


def _per_sample_sq_grads(module, network, net, weights, real, z) -> dict[str, torch.Tensor]:
    params = {k: v.detach() for k, v in net.named_parameters()}
    buffers = dict(net.named_buffers())

    def one(p, x_real, x_z):
        return _network_loss(module, network, x_real[None], x_z[None], {**p, **buffers})

    # chunk_size bounds the memory of the per-sample gradients (batch x parameters)
    per_sample = vmap(grad(one), in_dims=(None, 0, 0), chunk_size=16)(params, real, z)
    return {w: per_sample[w].float().pow(2).sum(0) for w in weights}


def _hutchinson_diagonal(targets, grads, probes: int, gen: torch.Generator) -> dict[int, torch.Tensor]:
    diag = {i: torch.zeros_like(t, dtype=torch.float32) for i, t in enumerate(targets)}
    for k in range(probes):
        vs = [(torch.randint(0, 2, t.shape, generator=gen) * 2 - 1).to(t) for t in targets]
        hvs = torch.autograd.grad(grads, targets, grad_outputs=vs, retain_graph=k < probes - 1)
        for i, (v, hv) in enumerate(zip(vs, hvs)):
            diag[i] += (v * hv).detach().float() / probes
    return diag


def magnitude_unit_scores(network: nn.Module, group, criterion: Criterion) -> torch.Tensor:
    """``l1``/``l2`` score of each unit of a channel group (see gan_lightning.surgery).

    A BatchNorm/GroupNorm right after the producer normalizes its output, cancelling the scale
    of the producer's weights: there the norm's own scale |gamma| says how much a unit
    contributes (network slimming, Liu et al. 2017). Ranking by the producer's weights instead
    keeps arbitrary channels, and a DCGAN generator pruned that way does not recover.
    Without an affine norm it is the producer weights' norm."""
    modules = dict(network.named_modules())
    affine = [modules[n].weight for n in group.norms if getattr(modules[n], "weight", None) is not None]
    if affine:
        gamma = affine[-1].detach().float()
        return unit_scores(gamma.abs() if criterion == "l1" else gamma.pow(2), 0, group.unit_size, criterion)
    producer = modules[group.producer]
    weight = producer.weight.detach().float()
    dim = 1 if isinstance(producer, nn.modules.conv._ConvTransposeNd) else 0
    return unit_scores(weight.abs() if criterion == "l1" else weight.pow(2), dim, group.unit_size, criterion)


def unit_scores(score: torch.Tensor, dim: int, unit_size: int, criterion: Criterion) -> torch.Tensor:
    """One score per unit from element scores of a weight whose units lie along ``dim``, each
    unit spanning ``unit_size`` consecutive slices (a feature map behind a reshape)."""
    per_slice = score.transpose(0, dim).reshape(score.shape[dim], -1).sum(1)
    per_unit = per_slice.view(-1, unit_size).sum(1)
    return per_unit.sqrt() if criterion == "l2" else per_unit
