import pytest
import torch
from torch import nn

from gan_lightning.networks import DCGANDiscriminator, DCGANGenerator, MLPDiscriminator, MLPGenerator


@pytest.mark.parametrize("image_size,channels", [(8, 1), (32, 1), (32, 3), (64, 3)])
def test_dcgan_shapes_follow_image_size_and_channels(image_size, channels):
    g = DCGANGenerator(z_dim=16, image_size=image_size, channels=channels, width=4)
    d = DCGANDiscriminator(image_size=image_size, channels=channels, width=4)
    x = g(torch.randn(3, 16))
    assert x.shape == (3, channels, image_size, image_size)
    assert x.min() >= -1 and x.max() <= 1  # tanh output matches data scaled to [-1, 1]
    assert d(x).shape == (3,)


@pytest.mark.parametrize("size", [4, 12, 48])
def test_dcgan_refuses_sizes_it_cannot_reach(size):
    with pytest.raises(ValueError, match="power of two"):
        DCGANGenerator(image_size=size)


def test_mlp_defaults_are_the_seed_architecture():
    g, d = MLPGenerator(), MLPDiscriminator()
    g_linears = [(m.in_features, m.out_features) for m in g.modules() if isinstance(m, nn.Linear)]
    d_linears = [(m.in_features, m.out_features) for m in d.modules() if isinstance(m, nn.Linear)]
    assert g_linears == [(100, 256), (256, 256), (256, 784)]
    assert d_linears == [(784, 256), (256, 128), (128, 1)]
    assert g(torch.randn(2, 100)).shape == (2, 1, 28, 28)


def test_mlp_for_points_is_unbounded_without_tanh():
    g = MLPGenerator(z_dim=2, hidden=[8], out_shape=[2], output_activation="none")
    with torch.no_grad():
        g.net[-2].bias.fill_(5.0)
    assert g(torch.zeros(4, 2)).abs().max() > 1


def test_discriminator_norm_none_has_no_batch_statistics():
    # Gradient penalties are per sample; batch norm would mix samples.
    d = DCGANDiscriminator(image_size=16, norm="none")
    assert not any(isinstance(m, nn.BatchNorm2d) for m in d.modules())
