"""Low-rank factorization of Linear and (transposed) convolution layers by truncated SVD.

A layer's weight, read as a matrix ``M`` (m x n), is replaced by its best rank-``r``
approximation ``M ~ L @ R`` (Eckart-Young: the truncated SVD, ``L = U_r sqrt(S_r)``,
``R = sqrt(S_r) V_r^T``), computed by two smaller layers in an :class:`LowRank` sequence
that takes the original layer's place, so state_dict keys become ``<layer>.0.weight``,
``<layer>.1.weight`` and ``<layer>.1.bias``:

==================  ===================  =========================================  ==========================
layer               matrix M (m x n)     factor 0                                   factor 1
==================  ===================  =========================================  ==========================
Linear(in, out)     out x in             Linear(in, r, bias=False)                  Linear(r, out, bias)
Conv(in, out, k)    out x (in k^d)       Conv(in, r, k, same stride/padding, no     Conv(r, out, 1, bias)
                                         bias)
ConvT(in, out, k)   in x (out k^d)       Conv(in, r, 1, no bias)                    ConvT(r, out, k, same
                                                                                    stride/padding, bias)
==================  ===================  =========================================  ==========================

Every row costs ``r (m + n)`` multiply-accumulates per output position where the layer cost
``m n`` (the same ratio holds for the parameters), so a layer is only worth factorizing when
``r < m n / (m + n)``. At ``r = rank(M)`` the factors compute the layer exactly.

Why the transposed convolution is factorized "1x1 first": a ConvTranspose is the adjoint of a
Conv, and this layout is the adjoint of the Conv layout above (k x k first, then 1x1). The
alternative, ConvT(in, r, k) then a 1x1 Conv(r, out) on the *upsampled* map, is also exact at
its full rank (M read as (in k^d) x out), but it costs ``in k^d + s^d out`` MACs per rank and
input position (``s`` the stride) against ``in + out k^d`` here; with ``k >= s`` the layout
here is never more expensive at equal rank whenever ``in >= out``, which holds for every
upsampling block of a generator (DCGAN halves the channels as it doubles the resolution), and
its 1x1 runs on the small input map instead of the large output map. (The two read the weight
as different matrices, so their full ranks differ too; for DCGAN's ``in = 2 out``, k 4, s 2 the
same *fraction* of full rank costs the same in both, and the choice only matters for ``fixed``
ranks.)

The square root of the singular values goes to both factors, so they start with equal norms:
neither factor's gradients dwarf the other's when the factorized network is fine-tuned.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Literal

import torch
from torch import nn
from torch.nn.utils.parametrizations import _SpectralNorm, spectral_norm
from torch.nn.utils.parametrize import is_parametrized, type_before_parametrizations

from gan_lightning.compress.profiling import COUNTED, network_cost
from gan_lightning.compress.spectral import exact_spectral_vectors
from gan_lightning.errors import CheckpointError, ConfigError

RankMode = Literal["fixed", "ratio", "energy"]
CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
CONV_T = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
FACTORIZABLE = COUNTED  # Linear, Conv and ConvTranspose: what profiling counts
_POINTWISE = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}


class LowRank(nn.Sequential):
    """The two factors that replace one layer (a plain Sequential, so state_dict keys are
    ``<layer>.0.*`` and ``<layer>.1.*``; the subclass only marks it as a factorization)."""

    @property
    def rank(self) -> int:
        first = self[0]
        return first.out_features if isinstance(first, nn.Linear) else first.out_channels


def check_rank_value(mode: str, value: float, flag: str = "--lowrank.rank_value") -> None:
    """Refuse, in one sentence, a rank value that does not fit its mode."""
    if mode not in ("fixed", "ratio", "energy"):
        raise ConfigError(f"--lowrank.rank_mode must be fixed, ratio or energy, got {mode!r}")
    if mode == "fixed" and (not float(value).is_integer() or value < 1):
        raise ConfigError(f"{flag} must be an integer >= 1 (the rank kept per layer) with rank_mode fixed, got {value:g}")
    if mode == "ratio" and not 0.0 < value <= 1.0:
        raise ConfigError(f"{flag} must be in (0, 1] (the fraction of each layer's full rank kept) with rank_mode ratio, got {value:g}")
    if mode == "energy" and not 0.0 < value <= 1.0:
        raise ConfigError(f"{flag} must be in (0, 1] (the share of squared singular values kept) with rank_mode energy, got {value:g}")


def is_factorizable(layer: nn.Module) -> bool:
    # grouped convolutions are block-diagonal: one SVD of the whole weight would mix groups
    return isinstance(layer, FACTORIZABLE) and getattr(layer, "groups", 1) == 1


def matrix_shape(layer: nn.Module) -> tuple[int, int]:
    """(m, n) of the matrix the layer's weight is factorized as (see the module docs)."""
    w = layer.weight
    return w.shape[0], w[0].numel()


def weight_matrix(layer: nn.Module) -> torch.Tensor:
    """The layer's weight as the m x n matrix of the table in the module docs. A Linear's
    (out, in), a Conv's (out, in, *k) and a ConvTranspose's (in, out, *k) weights all reshape
    to it by flattening everything after the first dimension."""
    return layer.weight.detach().reshape(layer.weight.shape[0], -1)


