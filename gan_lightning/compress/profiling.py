"""How big and how fast a network is: parameters, multiply-accumulates and measured latency.

The one implementation every compression callback (prune, lowrank, ...) and benchmark uses,
so that their reports can be compared. MACs are counted per sample by running the network
once with forward hooks, which sees the real shapes after any surgery or factorization.
"""

from __future__ import annotations

import statistics
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Optional

import torch
from torch import nn

COUNTED = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


def parameter_device(net: nn.Module) -> torch.device:
    """Where ``net``'s weights are (the CPU for a network without any). Probes made while
    Lightning sets up must go there: ``LightningModule.device`` already names the target device
    (cuda) while the weights are still on the CPU."""
    return next(net.parameters(), torch.empty(0)).device


@contextmanager
def evaluating(*networks: nn.Module) -> Iterator[None]:
    """Eval mode inside (BatchNorm statistics neither used from the batch nor updated), every
    submodule's own mode restored after: a part its owner keeps in eval mode (a frozen teacher
    inside a LightningModule, say) stays in eval mode."""
    modes = [(m, m.training) for n in networks for m in n.modules()]
    for n in networks:
        n.eval()
    try:
        yield
    finally:
        for m, mode in modes:
            m.training = mode


def batchnorms(network: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """The BatchNorm layers that keep running statistics."""
    return [m for m in network.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


@contextmanager
def batchnorm_momentum(network: nn.Module, momentum: Optional[float]) -> Iterator[None]:
    """Every BatchNorm of ``network`` updates its running statistics with ``momentum`` inside
    (0: not at all, while still normalizing with the batch's own statistics as training does;
    None: a plain average), each layer's own momentum restored after."""
    norms = batchnorms(network)
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.momentum = momentum
    try:
        yield
    finally:
        for m, previous in zip(norms, momenta):
            m.momentum = previous


@torch.no_grad()
def forward_with_hooks(network: nn.Module, example: torch.Tensor, modules: Iterable[nn.Module], hook: Callable) -> None:
    """One eval-mode forward pass of ``network`` with ``hook`` as a forward hook on ``modules``."""
    handles = [m.register_forward_hook(hook) for m in modules]
    try:
        with evaluating(network):
            network(example)
    finally:
        for h in handles:
            h.remove()


def layer_macs(module: nn.Module, inp: torch.Tensor, out: torch.Tensor) -> int:
    """Multiply-accumulates of one call of a Linear or (transposed) convolution, per sample."""
    batch = out.shape[0] if out.dim() > 1 else 1
    if isinstance(module, nn.Linear):
        return out.numel() // batch * module.in_features
    kernel = module.weight[0, 0].numel()
    if isinstance(module, nn.modules.conv._ConvTransposeNd):
        # every input element is scattered through a kernel into out_channels / groups maps
        return inp.numel() // batch * (module.out_channels // module.groups) * kernel
    return out.numel() // batch * (module.in_channels // module.groups) * kernel


@dataclass
class LayerCost:
    macs: int
    params: int
    nonzero: int


@dataclass
class NetworkCost:
    """Per-sample MACs, parameters and non-zero parameters of a network, per layer and in total.

    ``sparse_macs`` scales each layer's MACs by its weight density: what a sparse kernel would
    execute, while ``macs`` is what dense kernels execute (and what latency follows).
    """

    layers: dict[str, LayerCost] = field(default_factory=dict)
    params: int = 0
    nonzero: int = 0

    @property
    def macs(self) -> int:
        return sum(c.macs for c in self.layers.values())

    def sparse_macs(self, network: nn.Module) -> float:
        modules = dict(network.named_modules())
        total = 0.0
        for name, cost in self.layers.items():
            weight = modules[name].weight
            total += cost.macs * float(weight.count_nonzero()) / weight.numel()
        return total


def count_params(network: nn.Module) -> tuple[int, int]:
    """(parameters, non-zero parameters)."""
    params = list(network.parameters())
    return sum(p.numel() for p in params), sum(int(p.count_nonzero()) for p in params)


@torch.no_grad()
def network_cost(network: nn.Module, example: torch.Tensor) -> NetworkCost:
    """Run ``network`` once on ``example`` (eval mode, restored after) and count its cost."""
    cost = NetworkCost()
    names = {m: n for n, m in network.named_modules()}

    def hook(module, inputs, output):
        own = list(module.parameters(recurse=False))
        name = names[module]
        prev = cost.layers.get(name, LayerCost(0, sum(p.numel() for p in own), sum(int(p.count_nonzero()) for p in own)))
        prev.macs += layer_macs(module, inputs[0], output)  # a module called twice costs twice
        cost.layers[name] = prev

    forward_with_hooks(network, example, [m for m in network.modules() if isinstance(m, COUNTED)], hook)
    cost.params, cost.nonzero = count_params(network)
    return cost


@torch.no_grad()
def measure_latency_ms(network: nn.Module, example: torch.Tensor, repeats: int = 30, warmup: int = 5) -> float:
    """Median wall time of one forward pass on ``example``, in milliseconds, in eval mode.

    Medians resist the noise of a shared machine; CUDA work is synchronized before each clock read.
    """
    sync = torch.cuda.synchronize if example.is_cuda else (lambda: None)
    with evaluating(network):
        for _ in range(warmup):
            network(example)
        times = []
        for _ in range(repeats):
            sync()
            start = time.perf_counter()
            network(example)
            sync()
            times.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(times)


def interleaved_latency_ms(networks: dict[str, nn.Module], example: torch.Tensor, rounds: int = 5, repeats: int = 20) -> dict[str, float]:
    """Median latency of several networks on the same input, measured in alternating rounds so
    that machine noise hits them alike (use this, not two separate measurements, for a speedup)."""
    samples: dict[str, list[float]] = {k: [] for k in networks}
    for _ in range(rounds):
        for key, net in networks.items():
            samples[key].append(measure_latency_ms(net, example, repeats=repeats, warmup=2))
    return {k: statistics.median(v) for k, v in samples.items()}


def output_layer(network: nn.Module, example: torch.Tensor) -> Optional[str]:
    """The last Linear/convolution the forward pass runs: the output layer that compression
    callbacks leave alone by default."""
    layers = list(network_cost(network, example).layers)
    return layers[-1] if layers else None
