"""How much each weight matters: the importance criteria of the prune callback, as objects.

A criterion is an :class:`Importance`: it scores the elements of named weight tensors
(``scores``) and turns one layer's element scores into one score per unit (``unit_scores``).
Adding a criterion is adding a class to ``CRITERIA``. The loss whose sensitivity some
criteria measure belongs to the caller: a :data:`NetworkLoss` it builds (for a GAN,
:func:`adversarial_loss`), so the criteria know nothing about GANs.

- ``l1`` / ``l2``: weight magnitude |w| / w^2 (no data needed). Per unit: the sum (the root
  of the sum for ``l2``, the unit's L2 norm), except that a unit followed by BatchNorm/GroupNorm
  is scored by the norm's scale (see :meth:`Magnitude.unit_scores`).
- ``gradient``: sensitivity, the mean over calibration batches of |dL/dw|.
- ``taylor``: first-order Taylor estimate of the loss change when w is removed, |w * dL/dw|.
- ``fisher``: the diagonal empirical Fisher, the sum over samples of (dL_i/dw)^2, from
  per-sample gradients (``torch.func``).
- ``obd``: Optimal Brain Damage, 0.5 * |H_ww| * w^2, with the Hessian diagonal estimated by
  Hutchinson probes (E[v * Hv] for Rademacher v).
"""

from __future__ import annotations

import inspect
from typing import Callable, ClassVar, Literal, Optional, Sequence

import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from gan_lightning.compress.profiling import evaluating
from gan_lightning.compress.surgery import in_dim, out_dim, weight_name, weight_of

Criterion = Literal["auto", "l1", "l2", "group", "gradient", "taylor", "fisher", "obd"]
# loss(params, real, z): the scored network's loss on a batch; with ``params`` (a dict of its
# parameters and buffers) the network must run functionally on them (per-sample gradients).
NetworkLoss = Callable[[Optional[dict[str, torch.Tensor]], torch.Tensor, torch.Tensor], torch.Tensor]


def adversarial_loss(module, network: str) -> NetworkLoss:
    """The GAN's own loss for ``network``: the generator's loss through the (fixed)
    discriminator, or the discriminator's loss on real samples and generated ones."""
    g, d = module.generator, module.discriminator

    def loss(params, real, z):
        if network == "generator":
            fake = functional_call(g, params, (z,)) if params is not None else g(z)
            return module.adversarial.generator(d(fake))
        with torch.no_grad():
            fake = g(z)
        run = (lambda x: functional_call(d, params, (x,))) if params is not None else d
        return module.adversarial.discriminator(run(real), run(fake))

    return loss


def unit_scores(score: torch.Tensor, dim: int, unit_size: int, root: bool = False) -> torch.Tensor:
    """One score per unit from element scores of a weight whose units lie along ``dim``, each
    unit spanning ``unit_size`` consecutive slices (a feature map behind a reshape); ``root``
    takes the square root of each unit's sum (an L2 norm from squared elements)."""
    per_slice = score.transpose(0, dim).reshape(score.shape[dim], -1).sum(1)
    per_unit = per_slice.view(-1, unit_size).sum(1)
    return per_unit.sqrt() if root else per_unit


class Importance:
    """A pruning criterion. ``scores`` runs with the networks in eval mode (the caller's
    ``evaluating`` context), so BatchNorm statistics are not changed by scoring."""

    name: ClassVar[str]
    needs_data: ClassVar[bool] = True  # scores depend on calibration batches through a loss

    def scores(
        self, network: nn.Module, weights: Sequence[str], loss: Optional[NetworkLoss],
        batches: Sequence[torch.Tensor], latents: Sequence[torch.Tensor], gen: torch.Generator,
    ) -> dict[str, torch.Tensor]:
        """One non-negative score per element of each named weight; ``gen`` is for any
        randomness the criterion needs (after the caller drew ``latents`` from it)."""
        raise NotImplementedError

    def for_network(self, groups: Sequence) -> "Importance":
        """The criterion that scores the units of a network with these channel groups (itself;
        :class:`Auto` chooses by the network's structure)."""
        return self

    def unit_scores(self, network: nn.Module, group, element_scores: Optional[dict[str, torch.Tensor]] = None) -> torch.Tensor:
        """One score per unit of a channel group (see gan_lightning.compress.dependency): the
        sum over its producers of their weights' element scores (keyed by parameter name)
        over each unit, as a residual group's units are the sum of all its producers' outputs."""
        total = torch.zeros(group.units)
        for member in group.producers:
            layer = network.get_submodule(member.layer)
            score = element_scores[weight_name(network, member.layer)]
            total += unit_scores(score, out_dim(layer), member.size).cpu()
        return total


