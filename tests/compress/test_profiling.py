"""The project's MAC counter against torch's own FlopCounterMode (2 FLOPs per multiply-accumulate)."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from gan_lightning.compress.lowrank import factorize_module
from gan_lightning.compress.profiling import network_cost
from gan_lightning.compress.pruning import cut_units, example_input, prunable_groups
from gan_lightning.core.module import GANModule
from gan_lightning.networks import DCGANDiscriminator, DCGANGenerator, MLPDiscriminator, MLPGenerator

PAIRS = {
    "dcgan32": lambda: GANModule(DCGANGenerator(z_dim=16, image_size=32, channels=3, width=8), DCGANDiscriminator(image_size=32, channels=3, width=8)),
    "dcgan8-layernorm": lambda: GANModule(DCGANGenerator(z_dim=8, image_size=8, channels=1, width=4), DCGANDiscriminator(image_size=8, channels=1, width=4, norm="layer")),
    "mlp": lambda: GANModule(MLPGenerator(12, (32, 16), (1, 6, 6)), MLPDiscriminator((1, 6, 6), (16, 8))),
}


def flops(network: torch.nn.Module, example: torch.Tensor) -> int:
    network.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        network(example)
    return counter.get_total_flops()


def pruned(module: GANModule) -> GANModule:
    for net in ("generator", "discriminator"):
        keep = {g.producer: torch.arange(0, g.units, 2) for g in prunable_groups(module, net, set())}
        module.edits.append(net, cut_units(module, net, keep, torch.arange(0, module.z_dim, 3) if net == "generator" else None))
    return module


def factorized(module: GANModule) -> GANModule:
    factorize_module(module, {"generator.stem.0": 2, "discriminator." + next(n for n, m in module.discriminator.named_modules() if isinstance(m, torch.nn.Linear)): 1})
    return module


@pytest.mark.parametrize("variant", ["dense", "pruned", "factorized"])
@pytest.mark.parametrize("pair", list(PAIRS))
def test_macs_per_sample_agree_with_torch_flop_counter(pair, variant):
    torch.manual_seed(0)
    module = PAIRS[pair]()
    if variant == "pruned":
        module = pruned(module)
    elif variant == "factorized" and pair != "mlp":
        module = factorized(module)
    elif variant == "factorized":
        factorize_module(module, {"generator.net.0": 4})
    for net in ("generator", "discriminator"):
        network, example = getattr(module, net), example_input(module, net)
        ours = network_cost(network, example).macs
        assert ours > 0 and 2 * ours * len(example) == flops(network, example), net
