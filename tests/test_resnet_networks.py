"""SNGAN ResNet networks, spectral normalization, the torch.fx trace that structured pruning needs
of every network in gan_lightning/networks.py, and the configs/sngan.yaml preset."""

from __future__ import annotations

import inspect
import operator

import pytest
import torch
import torch.fx
from torch import nn
from torch.nn.utils.parametrize import is_parametrized

from gan_lightning import networks
from gan_lightning.commands.train import GANLightningCLI
from gan_lightning.errors import ConfigError
from gan_lightning.networks import DCGANDiscriminator, ResNetDiscriminator, ResNetGenerator
from tests.helpers import REPO


def _weighted(net: nn.Module) -> list[nn.Module]:
    return [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


@pytest.mark.parametrize("image_size,channels,final", [(8, 1, 4), (16, 1, 8), (32, 3, 8), (64, 1, 8)])
def test_resnet_shapes_follow_image_size_and_channels(image_size, channels, final):
    g = ResNetGenerator(z_dim=8, image_size=image_size, channels=channels, width=4)
    d = ResNetDiscriminator(image_size=image_size, channels=channels, width=4)
    x = g(torch.randn(3, 8))
    assert x.shape == (3, channels, image_size, image_size) and g.out_shape == x.shape[1:]
    assert x.min() >= -1 and x.max() <= 1  # tanh output matches data scaled to [-1, 1]
    assert d.in_shape == x.shape[1:] and d(x).shape == (3,)
    # one residual block per doubling from 4x4; D halves down to 8x8 (SNGAN 32) then keeps it for two blocks
    assert len(g.blocks) == image_size.bit_length() - 3
    assert d.blocks(x).shape[2:] == (final, final)
    assert len(d.blocks) == (image_size // final).bit_length() - 1 + 2


def test_resnet_discriminator_has_no_batch_statistics_and_the_generator_does():
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in ResNetDiscriminator(width=4).modules())
    # BN before each block's ReLU, after its first conv and before the head: 2 per block + 1
    assert sum(isinstance(m, nn.BatchNorm2d) for m in ResNetGenerator(width=4).modules()) == 2 * 3 + 1


@pytest.mark.parametrize(
    "make",
    [lambda sn: ResNetDiscriminator(image_size=16, width=4, spectral_norm=sn),
     lambda sn: DCGANDiscriminator(image_size=16, width=4, norm="none", spectral_norm=sn)],
    ids=["resnet", "dcgan"],
)
def test_spectral_norm_parametrizes_every_conv_and_linear_and_bounds_them(make):
    assert not any(is_parametrized(m, "weight") for m in _weighted(make(False)))
    d = make(True)
    layers = _weighted(d)
    assert len(layers) >= 3 and all(is_parametrized(m, "weight") for m in layers)
    assert not any(hasattr(m, "weight_orig") for m in layers)  # the parametrization, not the deprecated hook
    x = torch.randn(8, 1, 16, 16)
    for _ in range(30):  # power iteration runs once per training-mode forward
        d(x)
    with torch.no_grad():
        sigmas = [torch.linalg.matrix_norm(m.weight.flatten(1), 2).item() for m in layers]
    assert sigmas == pytest.approx([1.0] * len(layers), rel=0.05)
    assert d(x).shape == (8,)


def test_dcgan_discriminator_keeps_batch_norm_beside_spectral_norm():
    d = DCGANDiscriminator(image_size=16, width=4, norm="batch", spectral_norm=True)
    assert any(isinstance(m, nn.BatchNorm2d) for m in d.modules())
    assert all(is_parametrized(m, "weight") for m in _weighted(d))


def _every_network() -> dict[str, nn.Module]:
    return {
        "MLPGenerator": networks.MLPGenerator(z_dim=4, hidden=[8], out_shape=[1, 8, 8]),
        "MLPDiscriminator": networks.MLPDiscriminator(in_shape=[1, 8, 8], hidden=[8]),
        "DCGANGenerator": networks.DCGANGenerator(z_dim=4, image_size=16, width=4),
        "DCGANDiscriminator": networks.DCGANDiscriminator(image_size=16, width=4),
        "DCGANDiscriminator[sn]": networks.DCGANDiscriminator(image_size=16, width=4, norm="none", spectral_norm=True),
        "ResNetGenerator": networks.ResNetGenerator(z_dim=4, image_size=16, width=4),
        "ResNetDiscriminator": networks.ResNetDiscriminator(image_size=16, width=4),
        "ResNetDiscriminator[no sn]": networks.ResNetDiscriminator(image_size=16, width=4, spectral_norm=False),
    }


def test_every_network_in_the_module_is_covered_by_the_trace_test():
    public = {name for name, c in vars(networks).items()
              if inspect.isclass(c) and issubclass(c, nn.Module) and c.__module__ == networks.__name__ and not name.startswith("_")}
    assert public == {name.split("[")[0] for name in _every_network()}


@pytest.mark.parametrize("name", list(_every_network()))
def test_every_network_traces_with_torch_fx_to_the_same_outputs(name):
    torch.manual_seed(0)
    net = _every_network()[name].eval()  # eval: BN uses running statistics, SN no power iteration
    example = torch.randn(3, net.z_dim) if hasattr(net, "z_dim") else torch.randn(3, *net.in_shape)
    traced = torch.fx.symbolic_trace(net)
    with torch.no_grad():
        assert torch.equal(traced(example), net(example))
    if name.startswith("ResNet"):  # the residual additions are in the graph, where pruning couples their channels
        adds = [n for n in traced.graph.nodes if n.op == "call_function" and n.target in (operator.add, torch.add)]
        assert len(adds) == len(net.blocks)


@pytest.mark.parametrize("size", [0, 4, 12, 48])
@pytest.mark.parametrize("network", [ResNetGenerator, ResNetDiscriminator])
def test_resnet_refuses_sizes_it_cannot_reach_in_one_sentence(network, size):
    with pytest.raises(ConfigError) as refused:
        network(image_size=size)
    message = str(refused.value)
    assert message.startswith("--model.generator.init_args.image_size and --model.discriminator.init_args.image_size")
    assert "power of two >= 8 for ResNet networks" in message and message.endswith(f"got {size}") and "\n" not in message


def test_the_sngan_preset_trains_a_batch_through_the_cli(tmp_path):
    tiny = {"generator": {"z_dim": "8", "image_size": "8", "width": "4"}, "discriminator": {"image_size": "8", "width": "4"}}
    flags = [arg for net, args in tiny.items() for k, v in args.items() for arg in (f"--model.{net}.init_args.{k}", v)]
    cli = GANLightningCLI(args=[
        "fit", "--config", str(REPO / "configs" / "sngan.yaml"), *flags, "--data.init_args.image_size", "8",
        "--trainer.fast_dev_run", "1", "--trainer.accelerator", "cpu", "--trainer.default_root_dir", str(tmp_path),
        "--trainer.logger", "CSVLogger", "--trainer.logger.save_dir", str(tmp_path),
        "--metrics.num_fake", "200", "--metrics.domain_epochs", "2",
    ])
    g, d, hp = cli.model.generator, cli.model.discriminator, cli.model.hparams
    assert isinstance(g, ResNetGenerator) and isinstance(d, ResNetDiscriminator)
    assert (hp.loss, hp.n_critic, hp.lr_g, hp.lr_d, tuple(hp.betas)) == ("hinge", 5, 2e-4, 2e-4, (0.0, 0.9))
    assert all(is_parametrized(m, "weight") for m in _weighted(d))
    # one batch is five discriminator steps and one generator step
    assert cli.trainer.global_step == 5 + 1
    assert cli.model.generate(2, seed=0).shape == (2, 1, 8, 8)