class Magnitude(Importance):
    needs_data: ClassVar[bool] = False
    power: ClassVar[int]

    def _element(self, w: torch.Tensor) -> torch.Tensor:
        return w.detach().abs() if self.power == 1 else w.detach().pow(2)

    def scores(self, network, weights, loss, batches, latents, gen):
        params = dict(network.named_parameters())
        return {w: self._element(params[w]) for w in weights}

    def unit_scores(self, network, group, element_scores=None, dim=None) -> torch.Tensor:
        """A BatchNorm/GroupNorm that every consumer reads the units through cancels the scale of
        the producers' weights: there the norm's own scale |gamma| says how much a unit
        contributes (network slimming, Liu et al. 2017). Ranking by the producer's weights
        instead keeps arbitrary channels, and a DCGAN generator pruned that way does not
        recover. Where some consumer reads the units directly (a residual stream feeding both
        a block's normalized main path and its shortcut), it is the norm of all producers' weights."""
        if group.scale_norm is not None and getattr(network.get_submodule(group.scale_norm), "weight", None) is not None:
            member = next(m for m in group.norm_members if m.layer == group.scale_norm)
            gamma = network.get_submodule(group.scale_norm).weight.float()
            gamma = gamma[member.offset : member.offset + group.units * member.size]
            return unit_scores(self._element(gamma), 0, member.size, root=self.power == 2)
        scores = {weight_name(network, m.layer): self._element(weight_of(network.get_submodule(m.layer)).float()) for m in group.producers}
        total = super().unit_scores(network, group, scores)
        return total.sqrt() if self.power == 2 else total


class L1(Magnitude):
    name = "l1"
    power = 1


class L2(Magnitude):
    name = "l2"
    power = 2


class GroupMagnitude(L2):
    """Structured only: every tensor slice a unit owns in its group, the producers' output rows,
    the consumers' input columns and the normalizations' scale and shift, each slice's L2 norm
    divided by its tensor's mean over the group's units, summed (Torch-Pruning's group
    magnitude). On the SNGAN ResNet generator cut to 4x, a cut chosen this way recovered in 3
    epochs of distillation where one chosen by ``l1`` did not (benchmarks/README.md)."""

    name = "group"

    def unit_scores(self, network, group, element_scores=None, dim=None) -> torch.Tensor:
        total = torch.zeros(group.units)
        slices = [(weight_of(network.get_submodule(m.layer)), out_dim(network.get_submodule(m.layer)), m) for m in group.producers]
        slices += [(weight_of(network.get_submodule(m.layer)), in_dim(network.get_submodule(m.layer)), m) for m in group.consumers]
        for m in group.norm_members:
            norm = network.get_submodule(m.layer)
            slices += [(t, 0, m) for t in (getattr(norm, "weight", None), getattr(norm, "bias", None)) if t is not None]
        for tensor, axis, m in slices:
            rows = tensor.detach().float().transpose(0, axis)[m.offset : m.offset + group.units * m.size]
            norms = rows.reshape(group.units, -1).pow(2).sum(1).sqrt().cpu()
            total += norms / norms.mean().clamp_min(1e-12)
        return total


class Auto(L1):
    """The default: ``group`` for a network whose channels are joined by an addition (a residual
    stream: some group has several producers), ``l1`` otherwise and for single weights. Measured
    through train.py on the digits (benchmarks/README.md): on the SNGAN ResNet generator at 4x
    fewer MACs ``l1``'s cut did not recover in 3 epochs of distillation (FID 230) where
    ``group``'s did (68, 60 and 34, three seeds); on the DCGAN chain at 8x ``l1`` stayed ahead."""

    name = "auto"

    def for_network(self, groups: Sequence) -> Importance:
        return GroupMagnitude() if any(len(g.producers) > 1 for g in groups) else L1()