def cost_ratio(layer: nn.Module, rank: int) -> float:
    """MACs (and weights) of the factorized layer over the original's: r (m + n) / (m n)."""
    m, n = matrix_shape(layer)
    return rank * (m + n) / (m * n)


def singular_values(layer: nn.Module) -> torch.Tensor:
    """Singular values of the layer's weight matrix, in float64, largest first."""
    return torch.linalg.svdvals(weight_matrix(layer).double().cpu())


def energy_kept(s: torch.Tensor, rank: int) -> float:
    """Share of the squared singular values that the first ``rank`` ones hold; the relative
    Frobenius error of the rank-``rank`` approximation is exactly sqrt(1 - this)."""
    total = float((s.double() ** 2).sum())
    return 1.0 if total == 0.0 else float((s.double()[:rank] ** 2).sum()) / total


def choose_rank(s: torch.Tensor, mode: RankMode, value: float) -> int:
    """The rank a layer with singular values ``s`` keeps:

    - ``fixed``: ``value`` (at most the full rank);
    - ``ratio``: the smallest rank >= ``value`` x full rank (at least 1);
    - ``energy``: the smallest rank whose singular values hold ``value`` of the sum of squares.
    """
    full = len(s)
    if mode == "fixed":
        return max(1, min(int(value), full))
    if mode == "ratio":
        return max(1, min(full, math.ceil(value * full - 1e-9)))  # - 1e-9: 0.3 * 10 is 3.0000000000000004, which must give 3
    energy = torch.cumsum(s.double() ** 2, 0)
    if float(energy[-1]) == 0.0:
        return 1
    share = energy / energy[-1]
    return min(full, int((share < value - 1e-12).sum()) + 1)


@torch.no_grad()
def factorize(layer: nn.Module, rank: int, weights: bool = True) -> LowRank:
    """The two-layer replacement of ``layer`` at ``rank``. With ``weights`` False only the
    shapes are built (weights left at zero), for rebuilding a saved factorization whose values
    a state_dict then overwrites."""
    if not is_factorizable(layer):
        raise ConfigError(f"cannot factorize a {type(layer).__name__}: only Linear and ungrouped (transposed) convolutions")
    w = layer.weight
    bias = layer.bias is not None
    factory = dict(device=w.device, dtype=w.dtype)
    # a parametrized layer's class is torch's generated Parametrized<Layer>, which cannot be built
    # without its parametrizations: the factors are plain layers of the class it was made from
    kind = type_before_parametrizations(layer)
    if isinstance(layer, nn.Linear):
        first = nn.Linear(layer.in_features, rank, bias=False, **factory)
        second = nn.Linear(rank, layer.out_features, bias=bias, **factory)
    elif isinstance(layer, CONV):
        d = len(layer.kernel_size)
        first = kind(
            layer.in_channels, rank, layer.kernel_size, stride=layer.stride, padding=layer.padding,
            dilation=layer.dilation, bias=False, padding_mode=layer.padding_mode, **factory,
        )
        second = _POINTWISE[d](rank, layer.out_channels, 1, bias=bias, **factory)
    else:
        d = len(layer.kernel_size)
        first = _POINTWISE[d](layer.in_channels, rank, 1, bias=False, **factory)
        second = kind(
            rank, layer.out_channels, layer.kernel_size, stride=layer.stride, padding=layer.padding,
            output_padding=layer.output_padding, dilation=layer.dilation, bias=bias, **factory,
        )
    if not weights:
        for p in (first.weight, second.weight):
            p.zero_()
        if bias:
            second.bias.zero_()
    else:
        # float64 on the CPU: exact enough for the full-rank identity, available on every
        # accelerator's tensors (MPS has no float64), and the same result on every DDP rank
        u, s, vh = torch.linalg.svd(weight_matrix(layer).double().cpu(), full_matrices=False)
        root = s[:rank].sqrt()
        left = (u[:, :rank] * root).to(w.device, w.dtype)  # m x r
        right = (root[:, None] * vh[:rank]).to(w.device, w.dtype)  # r x n
        if isinstance(layer, CONV_T):
            # M = A^T B with A the 1x1 conv (r, in) and B the transposed conv (r, out, *k)
            first.weight.copy_(left.t().reshape(first.weight.shape))
            second.weight.copy_(right.reshape(second.weight.shape))
        else:
            # M = L R: the first factor computes R (r rows of the input side), the second L
            first.weight.copy_(right.reshape(first.weight.shape))
            second.weight.copy_(left.reshape(second.weight.shape))
        if bias:
            second.bias.copy_(layer.bias)
    _keep_spectral_norm(layer, (first, second))
    return LowRank(first, second).requires_grad_(w.requires_grad)  # frozen copies (the EMA) stay frozen


