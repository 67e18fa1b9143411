"""gan_lightning.deploy.inference: the rewrites give the same outputs as the network they
rewrite, touch only the layers they are meant for, and leave the original alone."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gan_lightning.compress.lowrank import factorize_module
from gan_lightning.deploy.inference import fold_batchnorm, for_inference, subpixel, subpixel_transposed_convs
from gan_lightning.networks import DCGANGenerator, MLPGenerator
from tests.helpers import tiny_module


def with_statistics(network: nn.Module) -> nn.Module:
    """BatchNorm with non-trivial statistics and affine parameters, in eval mode."""
    with torch.no_grad():
        for m in network.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.normal_()
                m.running_var.uniform_(0.3, 3.0)
                m.weight.normal_()
                m.bias.normal_()
    return network.eval()


@pytest.mark.parametrize("cin,cout,bias", [(5, 1, True), (3, 7, False), (8, 3, True)])
def test_subpixel_form_equals_the_transposed_convolution(cin, cout, bias):
    torch.manual_seed(0)
    layer = nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=bias)
    x = torch.randn(2, cin, 5, 6)  # not square: rows and columns must not be swapped
    torch.testing.assert_close(subpixel(layer)(x), layer(x), atol=1e-5, rtol=1e-5)


def test_only_stride_2_kernel_4_upsamplers_with_few_outputs_are_rewritten():
    net = nn.Sequential(nn.ConvTranspose2d(4, 8, 4, 2, 1), nn.ConvTranspose2d(8, 2, 3, 1, 1), nn.ConvTranspose2d(2, 1, 4, 2, 1))
    assert subpixel_transposed_convs(net, max_out_channels=4) == 1
    assert isinstance(net[0], nn.ConvTranspose2d) and isinstance(net[1], nn.ConvTranspose2d)  # 8 outputs; stride 1
    assert isinstance(net[2], nn.Sequential) and isinstance(net[2][1], nn.PixelShuffle)


def test_batchnorm_folds_into_a_low_rank_up_projection():
    torch.manual_seed(0)
    module = tiny_module()
    factorize_module(module, {"generator.stem.0": 3})  # stem.0 becomes LowRank(down, up), then BatchNorm1d
    generator = with_statistics(module.generator)
    z = torch.randn(6, 8)
    expected = generator(z)
    assert fold_batchnorm(generator) == 1  # through the low-rank up-projection (an 8x8 DCGAN has no hidden block)
    assert not [m for m in generator.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    torch.testing.assert_close(generator(z), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("make", [lambda: DCGANGenerator(z_dim=16, image_size=16, channels=3, width=8), lambda: MLPGenerator(z_dim=4, hidden=(8,), out_shape=(2,))])
def test_for_inference_is_equivalent_and_leaves_the_original_untouched(make):
    torch.manual_seed(0)
    generator = with_statistics(make())
    state = {k: v.clone() for k, v in generator.state_dict().items()}
    z = torch.randn(5, generator.z_dim)
    fast = for_inference(generator)
    torch.testing.assert_close(fast(z), generator(z), atol=1e-5, rtol=1e-5)
    assert fast.z_dim == generator.z_dim and not any(p.requires_grad for p in fast.parameters())
    assert all(torch.equal(v, state[k]) for k, v in generator.state_dict().items())
    assert isinstance(generator, MLPGenerator) or isinstance(fast.blocks[-2], nn.Sequential)  # the 3-channel image layer in sub-pixel form