class _LossGradient(Importance):
    """Criteria built from dL/dw, averaged over the calibration batches."""

    create_graph: ClassVar[bool] = False

    def scores(self, network, weights, loss, batches, latents, gen):
        params = dict(network.named_parameters())
        targets = [params[w] for w in weights]
        total = [torch.zeros_like(t, dtype=torch.float32) for t in targets]
        with torch.enable_grad():
            for real, z in zip(batches, latents):
                grads = torch.autograd.grad(loss(None, real, z), targets, create_graph=self.create_graph)
                for acc, s in zip(total, self.from_gradients(targets, grads, gen)):
                    acc += s
        return {w: s / len(batches) for w, s in zip(weights, total)}

    def from_gradients(self, targets, grads, gen) -> list[torch.Tensor]:
        raise NotImplementedError


class Gradient(_LossGradient):
    name = "gradient"

    def from_gradients(self, targets, grads, gen):
        return [g.detach().abs().float() for g in grads]


class Taylor(_LossGradient):
    name = "taylor"

    def from_gradients(self, targets, grads, gen):
        return [(p.detach() * g.detach()).abs().float() for p, g in zip(targets, grads)]


class OBD(_LossGradient):
    name = "obd"
    create_graph = True

    def __init__(self, hutchinson_probes: int = 2) -> None:
        self.probes = hutchinson_probes

    def from_gradients(self, targets, grads, gen):
        diag = [torch.zeros_like(t, dtype=torch.float32) for t in targets]
        for k in range(self.probes):
            vs = [(torch.randint(0, 2, t.shape, generator=gen) * 2 - 1).to(t) for t in targets]
            hvs = torch.autograd.grad(grads, targets, grad_outputs=vs, retain_graph=k < self.probes - 1)
            for d, v, hv in zip(diag, vs, hvs):
                d += (v * hv).detach().float() / self.probes
        return [0.5 * d.abs() * t.detach().float().pow(2) for d, t in zip(diag, targets)]


class Fisher(Importance):
    """A sum over samples by definition (the others are means over batches)."""

    name = "fisher"

    def scores(self, network, weights, loss, batches, latents, gen):
        params = {k: v.detach() for k, v in network.named_parameters()}
        buffers = dict(network.named_buffers())

        def one(p, x_real, x_z):
            return loss({**p, **buffers}, x_real[None], x_z[None])

        out = {w: torch.zeros_like(params[w], dtype=torch.float32) for w in weights}
        with torch.enable_grad():
            for real, z in zip(batches, latents):
                # chunk_size bounds the memory of the per-sample gradients (batch x parameters)
                per_sample = vmap(grad(one), in_dims=(None, 0, 0), chunk_size=16)(params, real, z)
                for w in weights:
                    out[w] += per_sample[w].float().pow(2).sum(0)
        return out


CRITERIA: dict[str, type[Importance]] = {cls.name: cls for cls in (Auto, L1, L2, GroupMagnitude, Gradient, Taylor, Fisher, OBD)}


def make_importance(name: str, **options) -> Importance:
    """The criterion ``name``, given the options its constructor takes (others are ignored)."""
    cls = CRITERIA[name]
    accepted = inspect.signature(cls).parameters
    return cls(**{k: v for k, v in options.items() if k in accepted})


def weight_importance(
    module, network: str, criterion: Criterion | Importance, weights: Sequence[str], batches: Sequence[torch.Tensor],
    seed: int = 0, hutchinson_probes: int = 2, loss: Optional[NetworkLoss] = None,
) -> dict[str, torch.Tensor]:
    """Scores (same shape as the weight) for the named weight parameters of ``module.<network>``
    under ``loss`` (default: the GAN's :func:`adversarial_loss`).

    ``batches`` are real calibration batches on the module's device; latents are drawn from
    ``seed``, so the same weights and batches always give the same scores."""
    importance = criterion if isinstance(criterion, Importance) else make_importance(criterion, hutchinson_probes=hutchinson_probes)
    net: nn.Module = getattr(module, network)
    missing = [w for w in weights if w not in dict(net.named_parameters())]
    if missing:
        raise KeyError(f"{network} has no parameters {missing}")
    gen = torch.Generator().manual_seed(seed)
    latents = [torch.randn(len(b), module.z_dim, generator=gen).to(b.device) for b in batches] if importance.needs_data else []
    with evaluating(module.generator, module.discriminator):
        return importance.scores(net, weights, loss or adversarial_loss(module, network), batches, latents, gen)


def magnitude_unit_scores(network: nn.Module, group, criterion: Literal["l1", "l2"]) -> torch.Tensor:
    """``l1``/``l2`` score of each unit of a channel group (see :meth:`Magnitude.unit_scores`)."""
    return make_importance(criterion).unit_scores(network, group)