def _keep_spectral_norm(layer: nn.Module, factors: tuple[nn.Module, nn.Module]) -> None:
    """A spectral-normalized layer (an SNGAN discriminator's) keeps its Lipschitz bound: each
    factor is spectral-normalized too, so their product's norm is at most 1. The factors hold
    the normalized weight's SVD with sqrt(S) on each side, whose largest singular value is
    sqrt(1) = 1, so the normalization leaves them (and the layer's output) as they are."""
    if not is_parametrized(layer, "weight"):
        return
    norms = [p for p in layer.parametrizations.weight if isinstance(p, _SpectralNorm)]
    if norms:
        for factor in factors:
            spectral_norm(factor, n_power_iterations=norms[0].n_power_iterations, eps=norms[0].eps)
            exact_spectral_vectors(factor)


@dataclass
class LayerPlan:
    """What the rank choice decided for one layer, and why (a row of ``compress/lowrank_layers``)."""

    layer: str
    type: str
    matrix: str  # "m x n"
    full_rank: int
    rank: int
    energy: float  # share of squared singular values kept at ``rank``
    macs: int  # per sample, before
    macs_after: int  # per sample, if factorized at ``rank``
    factorize: bool
    reason: str

    def row(self, network: str) -> list:
        d = asdict(self)
        return [network, *[round(v, 6) if isinstance(v, float) else v for v in d.values()]]


PLAN_COLUMNS = ["network", "layer", "type", "matrix", "full_rank", "rank", "energy", "macs", "macs_after", "factorize", "reason"]


def candidate_layers(network: nn.Module, example: torch.Tensor) -> dict[str, int]:
    """Layers that could be factorized, in execution order, with their per-sample MACs (from
    :func:`gan_lightning.compress.profiling.network_cost`, the count every compression report uses).
    Layers already inside a factorization, and layers the forward pass never runs, are left out."""
    cost = network_cost(network, example)
    modules = dict(network.named_modules())
    inside = {f"{name}.{child}" for name, m in modules.items() if isinstance(m, LowRank) for child in ("0", "1")}
    return {name: c.macs for name, c in cost.layers.items() if name not in inside and is_factorizable(modules[name])}


def plan_ranks(network: nn.Module, example: torch.Tensor, mode: RankMode, value: float, skip: set[str]) -> list[LayerPlan]:
    """The rank of every candidate layer of ``network`` and whether factorizing it pays:
    skipped layers and layers whose MACs would not drop stay as they are."""
    modules = dict(network.named_modules())
    plans = []
    for name, macs in candidate_layers(network, example).items():
        layer = modules[name]
        s = singular_values(layer)
        rank = choose_rank(s, mode, value)
        m, n = matrix_shape(layer)
        after = macs // (m * n) * rank * (m + n)  # macs is (output or input positions) x m x n
        if name in skip:
            go, reason = False, "skip_layers"
        elif rank * (m + n) >= m * n:
            go, reason = False, f"no MAC saving (needs rank < {m * n / (m + n):.1f})"
        else:
            go, reason = True, ""
        plans.append(LayerPlan(name, type_before_parametrizations(layer).__name__, f"{m}x{n}", len(s), rank, energy_kept(s, rank), macs, after, go, reason))
    return plans


def apply_ranks(network: nn.Module, ranks: dict[str, int], weights: bool = True) -> None:
    """Replace each layer named in ``ranks`` by its factorization at that rank. Layers already
    factorized are left alone, so rebuilding a saved network twice is harmless."""
    for name, rank in ranks.items():
        try:
            layer = network.get_submodule(name)
        except AttributeError:
            layer = None
        if isinstance(layer, LowRank):
            continue
        if layer is None or not is_factorizable(layer):
            raise CheckpointError(
                f"layer {name!r} is recorded as low-rank factorized but {type(network).__name__} has no such Linear or"
                " convolution: use the network settings it was trained with"
            )
        parent_name, _, child = name.rpartition(".")
        parent = network.get_submodule(parent_name) if parent_name else network
        setattr(parent, child, factorize(layer, int(rank), weights=weights))


def factorize_module(module, ranks: dict[str, int], weights: bool = True) -> dict[str, "Factorize"]:
    """Factorize layers of a module's networks, keyed ``<network>.<layer>`` (a GANModule's
    ``generator.<layer>`` / ``discriminator.<layer>``); returns each network's edit, for the
    caller to record and announce.

    The EMA generator is given the factorized generator's weights rather than a factorization
    of its own: SVD bases are unique only up to sign and rotation, so separately factorized
    networks would hold factors in different bases, and the EMA's element-wise average of
    them would be meaningless. With ``weights`` False (rebuilding shapes from a checkpoint)
    both are simply built alike."""
    from gan_lightning.compress.edits import Factorize  # the record's module builds on this one

    edits = {}
    for network in sorted({key.split(".", 1)[0] for key in ranks}):
        own = {k[len(network) + 1 :]: int(r) for k, r in ranks.items() if k.startswith(network + ".")}
        net = getattr(module, network)
        apply_ranks(net, own, weights=weights)
        if network == "generator" and getattr(module, "generator_ema", None) is not None:
            apply_ranks(module.generator_ema, own, weights=False)
            if weights:
                module.generator_ema.load_state_dict(net.state_dict())
            module.generator_ema.requires_grad_(False)
        edits[network] = Factorize(own)
    return edits
